"""The public surface: a complete, sorted ``__all__`` and a cheap import."""

from __future__ import annotations

import os

import llm_inproc
import llm_inproc.errors
from subproc import run_python

SPEC_NAMES = {
    "PackedFileRef",
    "make_packed_file_ref",
    "PackedRepoRef",
    "ModelRef",
    "Role",
    "Message",
    "PromptEncoding",
    "KnownLLM",
    "Options",
    "load_config",
    "Config",
    "default_config",
    "Session",
    "TokenPerformance",
    "Metrics",
    "Conversation",
    "Memory",
    "LLMError",
    "InvalidInputError",
    "ContextOverflowError",
    "ModelNotFoundError",
    "ModelLoadError",
    "BackendError",
    "BusyError",
    "SessionClosedError",
}


def test_all_is_complete_and_sorted() -> None:
    exported = set(llm_inproc.__all__)
    assert exported >= SPEC_NAMES
    # isort-style order, as ruff keeps it: CONSTANTS, then Classes, then functions.
    kind = lambda n: (0 if n.isupper() else 1 if n[0].isupper() else 2, n)  # noqa: E731
    assert llm_inproc.__all__ == sorted(llm_inproc.__all__, key=kind)
    assert len(exported) == len(llm_inproc.__all__)
    for name in llm_inproc.__all__:
        assert getattr(llm_inproc, name) is not None
    public = {
        n
        for n, v in vars(llm_inproc).items()
        if not n.startswith("_") and not isinstance(v, type(os)) and n not in {"annotations"}
    }
    assert public <= exported, f"public but not in __all__: {public - exported}"


def test_errors_tree() -> None:
    e = llm_inproc.errors
    assert set(e.__all__) <= set(llm_inproc.__all__)
    assert issubclass(e.ContextOverflowError, e.InvalidInputError)
    assert issubclass(e.InvalidInputError, ValueError)
    assert issubclass(e.ModelNotFoundError, FileNotFoundError)
    assert issubclass(e.BackendError, ConnectionError)
    for name in e.__all__:
        assert issubclass(getattr(e, name), e.LLMError)


def test_import_does_not_load_llama_cpp() -> None:
    heavy = ("llama_cpp", "huggingface_hub", "httpx", "numpy")
    code = f"import sys, llm_inproc; print(sorted(m for m in sys.modules if m.startswith({heavy})))"
    r = run_python(code)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "[]"
