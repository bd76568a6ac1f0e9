"""The lab's manifest: what a build made and where, read back from ``lab.json``.

``lab.json`` is written last and atomically, so its presence marks a complete build. Paths in it
are relative to the lab's root, so a lab folder can be moved or copied as a whole.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

from loramgr.hub.errors import InvalidArgument, LoramgrError

MANIFEST = "lab.json"


class LabNotBuilt(LoramgrError, FileNotFoundError):
    """The folder holds no complete lab (no ``lab.json``, or one from another lab version)."""

    code = "lab_not_built"
    http_status = 404


class LabBuildFailed(LoramgrError):
    """A lab build job failed; the message carries the end of its error output."""

    code = "lab_build_failed"
    http_status = 500


@dataclass(frozen=True)
class LabModule:
    """One trained LoRA module: a PEFT adapter folder for ``task`` on the ``family`` base model."""

    name: str
    task: str
    family: str
    path: Path
    rank: int
    targets: tuple[str, ...]
    examples_path: Path


@dataclass(frozen=True)
class Target:
    """A held-out target task: ``few_shot`` candidates and a ``test`` split (both JSON Lines).

    ``module_tasks`` are the module tasks it is made from (for kind 1, the one it equals); a
    benchmark decides how much of that to tell the composer.
    """

    name: str
    kind: int
    description: str
    module_tasks: tuple[str, ...]
    family: str
    few_shot: Path
    test: Path


@dataclass(frozen=True)
class Family:
    """One base-model family of the lab: its stable id, its folder, modules and targets."""

    base_id: str
    base_dir: Path
    modules: tuple[LabModule, ...]
    targets: tuple[Target, ...]
    oracles: dict[str, Path] = field(default_factory=dict)


@dataclass(frozen=True)
class Lab:
    """A built lab. ``Lab.load(root)`` reads it; `build.build_lab` makes it."""

    root: Path
    seed: int
    size: str
    lab_version: int
    families: dict[str, Family]

    @classmethod
    def load(cls, root: Path) -> "Lab":
        """Read ``root/lab.json``. Raises `LabNotBuilt` when there is none."""
        root = Path(root).resolve()
        path = root / MANIFEST
        if not path.is_file():
            raise LabNotBuilt(f"no lab at {root}: build it with build_lab({str(root)!r})", root=str(root))
        data = json.loads(path.read_text())
        families = {}
        for name, fam in data["families"].items():
            modules = tuple(LabModule(**{**m, "path": root / m["path"], "examples_path": root / m["examples_path"],
                                         "targets": tuple(m["targets"])}) for m in fam["modules"])
            targets = tuple(Target(**{**t, "few_shot": root / t["few_shot"], "test": root / t["test"],
                                      "module_tasks": tuple(t["module_tasks"])}) for t in fam["targets"])
            families[name] = Family(fam["base_id"], root / fam["base_dir"], modules, targets,
                                    {k: root / v for k, v in fam.get("oracles", {}).items()})
        return cls(root, data["seed"], data["size"], data["lab_version"], families)

    def save(self) -> Path:
        """Write ``lab.json`` atomically (temp file in the same folder, then `os.replace`)."""
        def rel(path: Path) -> str:
            return Path(path).relative_to(self.root).as_posix()

        families = {}
        for name, fam in self.families.items():
            families[name] = {
                "base_id": fam.base_id,
                "base_dir": rel(fam.base_dir),
                "modules": [{**asdict(m), "path": rel(m.path), "examples_path": rel(m.examples_path),
                             "targets": list(m.targets)} for m in fam.modules],
                "targets": [{**asdict(t), "few_shot": rel(t.few_shot), "test": rel(t.test),
                             "module_tasks": list(t.module_tasks)} for t in fam.targets],
                "oracles": {k: rel(v) for k, v in fam.oracles.items()},
            }
        text = json.dumps({"lab_version": self.lab_version, "seed": self.seed, "size": self.size,
                           "families": families}, indent=2, sort_keys=True) + "\n"
        fd, tmp = tempfile.mkstemp(dir=self.root, prefix=".lab.json.")
        try:
            with os.fdopen(fd, "w") as handle:
                handle.write(text)
            os.replace(tmp, self.root / MANIFEST)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
        return self.root / MANIFEST

    def family(self, family: str) -> Family:
        """The record of ``family``. Raises `InvalidArgument` for a family the lab does not have."""
        try:
            return self.families[family]
        except KeyError:
            raise InvalidArgument(f"the lab has no family {family!r}; it has {', '.join(self.families)}",
                                  family=family) from None

    def base_dir(self, family: str = "t5") -> Path:
        """The folder of ``family``'s base model (with its tokenizer), loadable by ``from_pretrained``."""
        return self.family(family).base_dir

    def base_id(self, family: str = "t5") -> str:
        """The stable id written as ``base_model_name_or_path`` into ``family``'s adapters."""
        return self.family(family).base_id

    def modules(self, family: str = "t5") -> list[LabModule]:
        """``family``'s LoRA modules, one per task."""
        return list(self.family(family).modules)

    def targets(self, family: str = "t5") -> list[Target]:
        """``family``'s held-out targets."""
        return list(self.family(family).targets)

    def target(self, family: str, name: str) -> Target:
        """One target by name. Raises `InvalidArgument` for an unknown one."""
        for target in self.family(family).targets:
            if target.name == name:
                return target
        raise InvalidArgument(f"the lab's {family} family has no target {name!r}", target=name)

    def oracle_dir(self, family: str, target: "Target | str") -> Path:
        """A LoRA trained on ``target``'s full training data: the ceiling for the quality table.

        Built with the lab when its size trains oracles, else trained here on first use (seconds)
        and kept in the lab folder for later calls.
        """
        name = target if isinstance(target, str) else target.name
        self.target(family, name)
        known = self.family(family).oracles.get(name)
        if known is not None and known.is_dir():
            return known
        from .build import ensure_oracle  # a build needs torch; reading a manifest does not

        return ensure_oracle(self, family, name)
