"""Configuration: one frozen object built once from flags, then ``LORAMGR_*`` variables, then
defaults. Nothing reads the environment at import time; callers pass ``Settings`` explicitly.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Mapping

import platformdirs

# One table drives Settings.from_env, `loramgr --help` and the README: (field, variable, help).
SETTINGS = [
    ("home", "LORAMGR_HOME", "folder for the registry database, blobs and pulled snapshots "
                             "(default: the platform's user data folder)"),
    ("database_url", "LORAMGR_DATABASE_URL", "SQLAlchemy URL of the metadata store "
                                             "(default: sqlite:///$LORAMGR_HOME/registry.db)"),
    ("store", "LORAMGR_STORE", "blob store: a folder, or s3://bucket/prefix for S3-compatible object "
                               "storage (default: $LORAMGR_HOME/blobs)"),
    ("s3_endpoint_url", "LORAMGR_S3_ENDPOINT_URL", "endpoint of an S3-compatible server for an s3:// store "
                                                   "(default: AWS_ENDPOINT_URL, else AWS itself)"),
    ("remote", "LORAMGR_REMOTE", "URL of a `loramgr serve` hub; when set, commands go there"),
    ("token", "LORAMGR_TOKEN", "bearer token for the remote hub"),
]


@dataclass(frozen=True)
class Settings:
    home: Path
    database_url: str
    store: str
    remote: str | None = None
    token: str | None = None
    s3_endpoint_url: str | None = None

    @classmethod
    def load(cls, environ: Mapping[str, str] | None = None, **flags) -> "Settings":
        """Flags (non-None keyword arguments) win over ``LORAMGR_*`` variables over defaults."""
        environ = os.environ if environ is None else environ
        values = {}
        for field, variable, _ in SETTINGS:
            value = flags.get(field)
            values[field] = value if value not in (None, "") else (environ.get(variable) or None)
        home = Path(values["home"] or platformdirs.user_data_dir("loramgr")).expanduser().resolve()
        return cls(
            home=home,
            database_url=values["database_url"] or f"sqlite:///{home / 'registry.db'}",
            store=values["store"] or str(home / "blobs"),
            remote=(values["remote"] or None) and values["remote"].rstrip("/"),
            token=values["token"],
            s3_endpoint_url=values["s3_endpoint_url"],
        )

    def with_(self, **changes) -> "Settings":
        return replace(self, **changes)

    def describe(self) -> dict:
        """A JSON-able view that never shows the token."""
        shown = {f.name: str(getattr(self, f.name)) if getattr(self, f.name) is not None else None
                 for f in fields(self)}
        shown["token"] = "***" if self.token else None
        return shown
