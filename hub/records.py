"""Plain, JSON-able records the registry returns; the same shapes travel over HTTP."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field


@dataclass(frozen=True)
class VersionFileInfo:
    name: str
    digest: str
    size: int


@dataclass(frozen=True)
class SourceWeight:
    ref: str
    weight: float
    digest: str | None = None


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

    @classmethod
    def from_dict(cls, data: dict) -> "Lineage":
        data = dict(data)
        data["sources"] = [SourceWeight(**s) for s in data.get("sources", [])]
        return cls(**data)


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

    def to_dict(self) -> dict:
        return asdict(self)
