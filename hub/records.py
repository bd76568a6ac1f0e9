"""Plain, JSON-able records the registry returns; the same shapes travel over HTTP."""

from __future__ import annotations

import json
import math
import numbers
from dataclasses import asdict, dataclass, field

# Seeds are 32-bit integers in the metadata store (PostgreSQL).
MAX_SEED = 2 ** 31 - 1


def _shown(value) -> str:
    try:
        text = repr(value)
    except (RecursionError, ValueError):
        text = f"a {type(value).__name__}"
    return text if len(text) <= 60 else text[:57] + "..."


@dataclass(frozen=True)
class VersionFileInfo:
    name: str
    digest: str
    size: int


def _is_finite(value) -> bool:
    # numbers.Real covers numpy's scalars too; bool is a Real but not a weight.
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        return False
    if isinstance(value, numbers.Integral):
        return abs(int(value)) < 2 ** 63  # math.isfinite(10**400) raises OverflowError
    return math.isfinite(value)


def _finite_or_none(value):
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite_or_none(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite_or_none(v) for v in value]
    return value


def _invalid_lineage(problem: str):
    from .errors import InvalidArgument  # records stay importable without the rest of the hub

    return InvalidArgument(f"invalid lineage: {problem}")


@dataclass(frozen=True)
class SourceWeight:
    ref: str
    weight: float
    digest: str | None = None

    def __post_init__(self):
        if not isinstance(self.ref, str) or not (self.digest is None or isinstance(self.digest, str)):
            raise _invalid_lineage("a source needs a string ref (and digest)")
        if not _is_finite(self.weight):
            raise _invalid_lineage(f"the weight of {self.ref[:120]!r} must be a finite number, not "
                                   f"{_shown(self.weight)}")


@dataclass(frozen=True)
class Lineage:
    """How a composed version was made. ``sources`` are ``NS/NAME@N`` refs with their weights."""

    sources: list[SourceWeight]
    mode: str
    objective: str = "few_shot_loss"
    score: float | None = None
    seed: int | None = None
    examples_digest: str | None = None
    details: dict = field(default_factory=dict)

    def __post_init__(self):
        if not isinstance(self.sources, list) or not all(isinstance(s, SourceWeight) for s in self.sources):
            raise _invalid_lineage("sources must be a list of {ref, weight, digest}")
        for name in ("mode", "objective"):
            if not isinstance(getattr(self, name), str):
                raise _invalid_lineage(f"{name} must be a string")
        if self.examples_digest is not None and not isinstance(self.examples_digest, str):
            raise _invalid_lineage("examples_digest must be a string")
        if self.score is not None and not _is_finite(self.score):
            raise _invalid_lineage(f"score must be a finite number, not {_shown(self.score)}")
        if self.seed is not None and (isinstance(self.seed, bool) or not isinstance(self.seed, numbers.Integral)
                                      or not -MAX_SEED <= self.seed <= MAX_SEED):
            raise _invalid_lineage(f"seed must be a whole number from {-MAX_SEED} to {MAX_SEED}, not "
                                   f"{_shown(self.seed)}")
        if not isinstance(self.details, dict):
            raise _invalid_lineage("details must be an object")
        try:
            # Free-form notes (a shortlist's losses, say): a NaN or infinity there becomes null
            # rather than failing the whole composition; score and weights above must be finite.
            object.__setattr__(self, "details", _finite_or_none(self.details))
            json.dumps(self.details, allow_nan=False)
        except (TypeError, ValueError, RecursionError) as exc:
            raise _invalid_lineage(f"details must be plain JSON ({str(exc)[:120]})") from None

    @classmethod
    def from_dict(cls, data: dict) -> "Lineage":
        """The lineage a JSON object describes. Raises ``InvalidArgument`` for anything else."""
        if not isinstance(data, dict):
            raise _invalid_lineage("expected an object")
        data = dict(data)
        sources = data.get("sources", [])
        if not isinstance(sources, list) or not all(isinstance(s, dict) for s in sources):
            raise _invalid_lineage("sources must be a list of {ref, weight, digest}")
        try:
            data["sources"] = [SourceWeight(**s) for s in sources]
            return cls(**data)
        except TypeError as exc:  # a missing or unknown field
            raise _invalid_lineage(str(exc)[:200]) from None


@dataclass(frozen=True)
class AdapterVersion:
    namespace: str
    name: str
    number: int
    base_model: str
    task: str
    rank: int
    alpha: float
    target_modules: list[str]
    task_type: str | None
    dtype: str
    param_count: int
    byte_size: int
    digest: str
    source: str
    description: str | None
    created_at: str
    tags: list[str]
    files: list[VersionFileInfo]
    lineage: Lineage | None = None

    @property
    def ref(self) -> str:
        return f"{self.namespace}/{self.name}@{self.number}"

    @property
    def adapter(self) -> str:
        return f"{self.namespace}/{self.name}"

    def to_dict(self) -> dict:
        data = asdict(self)
        data["ref"] = self.ref
        return data

    @classmethod
    def from_dict(cls, data: dict) -> "AdapterVersion":
        data = {k: v for k, v in data.items() if k != "ref"}
        data["files"] = [VersionFileInfo(**f) for f in data["files"]]
        data["lineage"] = Lineage.from_dict(data["lineage"]) if data.get("lineage") else None
        return cls(**data)


@dataclass(frozen=True)
class VerifyReport:
    checked_files: int
    problems: list[dict]  # {"ref", "file", "digest", "problem": "missing" | "corrupt"}
    dead_temp_files: int
    unreferenced_blobs: int

    @property
    def ok(self) -> bool:
        return not self.problems

    def to_dict(self) -> dict:
        return {**asdict(self), "ok": self.ok}


@dataclass(frozen=True)
class GcReport:
    removed_blobs: int
    removed_temp_files: int
    freed_bytes: int
    kept_recent_blobs: int
    removed_snapshots: int = 0  # snapshot folders of versions that no longer exist

    def to_dict(self) -> dict:
        return asdict(self)
