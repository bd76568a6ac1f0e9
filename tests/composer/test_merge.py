"""``loramgr merge`` and ``loramgr.merge``: every method against a dense reference computed here,
re-compression reported, lineage ``merge:<method>``, one-line errors with nothing stored."""

from __future__ import annotations

import json
import math

import pytest
import torch
from click.testing import CliRunner
from safetensors.torch import load_file

from loramgr.cli import main
from loramgr.cli.merge_command import METHODS
from loramgr.composer import methods
from loramgr.composer.methods.base import module_generator

from .. import factories

WEIGHTS = (0.7, -0.4, 0.5)


@pytest.fixture(scope="module")
def sources(llama_dir, tmp_path_factory):
    """Three adapters of the tiny Llama: different ranks, alphas and target sets."""
    root = tmp_path_factory.mktemp("merge-sources")
    return [
        factories.make_lora(llama_dir, root / "a", r=4, alpha=8, seed=1),
        factories.make_lora(llama_dir, root / "b", r=2, alpha=2, seed=2),
        factories.make_lora(llama_dir, root / "c", r=4, alpha=16, targets=["q_proj"], seed=3),
    ]


@pytest.fixture
def run(home):
    runner = CliRunner()
    return lambda *args: runner.invoke(main, [str(a) for a in args], catch_exceptions=False)


def dense_updates(folder) -> dict[str, torch.Tensor]:
    """Each module's ``alpha / r * B @ A`` in float64, read straight from the files."""
    config = json.loads((folder / "adapter_config.json").read_text())
    tensors = load_file(folder / "adapter_model.safetensors")
    updates = {}
    for key, a in tensors.items():
        if ".lora_A." in key:
            module = key.removeprefix("base_model.model.").removesuffix(".lora_A.weight")
            b = tensors[key.replace("lora_A", "lora_B")]
            updates[module] = config["lora_alpha"] / a.shape[0] * (b.double() @ a.double())
    return updates


def top_fraction(update: torch.Tensor, density: float) -> torch.Tensor:
    k = int(density * update.numel())
    keep = torch.zeros(update.numel(), dtype=torch.bool)
    keep[update.abs().flatten().argsort(descending=True)[:k]] = True
    return update * keep.reshape(update.shape)


def reference(method: str, folders, weights, *, density=None, seed=0) -> dict[str, torch.Tensor]:
    """The merged dense update of every module, by each method's definition."""
    per_adapter = [dense_updates(f) for f in folders]
    merged = {}
    for module in sorted(set().union(*per_adapter)):
        present = [(w, u[module]) for w, u in zip(weights, per_adapter) if module in u]
        if method == "linear":
            merged[module] = sum(w * d for w, d in present)
            continue
        generator = module_generator(seed, module)
        terms = []
        for w, d in present:
            if method == "ties":
                d = top_fraction(d, density)
            else:  # dare, dare_ties: drop with probability 1 - density, rescale the rest
                keep = torch.rand(d.shape, generator=generator) < density
                d = d * keep / density
            terms.append(w * d)
        stacked = torch.stack(terms)
        if method in ("ties", "dare_ties"):
            elected = torch.where(stacked.sum(0) >= 0, 1.0, -1.0).double()
            stacked = stacked * (stacked.sign() == elected)
        merged[module] = stacked.sum(0)
    return merged


def merged_updates(folder) -> dict[str, torch.Tensor]:
    updates = dense_updates(folder)
    config = json.loads((folder / "adapter_config.json").read_text())
    assert config["lora_alpha"] == config["r"]  # scaling 1: what vLLM and PEFT load is B @ A
    return updates


def test_cli_methods_are_the_registry_methods():
    assert set(METHODS) == set(methods.names())


@pytest.mark.parametrize("method, density", [("linear", None), ("ties", 0.4), ("dare", 0.6), ("dare_ties", 0.5)])
def test_each_method_matches_its_dense_reference(run, sources, tmp_path, method, density):
    out = tmp_path / "merged"
    args = ["merge", *sources, "--weights", ",".join(map(str, WEIGHTS)), "--method", method, "-o", out, "--json"]
    if density is not None:
        args += ["--density", density, "--rank", 32]  # full rank: the SVD gives the dense result back
    result = run(*args)
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    expected = reference(method, sources, WEIGHTS, density=density)
    got = merged_updates(out)
    assert sorted(got) == sorted(expected)
    for module in expected:
        torch.testing.assert_close(got[module], expected[module], rtol=1e-4, atol=1e-5)
    if method == "linear":
        assert report["exact"] and report["truncation_error"] is None
        assert report["rank"] == 10  # 4 + 2 + 4 on q_proj, factors concatenated along the rank
    else:
        assert report["truncation_error"] < 1e-5 and report["params"]["density"] == density


