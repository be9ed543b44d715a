"""Session(Options(remote=...)) against real servers on loopback: ours (``python -m
llm_inproc.server``) and the real llama-server, on Gemma 3 270M (raw encoding, through
``/completion``) and SmolLM2 (chat template, through ``/v1/chat/completions``); an
OpenAI-only server (ours behind a proxy that answers only ``/v1``); errors, cancelling,
a server killed mid-stream. Also the pure wire readers, round-tripped through
:mod:`llm_inproc.wire`'s own builders."""

from __future__ import annotations

import asyncio
import http.client
import http.server
import json
import math
import threading
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from llm_inproc import (
    BackendError,
    BusyError,
    ContextOverflowError,
    InvalidInputError,
    Message,
    Options,
    Role,
    Sampling,
    Session,
)
from llm_inproc.backends.base import GenerationRequest, Outcome
from llm_inproc.metrics import TokenPerformance
from llm_inproc.models.embedded import GEMMA_BASE
from llm_inproc.sampling import TokenProb
from servers import Server, env_without_key, free_port, start_ours, started

pytestmark = pytest.mark.timeout(300)

MSGS = [Message(Role.USER, "Name one colour.")]
FLAGS = ("-c", "1024", "-np", "1", "-t", "1", "--metrics")


# -- the wire, pure -------------------------------------------------------------------------------


def test_remote_urls_give_the_server_root() -> None:
    from llm_inproc.backends.http.backend import base_url

    assert base_url("127.0.0.1:8080") == "http://127.0.0.1:8080"
    assert base_url("[::1]:8080") == "http://[::1]:8080"
    assert base_url("https://h.lan/v1/") == "https://h.lan"
    assert base_url("http://h:1/openai/v1") == "http://h:1/openai"


def _decode(route: Any, events: list[Any], n_probs: int = 0) -> list[Any]:
    from llm_inproc.backends.http.requests import StreamDecoder

    d = StreamDecoder(route, started=time.monotonic(), want_probs=n_probs > 0)
    return [item for e in events for item in d.feed(e)]


def test_stream_readers_round_trip_the_servers_own_builders() -> None:
    from llm_inproc import wire

    cost = wire.Cost(
        "length",
        TokenPerformance(7, timedelta(milliseconds=70)),
        3,
        TokenPerformance(2, timedelta(milliseconds=20)),
    )
    probs = [TokenProb(5, "Hi", 0.5, (TokenProb(5, "Hi", 0.5), TokenProb(6, "Yo", 0.25)))]
    native = [
        wire.completion_chunk("Hi", 1, 10, probs=wire.token_probs(probs, 2)),
        wire.completion_chunk(" there", 2, 10, probs=wire.token_probs(probs, 2)),
        wire.completion_response("", cost, model="m", prompt="p", settings={}, n_ctx=64),
    ]
    chat = [
        wire.chat_chunk(model="m", response_id="i", created=0, role=True),
        wire.chat_chunk(model="m", response_id="i", created=0, content="Hi"),
        wire.chat_chunk(model="m", response_id="i", created=0, content=" there"),
        wire.chat_chunk(model="m", response_id="i", created=0, finish_reason="length"),
        wire.chat_chunk(model="m", response_id="i", created=0, cost=cost),
        "[DONE]",
    ]
    legacy = [
        wire.oai_completion_chunk("Hi", model="m", response_id="i", created=0),
        wire.oai_completion_chunk(" there", model="m", response_id="i", created=0, cost=cost),
        "[DONE]",
    ]
    for route, events in (("completion", native), ("chat", chat), ("oai_completion", legacy)):
        items = _decode(route, events, n_probs=2 if route == "completion" else 0)
        assert items[:-1] == ["Hi", " there"], route
        out = items[-1]
        assert isinstance(out, Outcome)
        assert out.finish_reason == "length"
        assert (out.prompt, out.cached_tokens, out.generated) == (cost.prompt, 3, cost.generated)
        if route == "completion":
            assert out.logprobs is not None and len(out.logprobs) == 2
            assert math.isclose(out.logprobs[0].prob, 0.5)
            assert [t.text for t in out.logprobs[0].top] == ["Hi", "Yo"]


def test_openai_usage_without_timings_and_a_stream_cut_short() -> None:
    from llm_inproc.backends.http.requests import StreamDecoder

    usage = {"prompt_tokens": 9, "completion_tokens": 1, "prompt_tokens_details": {}}
    events = [
        {"choices": [{"index": 0, "delta": {"content": "x"}, "finish_reason": "stop"}]},
        {"choices": [], "usage": usage},
        "[DONE]",
    ]
    out = _decode("chat", events)[-1]
    assert isinstance(out, Outcome)
    assert (out.finish_reason, out.prompt.count, out.generated.count) == ("stop", 9, 1)
    d = StreamDecoder("chat", started=time.monotonic())
    d.feed({"choices": [{"index": 0, "delta": {"content": "x"}, "finish_reason": None}]})
    with pytest.raises(BackendError, match="without its final event"):
        d.end_of_stream()


