"""loralib checkpoints: refused unless --convert-pickle, with --base and --alpha; then converted into
a PEFT folder whose loaded model computes what the loralib model computes."""

from __future__ import annotations

import json
import pathlib

import loralib
import pytest
import torch
from click.testing import CliRunner
from torch import nn

from loramgr.cli import main

BASE = "acme/tiny-mlp"


class LoralibNet(nn.Module):
    """A model written with loralib layers, as its README shows (rank 4 and rank 2, alpha 8)."""

    def __init__(self):
        super().__init__()
        self.proj = loralib.Linear(16, 32, r=4, lora_alpha=8)
        self.head = loralib.Linear(32, 8, r=2, lora_alpha=8)

    def forward(self, x):
        return self.head(torch.relu(self.proj(x)))


class PlainNet(nn.Module):
    """The same model without LoRA: the base model PEFT wraps."""

    def __init__(self):
        super().__init__()
        self.proj = nn.Linear(16, 32)
        self.head = nn.Linear(32, 8)

    def forward(self, x):
        return self.head(torch.relu(self.proj(x)))


class Evil:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (pathlib.Path.touch, (self.marker,))


@pytest.fixture
def run(home):
    runner = CliRunner()
    return lambda *args: runner.invoke(main, [str(a) for a in args], catch_exceptions=False)


@pytest.fixture
def trained(tmp_path):
    """(loralib model, path of its ``torch.save(lora.lora_state_dict(model))`` checkpoint)."""
    torch.manual_seed(0)
    net = LoralibNet()
    with torch.no_grad():
        for name, param in net.named_parameters():
            if "lora_B" in name:
                param.normal_()
    path = tmp_path / "lora.pt"
    torch.save(loralib.lora_state_dict(net), path)
    return net.train(), path  # train mode: loralib adds B @ A * alpha / r without merging


def error_line(result) -> str:
    assert result.exit_code == 1, result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error: ") and "Traceback" not in result.output
    return lines[0]


def test_refused_without_convert_pickle_or_without_base_and_alpha(run, trained):
    _, path = trained
    assert "--convert-pickle" in error_line(run("push", path, "--name", "acme/l", "--task", "t", "--base", BASE))
    line = error_line(run("push", path, "--name", "acme/l", "--task", "t", "--base", BASE, "--convert-pickle"))
    assert "records neither its base model nor its lora_alpha" in line and "--alpha ALPHA" in line
    line = error_line(run("push", path, "--name", "acme/l", "--task", "t", "--alpha", "8", "--convert-pickle"))
    assert "--base BASE" in line
    assert json.loads(run("ls", "--json").stdout) == []


def test_converted_adapter_computes_what_loralib_computes(run, trained, tmp_path):
    from peft import PeftModel

    net, path = trained
    pushed = run("push", path, "--name", "acme/l", "--task", "t", "--base", BASE, "--alpha", "8",
                 "--convert-pickle", "--json")
    assert pushed.exit_code == 0, pushed.output
    version = json.loads(pushed.stdout)
    assert version["rank"] == 4 and version["alpha"] == 8 and version["base_model"] == BASE
    out = tmp_path / "pulled"
    run("pull", "acme/l", "-o", out)
    config = json.loads((out / "adapter_config.json").read_text())
    assert config["rank_pattern"] == {"head": 2} and config["target_modules"] == ["head", "proj"]

    base = PlainNet()
    base.load_state_dict({k: v for k, v in net.state_dict().items() if "lora_" not in k})
    x = torch.randn(5, 16, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        plain = base(x)
        peft_model = PeftModel.from_pretrained(base, str(out)).eval()
        expected, got = net(x), peft_model(x)
    assert not torch.allclose(expected, plain)  # the adapter does change the output
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


def test_a_pickle_with_code_is_refused_and_never_runs(run, tmp_path):
    marker = tmp_path / "ran"
    path = tmp_path / "evil.pt"
    torch.save({"proj.lora_A": torch.zeros(2, 4), "x": Evil(marker)}, path)
    line = error_line(run("push", path, "--name", "acme/e", "--task", "t", "--base", BASE, "--alpha", "4",
                          "--convert-pickle"))
    assert "refused to load" in line
    assert not marker.exists()
    assert json.loads(run("ls", "--json").stdout) == []


@pytest.mark.parametrize("state, words", [
    ({"proj.weight": torch.zeros(2, 2)}, ["not a loralib lora_A / lora_B factor"]),
    ({"proj.lora_A": torch.zeros(2, 4)}, ["has lora_A but not lora_B"]),
    ({"proj.lora_A": torch.zeros(2, 4), "proj.lora_B": torch.zeros(8, 3)}, ["disagree on the rank"]),
    ({"proj.lora_A": torch.zeros(2, 4), "proj.lora_B": torch.zeros(8, 2, 1)}, ["MergedLinear"]),
])
def test_checkpoints_that_are_not_loralib_linear_are_refused(run, tmp_path, state, words):
    path = tmp_path / "odd.pt"
    torch.save(state, path)
    line = error_line(run("push", path, "--name", "acme/o", "--task", "t", "--base", BASE, "--alpha", "4",
                          "--convert-pickle"))
    assert all(w in line for w in words), line
    assert json.loads(run("ls", "--json").stdout) == []