def test_ties_at_the_input_rank_reports_the_truncation_error(run, sources, tmp_path):
    out = tmp_path / "ties"
    report = json.loads(run("merge", *sources, "--weights", "0.7,-0.4,0.5", "--method", "ties", "--density", "0.4",
                            "-o", out, "--json").stdout)
    expected, got = reference("ties", sources, WEIGHTS, density=0.4), merged_updates(out)
    discarded = sum(float((expected[m] - got[m]).square().sum()) for m in expected)
    total = sum(float(expected[m].square().sum()) for m in expected)
    assert 0 < report["truncation_error"] < 1
    assert report["truncation_error"] == pytest.approx(math.sqrt(discarded / total), rel=1e-3)
    assert report["rank"] == 10  # q_proj: the sum of the input ranks


def test_linear_rank_recompresses_and_one_adapter_comes_back(run, sources, tmp_path):
    report = json.loads(run("merge", sources[0], "--weights", "1", "-o", tmp_path / "one", "--json").stdout)
    assert report["exact"]
    for module, update in dense_updates(sources[0]).items():
        torch.testing.assert_close(merged_updates(tmp_path / "one")[module], update, rtol=1e-5, atol=1e-6)
    small = json.loads(run("merge", *sources, "--weights", "1,1,1", "--rank", "2", "-o", tmp_path / "r2",
                           "--json").stdout)
    assert small["rank"] == 2 and small["truncation_error"] > 0
    assert json.loads((tmp_path / "r2" / "adapter_config.json").read_text())["r"] == 2


def test_registered_merge_records_lineage(run, sources, tmp_path):
    for i, folder in enumerate(sources):
        assert run("push", folder, "--name", f"acme/s{i}", "--task", f"t{i}").exit_code == 0
    merged = run("merge", "acme/s0", "acme/s1", "acme/s2@1", "--weights", "0.5,0.3,0.2", "--method", "dare_ties",
                 "--density", "0.5", "--seed", "3", "--name", "acme/m")
    assert merged.exit_code == 0, merged.output
    assert "registered acme/m@1" in merged.stdout and "re-compressed, relative error" in merged.stdout
    shown = json.loads(run("show", "acme/m", "--json").stdout)
    assert shown["source"] == "composed" and shown["task"] == "t0+t1+t2"
    lineage = shown["lineage"]
    assert lineage["mode"] == "merge:dare_ties" and lineage["seed"] == 3
    assert [(s["ref"], s["weight"]) for s in lineage["sources"]] == [("acme/s0@1", 0.5), ("acme/s1@1", 0.3),
                                                                   ("acme/s2@1", 0.2)]
    assert lineage["details"]["params"] == {"density": 0.5, "majority_sign": "total", "normalize": False,
                                            "rescale": True}
    assert lineage["details"]["truncation_error"] > 0


def test_python_api(home, sources, tmp_path):
    import loramgr

    hub = loramgr.Hub(home)
    result = loramgr.merge([str(s) for s in sources[:2]], [1.0, 1.0], method="ties", params={"density": 0.5},
                           name="acme/api", hub=hub)
    assert result.version.ref == "acme/api@1" and result.mode == "merge:ties"
    assert hub.show("acme/api").lineage.mode == "merge:ties"


def one_error_line(result) -> str:
    assert result.exit_code == 1, result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.stderr
    return lines[0]


@pytest.mark.parametrize("extra, words", [
    (["--weights", "1,1", "--method", "ties", "--rescale"], ["ties: unknown parameter(s) rescale"]),
    (["--weights", "1,1", "--method", "ties", "--density", "1.5"], ["density must be in [0.0, 1.0]"]),
    (["--weights", "1"], ["got 1 weights for 2 adapters"]),
    (["--weights", "1,nan"], ["weights must be finite numbers"]),
    (["--weights", "1,1", "--name", "no-namespace"], ["invalid adapter name"]),
])
def test_bad_input_is_one_line_and_nothing_is_stored(run, sources, extra, words):
    target = [] if "--name" in extra else ["--name", "acme/x"]
    line = one_error_line(run("merge", sources[0], sources[1], *extra, *target))
    assert all(w in line for w in words), line
    assert json.loads(run("ls", "--json").stdout) == []


def test_usage_errors(run, sources, tmp_path):
    assert run("merge", sources[0], "--weights", "a,b", "-o", tmp_path / "x").exit_code == 2
    assert run("merge", sources[0], "--weights", "1", "--method", "svd", "-o", tmp_path / "x").exit_code == 2
    assert run("merge", sources[0], "--weights", "1").exit_code == 2  # neither -o nor --name
    assert not (tmp_path / "x").exists()


def test_a_stable_diffusion_lora_is_refused(run, sources, tmp_path):
    from safetensors.torch import save_file

    sd = tmp_path / "sd"
    sd.mkdir()
    save_file({"lora_unet_x_to_q.lora_down.weight": torch.zeros(2, 4), "lora_unet_x_to_q.lora_up.weight":
               torch.zeros(4, 2)}, str(sd / "style.safetensors"))
    line = one_error_line(run("merge", sources[0], sd, "--weights", "1,1", "-o", tmp_path / "out"))
    assert "Stable Diffusion LoRA (kohya format) cannot be composed or merged" in line
    assert not (tmp_path / "out").exists()