@pytest.mark.parametrize(
    ("status", "body", "kind", "needle"),
    [
        (
            400,
            {"error": {"message": "too long", "type": "exceed_context_size_error"}},
            ContextOverflowError,
            "too long",
        ),
        (
            400,
            {"error": {"message": "bad field", "type": "invalid_request_error"}},
            InvalidInputError,
            "bad field",
        ),
        (
            401,
            {"error": {"message": "Invalid API Key", "type": "authentication_error"}},
            BackendError,
            "API key",
        ),
        (
            404,
            {"error": {"message": "File Not Found", "type": "not_found_error"}},
            BackendError,
            "Options.remote",
        ),
        (
            503,
            {"error": {"message": "queue full", "type": "unavailable_error"}},
            BusyError,
            "queue full",
        ),
        (
            503,
            {"error": {"message": "Loading model", "type": "unavailable_error"}},
            BackendError,
            "Loading model",
        ),
        (500, b"<html>oops</html>", BackendError, "oops"),
        (422, {"detail": "bad"}, BackendError, "bad"),
    ],
)
def test_server_errors_become_our_errors_with_the_servers_message(
    status: int, body: Any, kind: type[Exception], needle: str
) -> None:
    from llm_inproc.backends.http.answers import error_from_response

    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    error = error_from_response(status, raw, "http://h/x")
    assert type(error) is kind
    assert needle in str(error)


def test_request_bodies_in_both_dialects() -> None:
    from llm_inproc.backends.http.requests import generation_call

    s = Sampling(max_tokens=5, seed=7, temperature=0, top_k=10, stop=("a", "b", "c"))
    raw = GenerationRequest(sampling=s, prompt="P", stops=("<end>", "a", "b", "c"))
    llama = generation_call(raw, "llama")
    assert (llama.path, llama.route) == ("/completion", "completion")
    assert llama.body["n_predict"] == 5 and llama.body["seed"] == 7
    assert llama.body["top_k"] == 10 and "min_p" not in llama.body  # defaults are not sent
    assert llama.body["stop"] == ["<end>", "a", "b", "c"]
    oai = generation_call(raw, "openai")
    assert (oai.path, oai.body["max_tokens"]) == ("/v1/completions", 5)
    assert len(oai.body["stop"]) == 4 and "n_predict" not in oai.body
    chat = generation_call(GenerationRequest(sampling=Sampling(), messages=MSGS), "llama")
    assert chat.path == "/v1/chat/completions"
    assert chat.body["messages"] == [{"role": "user", "content": "Name one colour."}]
    assert chat.body["seed"] == -1 and "max_tokens" not in chat.body
    assert chat.body["stream_options"] == {"include_usage": True}
    banned = GenerationRequest(sampling=Sampling(logit_bias={"red": -math.inf}), messages=MSGS)
    assert generation_call(banned, "llama").body["logit_bias"] == [["red", False]]
    with pytest.raises(InvalidInputError, match="token ids"):
        generation_call(banned, "openai")


# -- real servers ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def servers(
    llama_server_binary: Path,
    repack_flags: list[str],
    model_path: Path,
    chat_model_path: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[dict[tuple[str, str], Server]]:
    """Ours and llama-server, each on Gemma (raw encoding) and SmolLM2 (chat template)."""
    from contextlib import ExitStack

    logs = tmp_path_factory.mktemp("remote")
    out: dict[tuple[str, str], Server] = {}
    with ExitStack() as stack:
        for name, path in (("gemma", model_path), ("smol", chat_model_path)):
            out["ours", name] = stack.enter_context(
                start_ours(path, logs / f"ours-{name}.log", *FLAGS, env=env_without_key())
            )
            port = free_port()
            cmd = [str(llama_server_binary), "-m", str(path), "--port", str(port), *FLAGS]
            log = logs / f"llama-{name}.log"
            out["llama", name] = stack.enter_context(
                started([*cmd, "-fa", "off", *repack_flags], port, log, env=env_without_key())
            )
        yield out


def _options(server: Server, model: str) -> Options:
    return Options(remote=server.url, model=GEMMA_BASE.ref if model == "gemma" else "")


COMBOS = [("ours", "gemma"), ("ours", "smol"), ("llama", "gemma"), ("llama", "smol")]


