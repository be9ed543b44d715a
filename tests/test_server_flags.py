"""The rest of llama-server's command line: the flags its test harnesses pass to every
server, the ``LLAMA_ARG_*`` environment, the flags refused by the feature they name,
``POST /props``, ``--tags``, ``--cors-origins``, and ``/slots`` showing each slot's state."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from llm_inproc.errors import InvalidInputError
from llm_inproc.server.flags import ENV_FLAGS, settings_from_args
from llm_inproc.server.run import build_parser
from servers import Server, request, start_ours
from subproc import run_python

pytestmark = pytest.mark.timeout(300)

SERVER_MAIN = "from llm_inproc.server import main; raise SystemExit(main())"

# What llama.cpp's own server tests (tools/server/tests/utils.py) and common scripts pass.
HARNESS_FLAGS = [
    "--offline",
    "--batch-size",
    "256",
    "-ub",
    "128",
    "--kv-unified",
    "--swa-full",
    "-fa",
    "off",
    "--no-context-shift",
    "--cont-batching",
    "--cache-reuse",
    "0",
    "--reasoning-format",
    "none",
    "--jinja",
    "--tags",
    "chat, small",
    "--props",
    "--alias",
    "tiny",
    "--cors-origins",
    "http://a.example,http://b.example",
    "--sleep-idle-seconds",
    "-1",
    "-c",
    "512",
]


@pytest.fixture(scope="module")
def harnessed(chat_model_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    log = tmp_path_factory.mktemp("harness") / "server.log"
    with start_ours(chat_model_path, log, *HARNESS_FLAGS) as s:
        yield s


def _settings(monkeypatch: pytest.MonkeyPatch, env: dict[str, str], *argv: str) -> object:
    for var in ENV_FLAGS:
        monkeypatch.delenv(var, raising=False)
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    return settings_from_args(build_parser().parse_args(list(argv)))


def test_llama_server_environment_variables_set_flags(monkeypatch: pytest.MonkeyPatch) -> None:
    s: object = _settings(
        monkeypatch,
        {
            "LLAMA_ARG_CTX_SIZE": "384",
            "LLAMA_ARG_N_PARALLEL": "2",
            "LLAMA_ARG_BATCH": "64",
            "LLAMA_ARG_ALIAS": "env-model",
            "LLAMA_ARG_ENDPOINT_METRICS": "1",
            "LLAMA_ARG_ENDPOINT_SLOTS": "false",
            "LLAMA_ARG_UI": "off",
            "LLAMA_ARG_REPACK": "0",
            "LLAMA_ARG_FLASH_ATTN": "on",
            "LLAMA_ARG_TAGS": "x,y",
            "LLAMA_ARG_CONTEXT_SHIFT": "on",
        },
    )
    o = s.options  # type: ignore[attr-defined]
    assert (o.context_length, o.parallel, o.batch_size) == (384, 2, 64)
    assert o.repack is False and o.flash_attention is True
    assert s.alias == "env-model" and s.metrics and not s.slots  # type: ignore[attr-defined]
    assert not s.webui and s.tags == ("x", "y")  # type: ignore[attr-defined]
    assert o.context_shift is True


def test_a_flag_beats_its_environment_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    s: object = _settings(
        monkeypatch, {"LLAMA_ARG_CTX_SIZE": "384", "LLAMA_ARG_UI": "0"}, "-c", "512", "--webui"
    )
    assert s.options.context_length == 512 and s.webui  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("env", "said"),
    [
        ({"LLAMA_ARG_CTX_SIZE": "big"}, "LLAMA_ARG_CTX_SIZE='big'"),
        ({"LLAMA_ARG_ENDPOINT_METRICS": "maybe"}, "LLAMA_ARG_ENDPOINT_METRICS='maybe'"),
        ({"LLAMA_ARG_FLASH_ATTN": "fast"}, "use one of on, off, auto"),
        ({"LLAMA_ARG_KV_UNIFIED": "0"}, "one unified KV cache"),
    ],
)
def test_a_bad_environment_variable_is_named(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    env: dict[str, str],
    said: str,
) -> None:
    with pytest.raises(SystemExit) as e:
        _settings(monkeypatch, env)
    assert e.value.code == 2
    assert said in capsys.readouterr().err


def test_flags_whose_feature_we_lack_are_refused_by_name() -> None:
    for flags, code, said in [
        (["--no-kv-unified"], 2, "one unified KV cache"),
        (["--cache-reuse", "256"], 1, "--cache-reuse 256: reusing cached chunks"),
        (["--sleep-idle-seconds", "60"], 1, "--sleep-idle-seconds 60: sleeping when idle"),
        (["--batch-size", "0"], 1, "batch_size: 0 is invalid"),
    ]:
        out = run_python(SERVER_MAIN, *flags, "--port", "1", timeout=60)
        assert out.returncode == code, (flags, out.stderr)
        assert said in out.stderr and "Traceback" not in out.stderr


def test_batch_sizes_reach_the_options(monkeypatch: pytest.MonkeyPatch) -> None:
    s: object = _settings(monkeypatch, {}, "-b", "2048", "--ubatch-size", "256")
    assert (s.options.batch_size, s.options.ubatch_size) == (2048, 256)  # type: ignore[attr-defined]
    with pytest.raises(InvalidInputError, match="ubatch_size: -1 is invalid"):
        _settings(monkeypatch, {}, "-ub", "-1")


@pytest.mark.model
def test_a_script_for_llama_server_starts_ours_unchanged(harnessed: Server) -> None:
    props = request(harnessed.port, "GET", "/props").json()
    assert props["endpoint_props"] is True
    assert props["default_generation_settings"]["n_ctx"] == 512
    changed = request(harnessed.port, "POST", "/props", {"n_threads": 1})
    assert (changed.status, changed.json()) == (200, {"success": True})
    model = request(harnessed.port, "GET", "/v1/models").json()["data"][0]
    assert model["id"] == "tiny" and model["aliases"] == ["tiny"]
    assert model["tags"] == ["chat", "small"]
    reply = request(
        harnessed.port,
        "POST",
        "/completion",
        {"prompt": "The capital of France is", "n_predict": 4, "temperature": 0},
    )
    assert reply.status == 200 and reply.json()["tokens_predicted"] <= 4


@pytest.mark.model
def test_post_props_without_the_flag_is_501(chat_session_server: Server) -> None:
    answer = request(chat_session_server.port, "POST", "/props", {})
    assert answer.status == 501
    assert answer.json()["error"]["type"] == "not_supported_error"
    assert "--props" in answer.json()["error"]["message"]


@pytest.fixture(scope="module")
def chat_session_server(
    chat_model_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    log = tmp_path_factory.mktemp("plain") / "server.log"
    with start_ours(chat_model_path, log, "-c", "1024", "-np", "2") as s:
        yield s


@pytest.mark.model
def test_cors_origins_allow_only_the_listed_ones(harnessed: Server) -> None:
    for origin, allowed in [("http://a.example", True), ("http://evil.example", False)]:
        got = request(harnessed.port, "GET", "/v1/models", headers={"Origin": origin})
        assert got.headers.get("access-control-allow-origin") == (origin if allowed else None)
    pre = request(
        harnessed.port,
        "OPTIONS",
        "/v1/chat/completions",
        headers={"Origin": "http://b.example", "Access-Control-Request-Method": "POST"},
    )
    assert pre.status == 200 and pre.text == ""
    assert pre.headers["access-control-allow-origin"] == "http://b.example"
    assert pre.headers["access-control-allow-methods"] == "GET, POST, DELETE, OPTIONS"
    assert pre.headers["access-control-allow-credentials"] == "true"


def _slots(server: Server) -> list[dict[str, object]]:
    answer = request(server.port, "GET", "/slots")
    assert answer.status == 200
    slots: list[dict[str, object]] = answer.json()
    return slots


@pytest.mark.model
def test_slots_show_each_slots_real_state(chat_session_server: Server) -> None:
    """While a request generates, its slot shows the task, the prompt and the tokens
    decoded; once it ends, the slot is idle and its cells keep the conversation."""
    before = _slots(chat_session_server)
    assert [s["id"] for s in before] == [0, 1]
    assert not any(s["is_processing"] for s in before)
    import http.client

    conn = http.client.HTTPConnection("127.0.0.1", chat_session_server.port, timeout=120)
    body = {"prompt": "Count from one to one hundred:", "n_predict": 200, "stream": True}
    conn.request("POST", "/completion", json.dumps(body), {"Content-Type": "application/json"})
    resp = conn.getresponse()
    # Read until a few tokens came: the slot is then generating (the stream is still open).
    for _ in range(5):
        line = resp.readline()
        while line.strip() == b"":
            line = resp.readline()
    busy = [s for s in _slots(chat_session_server) if s["is_processing"]]
    assert len(busy) == 1
    slot = busy[0]
    assert isinstance(slot["id_task"], int) and slot["n_prompt_tokens"] > 0  # type: ignore[operator]
    decoded = slot["next_token"][0]["n_decoded"]  # type: ignore[index]
    assert decoded >= 1
    assert slot["next_token"][0]["n_remain"] == 200 - decoded  # type: ignore[index]
    resp.read()  # to its end
    conn.close()
    after = {s["id"]: s for s in _slots(chat_session_server)}[slot["id"]]
    assert after["is_processing"] is False and after["id_task"] == slot["id_task"]
    # As llama-server counts it: the cells hold the prompt and the reply, but for its last
    # token when the budget ended it (that one was sampled, never evaluated).
    prompt = after["n_prompt_tokens_processed"] + after["n_prompt_tokens_cache"]  # type: ignore[operator]
    n_decoded = after["next_token"][0]["n_decoded"]  # type: ignore[index]
    assert after["n_prompt_tokens"] - prompt in (n_decoded - 1, n_decoded)


@pytest.mark.model
def test_context_shift_lets_a_reply_run_past_the_context(
    chat_model_path: Path, tmp_path: Path
) -> None:
    """With ``--context-shift`` a reply longer than the context goes on (its slot's older
    half dropped); without it, the reply ends when the context is full."""
    flags = ("-c", "256", "-np", "1")
    # A long prompt (evaluated three times faster than a reply is generated) brings the
    # reply to the end of the context within a few dozen tokens.
    count = ", ".join(str(i) for i in range(1, 51))
    body = {"prompt": f"Count: {count},", "ignore_eos": True, "temperature": 0, "n_predict": 100}
    with start_ours(chat_model_path, tmp_path / "shift.log", *flags, "--context-shift") as s:
        n_ctx = request(s.port, "GET", "/props").json()["default_generation_settings"]["n_ctx"]
        tokens = request(s.port, "POST", "/tokenize", {"content": body["prompt"]}).json()
        n_prompt = len(tokens["tokens"])
        assert n_prompt + 20 < n_ctx < n_prompt + body["n_predict"]
        shifted = request(s.port, "POST", "/completion", body)
        slot = _slots(s)[0]
    assert shifted.json()["tokens_predicted"] == body["n_predict"]
    assert shifted.json()["stop_type"] == "limit"
    assert slot["n_prompt_tokens"] < n_ctx  # the cells never held more than the context
    with start_ours(chat_model_path, tmp_path / "plain.log", *flags) as s:
        cut = request(s.port, "POST", "/completion", body).json()
    assert 0 < cut["tokens_predicted"] <= n_ctx - n_prompt and cut["stop_type"] == "limit"
