"""Many processes pushing into one registry at once, and a push killed halfway."""

import multiprocessing
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from loramgr.hub.registry import Registry
from loramgr.hub.settings import Settings

PROCESSES, PUSHES = 8, 25


def _push_many(home: str, database_url: str, adapter: str, worker: int, count: int) -> None:
    import shutil
    import tempfile

    registry = Registry(Settings.load(home=home, database_url=database_url))
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch) / "adapter"
        shutil.copytree(adapter, folder)
        for index in range(count):
            # A different model card each time, so blobs are both shared and new.
            (folder / "README.md").write_text(f"worker {worker} push {index}\n")
            registry.push(folder, name="acme/busy", task="t")
    registry.close()


def test_concurrent_pushers_get_gapless_unique_numbers(settings, llama_lora):
    context = multiprocessing.get_context("spawn")
    workers = [context.Process(target=_push_many, args=(str(settings.home), settings.database_url,
                                                         str(llama_lora), worker, PUSHES))
               for worker in range(PROCESSES)]
    for process in workers:
        process.start()
    for process in workers:
        process.join(timeout=300)
        assert process.exitcode == 0
    registry = Registry(settings)
    numbers = sorted(v.number for v in registry.versions("acme/busy"))
    assert numbers == list(range(1, PROCESSES * PUSHES + 1))
    assert registry.show("acme/busy").number == PROCESSES * PUSHES
    report = registry.verify()
    assert report.ok and report.checked_files == PROCESSES * PUSHES * 3
    registry.close()


CHILD = textwrap.dedent("""
    import os, signal, sys
    from loramgr.hub.registry import Registry
    from loramgr.hub.settings import Settings

    registry = Registry(Settings.load(home=sys.argv[1], database_url=sys.argv[2]))
    if sys.argv[4] == "in-transaction":
        register = Registry._register
        def register_then_die(self, *args, **kwargs):
            register(self, *args, **kwargs)  # the version row is written, not committed
            os.kill(os.getpid(), signal.SIGKILL)
        Registry._register = register_then_die
    else:
        def slow_progress(_bytes):
            print("writing", flush=True)
            import time; time.sleep(0.2)
        registry.push(sys.argv[3], name="acme/crash", task="t", progress=slow_progress)
    registry.push(sys.argv[3], name="acme/crash", task="t")
""")


@pytest.mark.parametrize("moment", ["writing-blobs", "in-transaction"])
def test_a_push_killed_midway_leaves_no_version(settings, llama_dir, tmp_path, moment):
    from .. import factories

    # 16 MB of factors, so the blob write takes several chunks.
    adapter = factories.make_lora(llama_dir, tmp_path / "big", r=8, targets=["q_proj", "v_proj", "k_proj",
                                                                            "o_proj", "up_proj", "down_proj"])
    child = subprocess.Popen([sys.executable, "-c", CHILD, str(settings.home), settings.database_url,
                              str(adapter), moment], stdout=subprocess.PIPE, text=True)
    if moment == "writing-blobs":
        assert child.stdout.readline().strip() == "writing"  # the child is inside a blob write
        os.kill(child.pid, signal.SIGKILL)
    assert child.wait(timeout=120) == -signal.SIGKILL

    registry = Registry(settings)
    assert registry.ls() == []
    report = registry.verify()
    assert report.ok and report.checked_files == 0
    gc = registry.gc(grace_seconds=0)
    assert gc.removed_blobs + gc.removed_temp_files > 0
    assert list(registry.blobs.digests()) == [] and registry.blobs.dead_temp_files() == []
    assert registry.push(adapter, name="acme/crash", task="t").number == 1
    registry.close()