@pytest.mark.model
@pytest.mark.parametrize(("kind", "model"), COMBOS)
def test_a_reply_its_stream_and_its_cost(
    servers: dict[tuple[str, str], Server], kind: str, model: str, cache_dir: Path
) -> None:
    server = servers[kind, model]
    with Session(_options(server, model), cache_dir=cache_dir) as s:
        assert s.backend == "remote"
        assert (s.encoding is not None) == (model == "gemma")  # raw path vs chat template
        assert s.model_info.n_ctx == 1024
        r = s.complete(MSGS, max_tokens=8, temperature=0)
        assert r.text and r.finish_reason == "length"
        assert r.generated.count == 8 and r.generated.duration > timedelta(0)
        assert r.prompt.count + r.cached_tokens > 5
        assert timedelta(0) < r.time_to_first_token < timedelta(seconds=30)
        streamed = s.prompt_streaming(MSGS, max_tokens=8, temperature=0)
        assert "".join(streamed).strip() == r.text
        assert streamed.reply is not None and streamed.reply.cached_tokens > 0  # prefix reused
        assert asyncio.run(s.aprompt(MSGS, max_tokens=8, temperature=0)) == r.text
        m = s.get_metrics()
        assert m.generated.count >= 24 and m.prompt.count > 0
        assert s.get_health() == "ok"
        n = s.count_tokens(MSGS)
        assert 5 < n < 100
        assert s.detokenize(s.tokenize("Hello world", special=False)) == "Hello world"


@pytest.mark.model
@pytest.mark.parametrize("model", ["gemma", "smol"])
def test_our_server_and_llama_server_give_the_same_greedy_reply(
    servers: dict[tuple[str, str], Server], model: str, cache_dir: Path
) -> None:
    texts = []
    for kind in ("ours", "llama"):
        with Session(_options(servers[kind, model], model), cache_dir=cache_dir) as s:
            texts.append(s.prompt(MSGS, max_tokens=12, temperature=0))
    assert texts[0] == texts[1]


def _processing(s: Session) -> int:
    return s.get_metrics().requests_processing


def _wait_idle(s: Session, within: float = 5.0) -> float:
    start = time.monotonic()
    while _processing(s) and time.monotonic() - start < within:
        time.sleep(0.05)
    assert _processing(s) == 0, "the server kept generating for a caller that left"
    return time.monotonic() - start


@pytest.mark.model
@pytest.mark.parametrize("kind", ["ours", "llama"])
def test_closing_the_stream_or_cancelling_the_task_stops_the_server(
    servers: dict[tuple[str, str], Server], kind: str, cache_dir: Path
) -> None:
    endless = Sampling(ignore_eos=True)
    with Session(_options(servers[kind, "smol"], "smol"), cache_dir=cache_dir) as s:
        stream = s.prompt_streaming(MSGS, max_tokens=900, sampling=endless)
        next(stream)
        assert _processing(s) == 1
        stream.close()
        _wait_idle(s)

        async def cancel() -> None:
            stream = s.aprompt_streaming(MSGS, max_tokens=900, sampling=endless)
            reading = asyncio.Event()

            async def consume() -> None:
                async for _ in stream:
                    reading.set()

            task = asyncio.ensure_future(consume())
            # Cancel mid-reply: the first pieces came, most of the 900 tokens are to come.
            await asyncio.wait_for(reading.wait(), 60)
            assert not task.done()
            assert _processing(s) == 1
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task

        asyncio.run(cancel())
        _wait_idle(s)
        with pytest.raises(TimeoutError):
            s.prompt(MSGS, max_tokens=900, sampling=endless, timeout=0.5)
        _wait_idle(s)
        reply = s.complete(MSGS, max_tokens=4, temperature=0)  # the slot is free again
        assert reply.generated.count == 4


@pytest.mark.model
@pytest.mark.parametrize("kind", ["ours", "llama"])
def test_the_servers_refusals_are_our_errors(
    servers: dict[tuple[str, str], Server], kind: str, cache_dir: Path
) -> None:
    with Session(_options(servers[kind, "smol"], "smol"), cache_dir=cache_dir) as s:
        with pytest.raises(ContextOverflowError, match="context"):
            s.prompt([Message(Role.USER, "hello " * 1200)], max_tokens=2)
        with pytest.raises(InvalidInputError):
            s.prompt(MSGS, max_tokens=2, sampling=Sampling(grammar="root ::= ("))
        r = s.complete(MSGS, max_tokens=6, timeout=30, sampling=Sampling(n_probs=2))
        assert r.logprobs is not None
        # llama-server counts the end-of-generation token among the predicted ones but
        # gives no probability for it; ours counts only the reply's tokens.
        eog = 1 if kind == "llama" and r.finish_reason == "stop" else 0
        assert len(r.logprobs) == r.generated.count - eog
        assert all(0 < t.prob <= 1 and len(t.top) == 2 for t in r.logprobs)


def test_a_dead_server_is_a_backend_error_at_once(cache_dir: Path) -> None:
    start = time.monotonic()
    with pytest.raises(BackendError, match="cannot be reached"):
        Session(Options(remote=f"127.0.0.1:{free_port()}"), cache_dir=cache_dir)
    assert time.monotonic() - start < 5


