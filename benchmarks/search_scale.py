"""Search latency at scale: 10,000 versions in SQLite and 1,000,000 in PostgreSQL.

    python benchmarks/search_scale.py [--sqlite-versions 10000] [--postgres-versions 1000000]
                                      [--repeats 60] [--postgres-url URL | --no-postgres]

The registries are built with bulk inserts (SQLAlchemy Core executemany, 10 versions per adapter,
two files each, the full-text index filled as a push fills it), not pushes: the search is
measured, not the push. Without --postgres-url a throw-away cluster is started with
.ci/postgres.sh (the 1M build takes a few minutes). Prints the median (and fastest) ms per query
type through ``Registry.search``, beside a bare indexed lookup on the same database for scale.
Run by hand; the machine is shared and noisy, so compare figures of one run.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

from sqlalchemy import insert, text

from loramgr.hub.db.engine import Database
from loramgr.hub.db.models import Adapter, Tag, Version, VersionFile
from loramgr.hub.registry import Registry
from loramgr.hub.search import TEXT_INDEX, search_document
from loramgr.hub.settings import Settings

REPO = Path(__file__).resolve().parents[1]
PER_ADAPTER = 10
CHUNK = 20_000
BASES = [f"org/base-{i}" for i in range(5)]
TASKS = [f"task-{i}" for i in range(50)]
RANKS = [4, 8, 16, 32, 64]
DOMAINS = ["sentiment", "summarisation", "translation", "sql", "chat", "medical", "legal", "code", "math", "poetry"]
LANGUAGES = ["english", "french", "german", "spanish", "japanese", "hindi", "swahili", "polish", "korean", "dutch"]
QUERIES = {
    "base+task+rank": dict(base="org/base-1", task="task-11", rank=8),
    "task": dict(task="task-7"),
    "two tasks, base": dict(task=["task-3", "task-8"], base="org/base-3"),
    "max_rank+target": dict(max_rank=16, target="k_proj", limit=50),
    "all versions, task": dict(task="task-3", all_versions=True),
    "text: adapter-42": dict(query="adapter-42"),
    "text: medical": dict(query="medical"),
    "text: legal french": dict(query="legal french"),
}


def version_row(index: int, start: datetime) -> dict:
    adapter = index // PER_ADAPTER
    domain, language = DOMAINS[(index * 7) % 10], LANGUAGES[(index * 3 + adapter) % 10]
    return dict(id=index + 1, adapter_id=adapter + 1, number=index % PER_ADAPTER + 1, base_model=BASES[index % 5],
                task=TASKS[index % 50], task_type="CAUSAL_LM", rank=RANKS[index % 5], alpha=16.0,
                target_modules=",q_proj,v_proj," if index % 2 else ",q_proj,k_proj,v_proj,o_proj,", dtype="float32",
                param_count=1000, byte_size=4300, digest=f"{index:064x}", source="pushed",
                description=f"{domain} adapter for {language}, trained on {index % 997} examples", manifest="{}",
                created_at=start + timedelta(seconds=index))


def adapter_name(adapter: int) -> tuple[str, str]:
    return f"ns{adapter % 20}", f"adapter-{adapter}"


def populate(database: Database, count: int) -> float:
    """Bulk-insert ``count`` versions; returns the seconds it took."""
    started = time.perf_counter()
    sqlite = database.is_sqlite
    index_insert = text(f"INSERT INTO {TEXT_INDEX} (rowid, document) VALUES (:id, :document)" if sqlite else
                        f"INSERT INTO {TEXT_INDEX} (version_id, document) VALUES (:id, to_tsvector('simple', :document))")
    start = datetime(2026, 1, 1, tzinfo=timezone.utc)
    adapters = (count + PER_ADAPTER - 1) // PER_ADAPTER
    with database.write_engine.begin() as connection:
        for first in range(0, adapters, CHUNK):
            connection.execute(insert(Adapter), [
                dict(id=a + 1, namespace=adapter_name(a)[0], name=adapter_name(a)[1], created_at=start,
                     last_number=min(PER_ADAPTER, count - a * PER_ADAPTER))
                for a in range(first, min(adapters, first + CHUNK))])
    for first in range(0, count, CHUNK):
        rows = [version_row(i, start) for i in range(first, min(count, first + CHUNK))]
        with database.write_engine.begin() as connection:
            connection.execute(insert(Version), rows)
            connection.execute(insert(VersionFile), [
                dict(version_id=r["id"], filename=name, blob_digest=r["digest"], size=size)
                for r in rows for name, size in (("adapter_config.json", 300), ("adapter_model.safetensors", 4000))])
            connection.execute(index_insert, [
                dict(id=r["id"], document=search_document(*adapter_name(r["adapter_id"] - 1), r["task"],
                                                          r["description"])) for r in rows])
            newest = [r for r in rows if r["number"] == PER_ADAPTER or r["id"] == count]
            connection.execute(insert(Tag), [dict(adapter_id=r["adapter_id"], tag="latest", version_id=r["id"])
                                             for r in newest])
        print(f"  {min(count, first + CHUNK):>10,} versions, {time.perf_counter() - started:6.0f} s", end="\r",
              flush=True)
    with database.write_engine.begin() as connection:
        connection.execute(text("ANALYZE"))  # planner statistics, as autovacuum keeps them on a live hub
    return time.perf_counter() - started


def measure(label: str, url: str, count: int, repeats: int, home: Path) -> None:
    database = Database(url)
    database.ensure_current()
    print(f"building {count:,} versions in {label} ...")
    seconds = populate(database, count)
    database.dispose()
    registry = Registry(Settings.load(environ={}, home=str(home), database_url=url))
    print(f"\nSearch with {count:,} versions in {label} (built in {seconds:.0f} s), "
          f"{repeats} calls each, ms:")
    print(f"  {'query':<22}{'median':>9}{'fastest':>9}{'hits':>6}")
    lookup = text("SELECT id FROM versions WHERE base_model = :b AND task = :t AND rank = :r LIMIT 100")
    with registry.db.read_engine.connect() as connection:
        times = []
        for _ in range(repeats):
            begin = time.perf_counter()
            connection.execute(lookup, {"b": "org/base-1", "t": "task-11", "r": 8}).all()
            times.append(time.perf_counter() - begin)
    print(f"  {'(bare indexed lookup)':<22}{statistics.median(times) * 1000:>9.2f}{min(times) * 1000:>9.2f}")
    for name, filters in QUERIES.items():
        registry.search(**filters)  # warm: statement compiled, pages cached
        times = []
        for _ in range(repeats):
            begin = time.perf_counter()
            hits = registry.search(**filters)
            times.append(time.perf_counter() - begin)
        print(f"  {name:<22}{statistics.median(times) * 1000:>9.2f}{min(times) * 1000:>9.2f}{len(hits):>6}")
    registry.close()


def throwaway_postgres():
    """(url, stop) of a fresh cluster from .ci/postgres.sh."""
    started = subprocess.run(["bash", str(REPO / ".ci" / "postgres.sh"), "start"], capture_output=True, text=True,
                             check=True)
    exported = dict(line.removeprefix("export ").split("=", 1) for line in started.stdout.splitlines()
                    if line.startswith("export "))
    return exported["LORAMGR_TEST_POSTGRES_URL"], lambda: subprocess.run(
        ["bash", str(REPO / ".ci" / "postgres.sh"), "stop", exported["LORAMGR_PG_DIR"]], capture_output=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sqlite-versions", type=int, default=10_000)
    parser.add_argument("--postgres-versions", type=int, default=1_000_000)
    parser.add_argument("--repeats", type=int, default=60)
    parser.add_argument("--postgres-url", help="an empty PostgreSQL database (default: a throw-away cluster)")
    parser.add_argument("--no-postgres", action="store_true")
    parser.add_argument("--dir", type=Path, default=Path(tempfile.gettempdir()))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="loramgr-search-", dir=args.dir) as scratch:
        root = Path(scratch)
        if args.sqlite_versions:
            measure("SQLite", f"sqlite:///{root / 'registry.db'}", args.sqlite_versions, args.repeats, root / "home")
        if args.no_postgres or not args.postgres_versions:
            return
        url, stop = (args.postgres_url, lambda: None) if args.postgres_url else throwaway_postgres()
        try:
            measure("PostgreSQL", url, args.postgres_versions, args.repeats, root / "pg-home")
        finally:
            stop()


if __name__ == "__main__":
    sys.exit(main())
