"""How long validation takes on the hostile shapes of issue 12 (run by hand; medians of --repeat).

    python benchmarks/hostile_validation.py [--repeat 5]

Cases: 1,000 modules_to_save x 1,000 whole-weight tensors (55 s before: one regex per pair),
1,000 LoRA modules with one plain rank_pattern key each, the same with 64 regular-expression keys,
and the ReDoS key (a+)+b against a module named "a" * 28 + "!" (12 s before; now refused unrun).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from loramgr.hub.adapter import read_adapter  # noqa: E402
from loramgr.hub.errors import InvalidAdapter  # noqa: E402
from tests.hostile import lora_tensors, write_adapter  # noqa: E402


def timed(folder: Path, repeat: int) -> tuple[float, str]:
    seconds, outcome = [], ""
    for _ in range(repeat):
        start = time.perf_counter()
        try:
            read_adapter(folder, digests=False)
            outcome = "valid"
        except InvalidAdapter as error:
            outcome = "refused: " + str(error).split(": ", 1)[-1][:60]
        seconds.append(time.perf_counter() - start)
    return statistics.median(seconds), outcome


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    repeat = parser.parse_args().repeat
    root = Path(tempfile.mkdtemp(prefix="hostile-bench-"))
    modules = [f"model.layers.{i}.self_attn.q_proj" for i in range(1000)]

    tensors = lora_tensors()
    tensors.update({f"base_model.model.extra{i}.modules_to_save.default.weight": np.ones(1, np.float32)
                    for i in range(1000)})
    cases = {"1000 modules_to_save x 1000 tensors": write_adapter(
        root / "mts", config_fields={"modules_to_save": [f"extra{i}" for i in range(1000)]}, tensors=tensors)}
    cases["1000 modules, 1000 plain rank_pattern keys"] = write_adapter(
        root / "plain", config_fields={"rank_pattern": {m.removeprefix("model."): 2 for m in modules}},
        tensors=lora_tensors(modules))
    cases["1000 modules, 64 regex rank_pattern keys"] = write_adapter(
        root / "regex", config_fields={"rank_pattern": {rf"layers\.{i}\.self_attn\.(q|k)_proj": 2
                                                        for i in range(64)}},
        tensors=lora_tensors(modules))
    cases["ReDoS key (a+)+b"] = write_adapter(
        root / "redos", config_fields={"rank_pattern": {"(a+)+b": 2}},
        tensors=lora_tensors(["model." + "a" * 28 + "!"]))
    print(f"{'case':<46} {'median s':>9}  outcome")
    for name, folder in cases.items():
        seconds, outcome = timed(folder, repeat)
        print(f"{name:<46} {seconds:>9.4f}  {outcome}")


if __name__ == "__main__":
    main()