@pytest.mark.model
def test_a_wrong_api_key_is_named(chat_model_path: Path, tmp_path: Path, cache_dir: Path) -> None:
    env = env_without_key(LLM_INPROC_API_KEY="right-key")
    with start_ours(chat_model_path, tmp_path / "keyed.log", *FLAGS, env=env) as server:
        with pytest.raises(BackendError, match="API key"):
            Session(Options(remote=server.url, api_key="wrong-key"), cache_dir=cache_dir)
        with Session(Options(remote=server.url, api_key="right-key"), cache_dir=cache_dir) as s:
            assert s.prompt(MSGS, max_tokens=2)


@pytest.mark.model
def test_a_server_killed_mid_stream_is_a_backend_error_within_seconds(
    chat_model_path: Path, tmp_path: Path, cache_dir: Path
) -> None:
    log = tmp_path / "killed.log"
    with (
        start_ours(chat_model_path, log, *FLAGS, env=env_without_key()) as sv,
        Session(Options(remote=sv.url), cache_dir=cache_dir) as s,
    ):
        stream = s.prompt_streaming(MSGS, max_tokens=900, sampling=Sampling(ignore_eos=True))
        next(stream)
        sv.kill()
        start = time.monotonic()
        with pytest.raises(BackendError, match=r"dropped the connection|final event"):
            for _ in stream:
                pass
        assert time.monotonic() - start < 5
        with pytest.raises(BackendError):
            s.get_health()


# -- an OpenAI-only server: ours behind a proxy that serves nothing but /v1 ------------------------


class _OpenAIOnly(http.server.BaseHTTPRequestHandler):
    upstream = 0

    def log_message(self, *args: Any) -> None:
        pass

    def _relay(self) -> None:
        if not self.path.startswith("/v1/"):
            body = b'{"error":{"message":"Unknown request URL","type":"invalid_request_error"}}'
            self.send_response(404)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            return
        length = int(self.headers.get("Content-Length") or 0)
        data = self.rfile.read(length) if length else None
        conn = http.client.HTTPConnection("127.0.0.1", self.upstream, timeout=60)
        try:
            headers = {"Content-Type": "application/json"}
            conn.request(self.command, self.path, body=data, headers=headers)
            resp = conn.getresponse()
            self.send_response(resp.status)
            self.send_header("Content-Type", resp.getheader("Content-Type") or "")
            self.end_headers()  # HTTP/1.0: the body ends when the connection closes
            while chunk := resp.read1(65536):
                self.wfile.write(chunk)
                self.wfile.flush()
        finally:
            conn.close()

    do_GET = _relay
    do_POST = _relay


@pytest.fixture(scope="module")
def openai_only(servers: dict[tuple[str, str], Server]) -> Iterator[str]:
    handler = type("Handler", (_OpenAIOnly,), {"upstream": servers["ours", "gemma"].port})
    proxy = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=proxy.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{proxy.server_address[1]}/v1"
    finally:
        proxy.shutdown()
        proxy.server_close()


@pytest.mark.model
def test_an_openai_only_server_gets_the_raw_prompt_through_v1_completions(
    openai_only: str, servers: dict[tuple[str, str], Server], cache_dir: Path
) -> None:
    with Session(Options(remote=servers["ours", "gemma"].url, model=GEMMA_BASE.ref)) as native:
        expected = native.prompt(MSGS, max_tokens=8, temperature=0)
    with Session(Options(remote=openai_only, model=GEMMA_BASE.ref), cache_dir=cache_dir) as s:
        assert s.get_health() == "ok"
        r = s.complete(MSGS, max_tokens=8, temperature=0)
        assert r.text == expected
        assert (r.finish_reason, r.generated.count) == ("length", 8)
        assert "".join(s.prompt_streaming(MSGS, max_tokens=8, temperature=0)).strip() == expected
        with pytest.raises(BackendError, match="only OpenAI"):
            s.count_tokens(MSGS)
    with Session(Options(remote=openai_only), cache_dir=cache_dir) as s:
        assert s.encoding is None  # no model named: the server's own template
        assert s.model.endswith(".gguf")
        assert s.prompt(MSGS, max_tokens=4, temperature=0)


@pytest.mark.model
def test_remote_use_never_imports_llama_cpp(servers: dict[tuple[str, str], Server]) -> None:
    from subproc import run_python

    code = (
        "import sys\n"
        "from llm_inproc import Message, Options, Role, Session\n"
        f"with Session(Options(remote={servers['ours', 'smol'].url!r})) as s:\n"
        "    s.prompt([Message(Role.USER, 'Hi')], max_tokens=2)\n"
        "print(sorted(m for m in ('llama_cpp', 'starlette', 'uvicorn') if m in sys.modules))\n"
    )
    done = run_python(code, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
