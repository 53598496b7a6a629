"""One declaration of the engine options: engine, adapters, registry key, pickling and CLI all agree with it."""

from __future__ import annotations

import pickle
import subprocess
import sys

import pytest

from ettin_integrations import EngineConfig, EttinReranker, get_reranker
from ettin_integrations.cli import build_parser
from ettin_integrations.config import EngineFields, cli_options

OPTIONS = EngineFields.option_names()


def test_every_option_has_a_description_and_a_docstring_line():
    for name, field in EngineFields.model_fields.items():
        assert field.description and len(field.description) > 15, name
        assert f"{name}: {field.description}" in (EttinReranker.__doc__ or ""), name


def test_adapters_take_exactly_the_declared_options():
    pytest.importorskip("langchain_core")
    pytest.importorskip("llama_index.core")
    from ettin_integrations.langchain import EttinRerank as LangChainRerank
    from ettin_integrations.llama_index import EttinRerank as LlamaIndexRerank

    for adapter in (LangChainRerank, LlamaIndexRerank):
        fields = adapter.model_fields
        for name in OPTIONS:
            assert name in fields, (adapter, name)
            assert fields[name].default == EngineFields.model_fields[name].default, (adapter, name)
            assert fields[name].description == EngineFields.model_fields[name].description, (adapter, name)


def test_cli_flags_are_derived_from_the_declaration():
    _, commands = build_parser()
    for command in ("rank", "eval"):
        dests = {action.dest: action for action in commands[command]._actions}
        for name, _kind, default, _help, choices in cli_options():
            assert name in dests, (command, name)
            action = dests[name]
            assert action.default == default, (command, name)
            if choices:
                assert tuple(action.choices) == choices
    # Only non-scalar options are left to Python callers.
    assert {name for name, *_ in cli_options()} == set(OPTIONS) - {"model_kwargs"}


def test_registry_key_and_pickle_carry_every_option(tiny_checkpoint):
    engine = get_reranker(tiny_checkpoint, device="cpu", max_length=77, chunk_aggregate="mean")
    assert set(engine.options) == set(OPTIONS)
    clone = pickle.loads(pickle.dumps(engine))
    assert clone is engine  # same options -> the same shared engine
    assert get_reranker(tiny_checkpoint, device="auto", max_length=77, chunk_aggregate="mean") is engine
    assert get_reranker(tiny_checkpoint + "/", device="cpu", max_length=77, chunk_aggregate="mean") is engine
    assert get_reranker(tiny_checkpoint, device="cpu", max_length=78, chunk_aggregate="mean") is not engine


def test_device_and_dtype_are_resolved_once_and_auto_survives_pickling(tiny_checkpoint):
    config = EngineConfig.create(model=tiny_checkpoint, device=None)
    assert config.device == "auto" and not config.is_resolved
    resolved = config.resolved()
    assert resolved.is_resolved and resolved.device in ("cpu", "cuda", "mps") and resolved.dtype != "auto"
    assert resolved.resolved() is resolved
    engine = EttinReranker(config=resolved)
    assert engine.config is resolved
    # What travels is "auto", so a process on other hardware picks its own device.
    assert EttinReranker(tiny_checkpoint).options["device"] == "auto"


@pytest.mark.parametrize(
    ("options", "error", "pattern"),
    [
        ({"top_k": 3}, TypeError, r"top_k.*did you mean top_n"),
        ({"max_lenght": 3}, TypeError, r"did you mean max_length"),
        ({"batch_tokens": 0}, ValueError, r"batch_tokens=0"),
        ({"max_length": True}, ValueError, r"max_length=True.*bool"),
        ({"normalize": "softmax"}, ValueError, r"normalize='softmax'"),
        ({"normalize_shift": float("nan")}, ValueError, r"normalize_shift=nan.*finite"),
        ({"normalize_temperature": 0}, ValueError, r"normalize_temperature"),
        ({"chunk_tokens": 64, "chunk_overlap": 64}, ValueError, r"chunk_overlap=64 must be smaller"),
        ({"long_documents": "split"}, ValueError, r"long_documents"),
        ({"num_threads": -1}, ValueError, r"num_threads"),
    ],
)
def test_bad_options_fail_before_loading_and_name_the_option(options, error, pattern):
    with pytest.raises(error, match=pattern):
        EngineConfig.create(model="org/not-loaded", **options)


def test_cli_help_does_not_import_torch():
    code = (
        "import sys; from ettin_integrations.cli import main\n"
        "try:\n main(['--help'])\nexcept SystemExit: pass\n"
        "assert 'torch' not in sys.modules, 'torch imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True)


def test_importing_the_package_imports_no_framework_and_no_torch():
    frameworks = "('langchain', 'llama_index', 'haystack', 'opentelemetry')"
    code = (
        "import sys, ettin_integrations\n"
        f"assert not [m for m in sys.modules if m.startswith({frameworks} + ('torch',))]\n"
        "from ettin_integrations import EttinReranker\n"
        f"assert not [m for m in sys.modules if m.startswith({frameworks})]"
    )
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True)
