"""Bad model files give our errors, never a crash. Loads run in a subprocess so a
crash of llama.cpp fails the test instead of killing the test run."""

from __future__ import annotations

import json
import os
import textwrap
from pathlib import Path

import pytest

from llm_inproc import ModelLoadError, ModelNotFoundError, Options, Session
from subproc import run_python

_LOAD = textwrap.dedent(
    """
    import json, sys
    from llm_inproc import Options, Session, LLMError
    try:
        Session(Options(model=sys.argv[1], context_length=256)).close()
        print(json.dumps({"ok": True}))
    except LLMError as e:
        print(json.dumps({"ok": False, "type": type(e).__name__, "msg": str(e)}))
    """
)


def load_in_subprocess(path: Path) -> dict[str, object]:
    proc = run_python(_LOAD, str(path))
    assert proc.returncode == 0, f"the process died ({proc.returncode}): {proc.stderr[-2000:]}"
    result: dict[str, object] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ModelNotFoundError, match="does not exist"):
        Session(Options(model=str(tmp_path / "nope.gguf")))


def test_not_a_gguf_file(tmp_path: Path) -> None:
    bad = tmp_path / "model.gguf"
    bad.write_bytes(b"<html>not a model</html>" * 10)
    r = load_in_subprocess(bad)
    assert r == {"ok": False, "type": "ModelLoadError", "msg": r["msg"]}
    assert "not a GGUF file" in str(r["msg"])


def test_empty_file(tmp_path: Path) -> None:
    bad = tmp_path / "empty.gguf"
    bad.write_bytes(b"")
    r = load_in_subprocess(bad)
    assert r["type"] == "ModelLoadError"


@pytest.mark.model
@pytest.mark.parametrize("fraction", [0.001, 0.5, 0.999])
def test_truncated_model(tmp_path: Path, model_path: Path, fraction: float) -> None:
    data = model_path.read_bytes()
    cut = tmp_path / "truncated.gguf"
    cut.write_bytes(data[: int(len(data) * fraction)])
    r = load_in_subprocess(cut)
    assert r["ok"] is False and r["type"] == "ModelLoadError", r
    assert "truncated" in str(r["msg"]) or "corrupt" in str(r["msg"])
    assert "no reason given" not in str(r["msg"]), r  # llama.cpp's own words are in it
    if fraction == 0.5:
        assert "not within the file bounds" in str(r["msg"]), r


def test_a_directory_is_not_a_model(tmp_path: Path) -> None:
    with pytest.raises(ModelNotFoundError, match=r"is a directory; pass the \.gguf file inside"):
        Session(Options(model=str(tmp_path)))


def test_gguf_magic_with_garbage(tmp_path: Path) -> None:
    bad = tmp_path / "garbage.gguf"
    bad.write_bytes(b"GGUF" + os.urandom(4096))
    r = load_in_subprocess(bad)
    assert r["type"] == "ModelLoadError", r


@pytest.mark.model
def test_two_loads_at_once_keep_their_own_errors(tmp_path: Path, model_path: Path) -> None:
    """llama.cpp's log is captured per loading thread: a failing load next to a good one
    reports its own reason, and the good one is not blamed for it."""
    import threading

    data = model_path.read_bytes()
    cut = tmp_path / "half.gguf"
    cut.write_bytes(data[: len(data) // 2])
    results: dict[str, object] = {}

    def load(name: str, path: Path) -> None:
        try:
            with Session(Options(model=str(path), context_length=256, parallel=1)) as s:
                results[name] = s.model_info.gpu_layers_offloaded
        except Exception as e:
            results[name] = e

    threads = [
        threading.Thread(target=load, args=(n, p))
        for n, p in [("bad", cut), ("good", model_path), ("bad2", cut)]
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert results["good"] == 0
    for name in ("bad", "bad2"):
        err = results[name]
        assert isinstance(err, ModelLoadError), err
        assert "not within the file bounds" in str(err)
        assert str(err).count("not within the file bounds") == 1  # not the other load's too
