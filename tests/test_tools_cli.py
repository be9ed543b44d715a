"""``llm-inproc prompt --tool FILE --tool-choice ...``, run as a real subprocess: the calls
printed as JSON (alone, or in ``--json``'s whole reply), and bad tool files refused as
usage errors before the model loads."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from subproc import child_env, run_cli
from tool_data import WEATHER

CLOCK = {
    "name": "get_time",  # the bare function object is accepted too
    "description": "Get the current time in a time zone",
    "parameters": {"type": "object", "properties": {"zone": {"type": "string"}}},
}


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return run_cli(*args, env=child_env(HF_HUB_OFFLINE="1"))


# One thread: on a 2-core machine that is busy with something else, llama.cpp's threads
# wait for each other (a 2 s reply took 95 s with two threads beside one busy process).
ONE = ("--threads", "1", "--context-length", "2048", "--temperature", "0")


def _file(path: Path, data: object) -> str:
    path.write_text(json.dumps(data))
    return str(path)


@pytest.mark.model
def test_a_required_call_is_printed_as_json(chat_model_path: Path, tmp_path: Path) -> None:
    tools = _file(tmp_path / "tools.json", [WEATHER, CLOCK])
    argv = ("--tool", tools, "--tool-choice", "required", *ONE)
    r = cli("prompt", *argv, "What is the weather in Paris?")
    assert r.returncode == 0, r.stderr
    calls = json.loads(r.stdout)  # stdout is the calls alone: the model wrote no text
    assert isinstance(calls, list) and len(calls) == 1
    assert set(calls[0]) == {"id", "name", "arguments"}
    assert calls[0]["name"] == "get_weather" and calls[0]["arguments"]["city"]

    clock = _file(tmp_path / "clock.json", CLOCK)
    named = ("--tool", _file(tmp_path / "weather.json", WEATHER), "--tool", clock)
    r = cli("prompt", *named, "--tool-choice", "get_time", *ONE, "--json", "Time?")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["finish_reason"] == "tool_calls" and out["reply"] == ""
    assert [c["name"] for c in out["tool_calls"]] == ["get_time"]
    assert {"model", "metrics"} <= set(out)


def test_bad_tool_files_are_usage_errors_before_the_model_loads(tmp_path: Path) -> None:
    # A model that does not exist: loading it would fail with status 1, not 2.
    missing = ("--model", str(tmp_path / "never-loaded.gguf"))
    not_json = tmp_path / "not.json"
    not_json.write_text('{"type": "function",')
    not_object = {"name": "f", "parameters": {"type": "array"}}
    untyped = {"type": "function", "function": {"name": "f", "colour": "red"}}
    weather = _file(tmp_path / "weather.json", WEATHER)
    cases = [
        (("--tool", str(tmp_path / "nope.json")), "nope.json: no such file"),
        (("--tool", str(tmp_path)), "cannot read it"),
        (("--tool", str(not_json)), "not.json: invalid JSON at line 1 column 21"),
        (("--tool", _file(tmp_path / "num.json", 3)), "is a int"),
        (("--tool", _file(tmp_path / "empty.json", [])), "the list holds no tool"),
        (("--tool", _file(tmp_path / "arr.json", not_object)), "must have type 'object'"),
        (("--tool", _file(tmp_path / "key.json", untyped)), "unknown key 'colour'"),
        (("--tool", weather, "--tool", weather), "two tools are named 'get_weather'"),
        (("--tool", weather, "--tool-choice", "get_time"), "not among the tools"),
        (("--tool-choice", "required"), "needs tools"),
    ]
    for argv, says in cases:
        r = cli("prompt", *missing, *argv, "hi")
        assert r.returncode == 2, (argv, r.stderr)
        assert r.stderr.startswith("usage: llm-inproc prompt "), r.stderr
        assert "argument --tool" in r.stderr and says in r.stderr, (argv, r.stderr)
        assert "llama" not in r.stderr and r.stdout == ""
