import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest  # noqa: E402

from . import factories  # noqa: E402


@pytest.fixture(scope="session")
def llama_dir(tmp_path_factory):
    """A tiny Llama-type causal LM with its tokenizer, saved once per session."""
    return factories.save_base_model("llama", tmp_path_factory.mktemp("llama"))


@pytest.fixture(scope="session")
def t5_dir(tmp_path_factory):
    """A tiny T5-type seq2seq model with its tokenizer, saved once per session."""
    return factories.save_base_model("t5", tmp_path_factory.mktemp("t5"))


@pytest.fixture(scope="session")
def llama_lora(llama_dir, tmp_path_factory):
    """A PEFT LoRA adapter (r=4, q_proj+v_proj) for ``llama_dir``, trained a few steps."""
    return factories.make_lora(llama_dir, tmp_path_factory.mktemp("lora"), train_steps=3)


@pytest.fixture
def home(tmp_path, monkeypatch):
    """A fresh, empty LORAMGR_HOME for one test, with every other ``LORAMGR_*`` setting cleared:
    a developer's ``LORAMGR_STORE`` or ``LORAMGR_TOKEN`` never leaks in. The test harness's own
    ``LORAMGR_TEST_*`` variables (the PostgreSQL server) stay."""
    for variable in list(os.environ):
        if variable.startswith("LORAMGR_") and not variable.startswith("LORAMGR_TEST_"):
            monkeypatch.delenv(variable)
    path = tmp_path / "home"
    monkeypatch.setenv("LORAMGR_HOME", str(path))
    return path


# The throw-away PostgreSQL server (started by .ci/run, or here when `initdb` exists) and the S3 emulator.
pytest_plugins = ["tests.postgres", "tests.s3"]


@pytest.fixture(scope="session")
def small_lab(tmp_path_factory):
    """The offline lab at its small size (seconds to build), built once per session."""
    from loramgr.examples.lab.build import build_lab

    return build_lab(tmp_path_factory.mktemp("small-lab"), size="small", seed=0)
