"""The error tables: every error class has its code in exactly one table, and a code with its
details turns back into the exception it came from."""

from __future__ import annotations

import importlib
import inspect
import pkgutil

import pytest

import loramgr.composer
import loramgr.hub
from loramgr.composer.errors import COMPOSER_ERRORS
from loramgr.hub.errors import (HUB_ERRORS, AdapterNotFound, InvalidAdapter, LoramgrError, RemoteError,
                                error_from_code, error_table)


def error_classes_defined_in(package) -> set[type[LoramgrError]]:
    found = set()
    for module_info in pkgutil.walk_packages(package.__path__, package.__name__ + "."):
        module = importlib.import_module(module_info.name)
        found |= {obj for _, obj in inspect.getmembers(module, inspect.isclass)
                  if issubclass(obj, LoramgrError) and obj.__module__ == module.__name__}
    return found


def test_every_hub_error_class_is_in_the_hub_table():
    defined = error_classes_defined_in(loramgr.hub) | {LoramgrError}
    assert defined == set(HUB_ERRORS.values())
    assert all(code == cls.code for code, cls in HUB_ERRORS.items())


def test_every_composer_error_class_is_in_the_composer_table():
    assert error_classes_defined_in(loramgr.composer) == set(COMPOSER_ERRORS.values())
    assert not HUB_ERRORS.keys() & COMPOSER_ERRORS.keys()


def test_a_table_refuses_two_classes_with_one_code():
    class Twin(LoramgrError, code="not_found"):
        pass

    with pytest.raises(ValueError, match="used by AdapterNotFound and Twin"):
        error_table(AdapterNotFound, Twin)


def test_a_code_and_its_details_come_back_as_the_exception():
    error = error_from_code("not_found", "no adapter named acme/x", {"ref": "acme/x@3"})
    assert type(error) is AdapterNotFound and isinstance(error, LookupError)
    assert str(error) == "no adapter named acme/x" and error.details == {"ref": "acme/x@3"}


def test_an_unknown_code_is_a_remote_error_that_keeps_the_code():
    error = error_from_code("from_a_newer_hub", "something new", {"message": "clash", "digest": "ab"})
    assert type(error) is RemoteError
    assert error.details == {"code": "from_a_newer_hub", "digest": "ab"}


def test_naming_shows_the_label_in_place_of_a_scratch_folder(tmp_path):
    scratch = tmp_path / "push-123"
    error = InvalidAdapter(f"{scratch}/adapter_model.safetensors: holds no tensors",
                           path=f"{scratch}/adapter_model.safetensors", line=3)
    named = error.naming(scratch, "acme/x")
    assert type(named) is InvalidAdapter
    assert str(named) == "acme/x/adapter_model.safetensors: holds no tensors"
    assert named.details == {"path": "acme/x/adapter_model.safetensors", "line": 3}


def test_read_adapter_names_the_label_in_its_messages(tmp_path):
    from loramgr.hub.adapter import read_adapter

    folder = tmp_path / "scratch"
    folder.mkdir()
    (folder / "adapter_config.json").write_text('{"peft_type": "LORA", "r": 4}')
    (folder / "adapter_model.safetensors").write_bytes(b"short")
    with pytest.raises(InvalidAdapter) as raised:
        read_adapter(folder, label="acme/x")
    assert str(raised.value).startswith("acme/x/adapter_model.safetensors: ")
    assert str(tmp_path) not in str(raised.value) and raised.value.details["path"].startswith("acme/x/")
    with pytest.raises(InvalidAdapter, match=f"^{folder}/adapter_model.safetensors: "):
        read_adapter(folder)
