"""The LoRA algebra: every combine method against dense formulas, PEFT's own deltas, and the
best low-rank approximation."""

from __future__ import annotations

import pytest
import torch

from loramgr.composer import methods
from loramgr.composer.align import check_compatible, combine
from loramgr.composer.errors import IncompatibleAdapters, UnsupportedAdapter
from loramgr.composer.lora import LoraWeights, load_lora
from loramgr.composer.methods.ties import Ties
from loramgr.composer.recompress import recompress, truncated_svd
from loramgr.hub.errors import InvalidArgument

from .. import factories

ALL_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj"]


def peft_deltas(base_dir, adapter_dir) -> dict[str, torch.Tensor]:
    """Each module's update as PEFT itself computes it (scaling, rslora and patterns included)."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base_dir), adapter_dir)
    return {
        name.removeprefix("base_model.model."): module.get_delta_weight("default").double()
        for name, module in model.named_modules() if hasattr(module, "lora_A") and "default" in module.lora_A
    }


@pytest.fixture(scope="module")
def adapters(llama_dir, tmp_path_factory):
    """Three PEFT adapters for one base, as different as PEFT allows: ranks 4 / 8 / 2, alphas
    8 / 16 / 3, rsLoRA, rank_pattern and alpha_pattern, and partly disjoint target modules."""
    root = tmp_path_factory.mktemp("adapters")
    specs = {
        "plain": dict(r=4, alpha=8, targets=["q_proj", "v_proj"], seed=1),
        "patterned": dict(r=8, alpha=16, targets=["k_proj", "v_proj", "o_proj"], seed=2,
                          rank_pattern={"v_proj": 3}, alpha_pattern={"o_proj": 5}),
        "rslora": dict(r=2, alpha=3, targets=["q_proj", "o_proj"], seed=3, use_rslora=True),
    }
    folders = {name: factories.make_lora(llama_dir, root / name, **spec) for name, spec in specs.items()}
    return {
        name: (load_lora(folder, label=name), peft_deltas(llama_dir, folder))
        for name, folder in folders.items()
    }


def loaded(adapters, *names):
    return [adapters[n][0] for n in names]


def dense_sum(adapters, names, weights) -> dict[str, torch.Tensor]:
    """sum_i w_i * (PEFT's delta of adapter i), over the union of modules."""
    total: dict[str, torch.Tensor] = {}
    for name, w in zip(names, weights):
        for module, delta in adapters[name][1].items():
            total[module] = total.get(module, 0) + w * delta
    return total


# -- one adapter at weight 1.0 comes back unchanged, whatever the method ------------------------

@pytest.mark.parametrize("method", methods.names())
def test_single_adapter_at_weight_one_is_reproduced(adapters, method):
    params = {"density": 1.0} if methods.get(method).dense else {}
    combined = combine(loaded(adapters, "patterned"), [1.0], method=method, **params)
    expected = adapters["patterned"][1]
    assert sorted(combined.modules) == sorted(expected)
    for module, delta in expected.items():
        torch.testing.assert_close(combined.delta(module), delta, rtol=1e-5, atol=1e-5)
    if methods.get(method).dense:
        assert combined.truncation_error < 1e-6
    else:
        assert combined.truncation_error is None


# -- delta / linear ------------------------------------------------------------------------------

@pytest.mark.parametrize("method", ["delta", "linear"])
def test_delta_is_the_exact_weighted_sum_of_updates(adapters, method):
    names, weights = ["plain", "patterned", "rslora"], [0.7, -1.3, 0.4]
    combined = combine(loaded(adapters, *names), weights, method=method)
    expected = dense_sum(adapters, names, weights)
    assert sorted(combined.modules) == sorted(expected)
    for module, delta in expected.items():
        torch.testing.assert_close(combined.delta(module), delta, rtol=1e-5, atol=1e-6)
    # One rank for all modules (the largest per-module total: k_proj 8, v_proj 4+3, o_proj 8+2),
    # zero-padded, scaling 1.0, so the result needs no rank_pattern.
    assert combined.rank == 10
    assert {(f.rank, f.scaling) for f in combined.modules.values()} == {(10, 1.0)}
    assert combined.truncation_error is None
    assert combined.sources == tuple(names) and combined.weights == tuple(weights)


def test_delta_keeps_factors_concatenated(adapters):
    plain, rslora = loaded(adapters, "plain", "rslora")
    combined = combine([plain, rslora], [0.5, 2.0])
    q = combined.modules["model.layers.0.self_attn.q_proj"]
    p, r = plain.modules["model.layers.0.self_attn.q_proj"], rslora.modules["model.layers.0.self_attn.q_proj"]
    torch.testing.assert_close(q.A, torch.cat([p.A, r.A]))
    torch.testing.assert_close(q.B, torch.cat([0.5 * p.scaling * p.B, 2.0 * r.scaling * r.B], dim=1))


def test_delta_recompressed_to_rank_k_is_the_best_rank_k_approximation(adapters):
    names, weights = ["plain", "patterned", "rslora"], [1.0, 0.5, -0.8]
    combined = combine(loaded(adapters, *names), weights, rank=3)
    expected = dense_sum(adapters, names, weights)
    discarded = total = 0.0
    for module, delta in expected.items():
        best, error = best_rank_k(delta, 3)
        torch.testing.assert_close(combined.delta(module), best, rtol=1e-4, atol=1e-5)
        discarded, total = discarded + error**2, total + float(delta.square().sum())
    assert combined.rank == 3
    assert combined.truncation_error == pytest.approx((discarded / total) ** 0.5, rel=1e-5)


def test_rank_above_every_module_total_stays_exact(adapters):
    combined = combine(loaded(adapters, "plain", "rslora"), [1.0, 1.0], rank=64)
    assert combined.truncation_error is None and combined.rank == 6


# -- lorahub -------------------------------------------------------------------------------------

def test_lorahub_is_the_factorwise_mix(llama_dir, tmp_path):
    # Equal shapes, different alphas and rsLoRA; "other" lacks o_proj, so it contributes zero there.
    one = load_lora(factories.make_lora(llama_dir, tmp_path / "one", r=4, alpha=8, targets=ALL_TARGETS, seed=5))
    other = load_lora(factories.make_lora(llama_dir, tmp_path / "other", r=4, alpha=2, seed=6, use_rslora=True,
                                          targets=["q_proj", "k_proj", "v_proj"]))
    w = [0.9, -0.6]
    combined = combine([one, other], w, method="lorahub")
    for module in one.modules:
        present = [(wi, a.modules[module]) for wi, a in zip(w, [one, other]) if module in a.modules]
        B = sum(wi * f.scaling * f.B.double() for wi, f in present)
        A = sum(wi * f.A.double() for wi, f in present)
        torch.testing.assert_close(combined.delta(module), B @ A, rtol=1e-5, atol=1e-6)
    assert combined.rank == 4


def test_lorahub_refuses_unequal_shapes_and_points_to_delta(adapters):
    with pytest.raises(IncompatibleAdapters) as caught:
        combine(loaded(adapters, "plain", "rslora"), [1.0, 1.0], method="lorahub")
    message = str(caught.value)
    assert "model.layers.0.self_attn.q_proj" in message and "(4, 32)" in message and "(2, 32)" in message
    assert "--mode delta" in message


# -- ties / dare ---------------------------------------------------------------------------------

def test_ties_matches_peft_ties_for_equal_positive_weights(adapters):
    """With equal positive weights TIES' sign election is the same whether it looks at weighted
    updates (ours, mergekit) or unweighted ones (PEFT), so PEFT's implementation is a reference."""
    from peft.utils.merge_utils import ties

    names = ["plain", "patterned", "rslora"]
    combined = combine(loaded(adapters, *names), [0.6] * 3, method="ties", density=0.3, normalize=True, rank=32)
    for module in combined.modules:
        present = [adapters[n][1][module].float() for n in names if module in adapters[n][1]]
        expected = ties(present, torch.tensor([0.6] * len(present)), density=0.3)
        torch.testing.assert_close(combined.delta(module).float(), expected, rtol=1e-4, atol=1e-5)
    assert combined.truncation_error < 1e-6  # rank 32 = full rank for these 32-wide modules


def test_dense_methods_report_the_truncation_error(adapters):
    combined = combine(loaded(adapters, "plain", "patterned"), [1.0, 1.0], method="ties", density=0.5)
    # Sparsified updates are not low-rank: the default rank (sum of input ranks) must cut.
    assert 0.0 < combined.truncation_error < 1.0
    assert set(combined.module_errors) == set(combined.modules)


def test_dare_drops_and_rescales_reproducibly(adapters):
    plain = loaded(adapters, "plain")
    first = combine(plain, [1.0], method="dare", density=0.5, rank=32, seed=7)
    again = combine(plain, [1.0], method="dare", density=0.5, rank=32, seed=7)
    other = combine(plain, [1.0], method="dare", density=0.5, rank=32, seed=8)
    module = "model.layers.1.self_attn.v_proj"
    original, got = adapters["plain"][1][module], first.delta(module)
    torch.testing.assert_close(got, again.delta(module), rtol=0, atol=0)
    assert not torch.allclose(got, other.delta(module))
    kept = got.abs() > 1e-6
    torch.testing.assert_close(got[kept], 2 * original[kept], rtol=1e-4, atol=1e-5)  # rescaled by 1/density
    assert 0.35 < kept.float().mean() < 0.65


# -- checks at the boundary ---------------------------------------------------------------------

def test_different_base_models_are_refused(adapters):
    plain = adapters["plain"][0]
    elsewhere = LoraWeights(dict(plain.config, base_model_name_or_path="org/other"), plain.modules, "elsewhere")
    with pytest.raises(IncompatibleAdapters, match="org/other") as caught:
        combine([plain, elsewhere], [1.0, 1.0])
    assert plain.base_model in str(caught.value)


def test_dora_is_refused(llama_dir, tmp_path, adapters):
    folder = factories.make_lora(llama_dir, tmp_path / "dora", use_dora=True)
    with pytest.raises(UnsupportedAdapter, match="DoRA"):
        load_lora(folder)
    plain = adapters["plain"][0]
    with pytest.raises(UnsupportedAdapter, match="DoRA"):
        check_compatible([LoraWeights(dict(plain.config, use_dora=True), plain.modules, "dora")])


@pytest.mark.parametrize("kwargs, match", [
    (dict(method="nope"), "unknown combine method"),
    (dict(method="ties", density=1.5), "density"),
    (dict(method="dare", frobnicate=1), "unknown parameter"),
    (dict(method="ties", majority_sign="median"), "majority_sign"),
    (dict(rank=0), "rank"),
])
def test_bad_arguments_are_refused(adapters, kwargs, match):
    with pytest.raises(InvalidArgument, match=match):
        combine(loaded(adapters, "plain"), [1.0], **kwargs)


def test_weights_must_match_the_adapters(adapters):
    with pytest.raises(InvalidArgument, match="2 weights for 1 adapters"):
        combine(loaded(adapters, "plain"), [1.0, 2.0])
    with pytest.raises(InvalidArgument, match="finite"):
        combine(loaded(adapters, "plain"), [float("nan")])


def test_method_parameters_are_declared():
    assert methods.get("ties") is Ties
    assert [p.name for p in Ties.params] == ["density", "majority_sign", "normalize"]
    assert Ties().values == {"density": 0.2, "majority_sign": "total", "normalize": False}


# -- re-compression -------------------------------------------------------------------------------

def best_rank_k(delta: torch.Tensor, k: int) -> tuple[torch.Tensor, float]:
    """Eckart-Young by a dense SVD: the best rank-k matrix and its Frobenius error."""
    u, s, vh = torch.linalg.svd(delta.double(), full_matrices=False)
    return (u[:, :k] * s[:k]) @ vh[:k], float(s[k:].square().sum().sqrt())


@pytest.mark.parametrize("out_features, in_features, R", [(40, 30, 12), (6, 50, 10), (64, 8, 16)])
def test_recompress_is_exact_at_full_rank_and_optimal_below(out_features, in_features, R):
    gen = torch.Generator().manual_seed(R)
    A, B = torch.randn(R, in_features, generator=gen), torch.randn(out_features, R, generator=gen)
    dense = B.double() @ A.double()

    same_A, same_B, error = recompress(A, B, R)
    assert error == 0.0 and same_A.shape == A.shape
    torch.testing.assert_close(same_B.double() @ same_A.double(), dense)

    for k in (1, 3, min(out_features, in_features, R) - 1):
        A_k, B_k, relative = recompress(A, B, k)
        assert A_k.shape == (k, in_features) and B_k.shape == (out_features, k)
        best, best_error = best_rank_k(dense, k)
        got = B_k.double() @ A_k.double()
        torch.testing.assert_close(got, best, rtol=1e-4, atol=1e-4)
        assert float((dense - got).norm()) == pytest.approx(best_error, rel=1e-4)
        assert relative == pytest.approx(best_error / float(dense.norm()), rel=1e-6)


def test_truncated_svd_of_a_dense_update():
    gen = torch.Generator().manual_seed(0)
    dense = torch.randn(20, 12, generator=gen, dtype=torch.float64)
    A, B, relative = truncated_svd(dense, 5)
    best, error = best_rank_k(dense, 5)
    torch.testing.assert_close(B @ A, best)
    assert relative == pytest.approx(error / float(dense.norm()))
    with pytest.raises(InvalidArgument):
        recompress(torch.zeros(2, 3), torch.zeros(4, 2), 0)


def test_recompress_of_a_zero_update_reports_no_error():
    A_k, B_k, relative = recompress(torch.zeros(4, 10), torch.zeros(7, 4), 2)
    assert relative == 0.0 and float((B_k @ A_k).abs().max()) == 0.0


def test_factors_are_never_materialised_densely():
    """A 100k x 100k update would take 80 GB dense; from the factors it takes a few MB."""
    gen = torch.Generator().manual_seed(0)
    A, B = torch.randn(8, 100_000, generator=gen), torch.randn(100_000, 8, generator=gen)
    A_k, B_k, relative = recompress(A, B, 4)
    assert A_k.shape == (4, 100_000) and B_k.shape == (100_000, 4) and 0 < relative < 1
