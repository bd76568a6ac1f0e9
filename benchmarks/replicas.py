"""Requests per second with 1 and with 3 `loramgr serve` replicas over one PostgreSQL and one
blob store, the same load (benchmarks/remote_load.py's clients: search + pull) for each count.

    python benchmarks/replicas.py [--replicas 1,3] [--clients 16] [--seconds 20] [--adapters 24]
                                  [--size-mb 1] [--store folder|s3] [--postgres-url URL]

Client i talks to replica i mod N, as a reverse proxy spreading connections would. The blob
store is a folder the replicas share (one host) or, with --store s3, moto's S3 emulator (which
then does most of the work: it measures moto more than the hub). Without --postgres-url a
throw-away cluster is started with .ci/postgres.sh. Everything shares this machine's cores:
with fewer cores than replicas + clients, more replicas cannot buy much; the figures say how
much they do here.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # for tests.remote.helpers

from loramgr.hub.db.engine import Database  # noqa: E402
from remote_load import client, cpu_seconds, populate  # noqa: E402
from hub_helpers import create_token  # noqa: E402
from search_scale import throwaway_postgres  # noqa: E402
from tests.remote.helpers import LiveServer, free_port  # noqa: E402

AWS = {"AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench", "AWS_DEFAULT_REGION": "us-east-1"}


def start_moto(root: Path) -> tuple[dict, subprocess.Popen]:
    """moto's S3 emulator and a bucket in it: (environment for the replicas, process)."""
    import boto3

    port = free_port()
    process = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    for _ in range(300):
        try:
            urllib.request.urlopen(url, timeout=1).close()
            break
        except OSError:
            time.sleep(0.1)
    bucket = f"bench-{uuid.uuid4().hex[:8]}"
    boto3.client("s3", endpoint_url=url, region_name="us-east-1", aws_access_key_id="bench",
                 aws_secret_access_key="bench").create_bucket(Bucket=bucket)
    return {**AWS, "LORAMGR_STORE": f"s3://{bucket}/hub", "LORAMGR_S3_ENDPOINT_URL": url}, process


def run(count: int, args, database_url: str, env: dict, root: Path) -> dict:
    """One load run against ``count`` replicas; returns requests/s and the rest."""
    token = create_token(database_url)
    replicas = [LiveServer(root / f"replica-{count}-{i}", database_url=database_url, env=env) for i in range(count)]
    with ThreadPoolExecutor(count) as pool:
        list(pool.map(LiveServer.start, replicas))
    try:
        refs = populate(replicas[0].url, token, root / f"populate-{count}", args.adapters, args.size_mb)
        context = multiprocessing.get_context("spawn")
        barrier, queue = context.Barrier(args.clients + 1), context.Queue()
        clients = [context.Process(target=client, args=(replicas[seed % count].url, refs, args.seconds, seed,
                                                        str(root / f"client-{count}-{seed}"), barrier, queue))
                   for seed in range(args.clients)]
        for process in clients:
            process.start()
        barrier.wait()
        cpu_before, started = sum(cpu_seconds(r.process.pid) for r in replicas), time.perf_counter()
        results = [queue.get(timeout=args.seconds + 120) for _ in clients]
        elapsed = time.perf_counter() - started
        cpu = (sum(cpu_seconds(r.process.pid) for r in replicas) - cpu_before) / elapsed
        for process in clients:
            process.join()
    finally:
        for replica in replicas:
            replica.stop()
    requests = sum(r["requests"] for r in results)
    operations = sum(len(v) for r in results for v in r["latencies"].values())
    return dict(replicas=count, requests=requests / elapsed, operations=operations / elapsed,
                errors=sum(len(r["errors"]) for r in results), cpu=cpu)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--replicas", default="1,3", help="replica counts to run, one run each")
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--adapters", type=int, default=24)
    parser.add_argument("--size-mb", type=float, default=1)
    parser.add_argument("--store", choices=["folder", "s3"], default="folder")
    parser.add_argument("--postgres-url", help="an empty PostgreSQL database (default: a throw-away cluster)")
    args = parser.parse_args()

    url, stop_postgres = (args.postgres_url, lambda: None) if args.postgres_url else throwaway_postgres()
    moto = None
    try:
        with tempfile.TemporaryDirectory(prefix="loramgr-replicas-") as scratch:
            root = Path(scratch)
            rows = []
            for count in (int(c) for c in args.replicas.split(",")):
                database_url = url
                if not args.postgres_url:  # a fresh database per run, on the throw-away cluster
                    from tests.postgres import admin_execute, with_database

                    name = f"replicas_{count}_{uuid.uuid4().hex[:6]}"
                    admin_execute(url, f'CREATE DATABASE "{name}"')
                    database_url = with_database(url, name)
                if args.store == "s3":
                    env, moto = start_moto(root)
                else:
                    env = {"LORAMGR_STORE": str(root / f"blobs-{count}")}
                database = Database(database_url)
                database.upgrade()  # once, before the replicas start
                database.dispose()
                rows.append(run(count, args, database_url, env, root))
                if moto is not None:
                    moto.terminate()
                    moto.wait()
                    moto = None
    finally:
        if moto is not None:
            moto.terminate()
        stop_postgres()

    print(f"{args.clients} clients x {args.seconds:g} s (search + pull), {args.adapters} adapters of "
          f"~{args.size_mb:g} MB, PostgreSQL + {'moto S3' if args.store == 's3' else 'a shared blob folder'}, "
          f"{os.cpu_count()} cores shared by everything")
    print(f"{'replicas':>8} {'HTTP req/s':>11} {'ops/s':>7} {'errors':>7} {'replica CPU (cores)':>20}")
    for row in rows:
        print(f"{row['replicas']:>8} {row['requests']:>11.0f} {row['operations']:>7.1f} {row['errors']:>7} "
              f"{row['cpu']:>20.2f}")
    if len(rows) > 1:
        print(f"ratio {rows[-1]['replicas']} : {rows[0]['replicas']} replicas = "
              f"{rows[-1]['requests'] / rows[0]['requests']:.2f}")


if __name__ == "__main__":
    main()
