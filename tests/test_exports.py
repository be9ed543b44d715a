"""The public surface: a complete, sorted ``__all__`` and a cheap import."""

from __future__ import annotations

import os
import sys

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
    public = {
        n
        for n, v in vars(llm_inproc).items()
        if not n.startswith("_") and not isinstance(v, type(os)) and n not in {"annotations"}
    }
    assert public <= exported, f"public but not in __all__: {public - exported}"


def test_every_export_is_the_object_its_home_module_defines() -> None:
    """A name in ``__all__`` is the class or function of that name from the submodule that
    defines and exports it (not a stale copy, an alias or a placeholder), and a star import
    brings exactly ``__all__``."""
    for name in llm_inproc.__all__:
        obj = getattr(llm_inproc, name)
        if name.isupper():  # a constant: the very value its home module exports
            homes = [
                m
                for m in vars(llm_inproc).values()
                if isinstance(m, type(os)) and name in getattr(m, "__all__", ())
            ]
            assert homes and all(getattr(m, name) is obj for m in homes), name
            continue
        assert isinstance(obj, type) or callable(obj), name
        assert obj.__name__ == name, f"{name} is an alias of {obj.__name__}"
        home = sys.modules[obj.__module__]
        assert home.__name__.startswith("llm_inproc."), (name, home.__name__)
        assert getattr(home, name) is obj and name in home.__all__, (name, home.__name__)
    star: dict[str, object] = {}
    exec("from llm_inproc import *", star)
    assert set(star) - {"__builtins__"} == set(llm_inproc.__all__)


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
