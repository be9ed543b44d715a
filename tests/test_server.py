"""Our llama-server drop-in as a real process on SmolLM2 (chat template), spoken to by the
official ``openai`` client and by plain HTTP: replies, streams, usage, errors, metrics."""

from __future__ import annotations

import http.client
import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from llm_inproc import Metrics
from servers import Server, env_without_key, request, sse_data, start_ours

pytestmark = [pytest.mark.model, pytest.mark.timeout(300)]

CHAT = [{"role": "user", "content": "Name one colour."}]


@pytest.fixture(scope="module")
def server(chat_model_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    log = tmp_path_factory.mktemp("server") / "server.log"
    with start_ours(
        chat_model_path,
        log,
        "-c",
        "1024",
        "-np",
        "2",
        "--metrics",
        "--alias",
        "smol",
        env=env_without_key(),
    ) as s:
        yield s


@pytest.fixture(scope="module")
def client(server: Server) -> object:
    import openai

    return openai.OpenAI(base_url=server.url + "/v1", api_key="unused", timeout=60, max_retries=0)


def test_openai_chat_reply_and_usage(client: object) -> None:
    reply = client.chat.completions.create(  # type: ignore[attr-defined]
        model="smol", messages=CHAT, max_tokens=6, temperature=0
    )
    choice = reply.choices[0]
    assert choice.message.role == "assistant" and choice.message.content
    assert choice.finish_reason in ("stop", "length")
    assert reply.model == "smol" and reply.object == "chat.completion"
    u = reply.usage
    assert 0 < u.completion_tokens <= 6 and u.prompt_tokens > 10
    assert u.total_tokens == u.prompt_tokens + u.completion_tokens
    assert u.prompt_tokens_details.cached_tokens is not None
    # The same conversation again: its prompt comes from the KV cache.
    again = client.chat.completions.create(  # type: ignore[attr-defined]
        model="smol", messages=CHAT, max_tokens=6, temperature=0
    )
    assert again.usage.prompt_tokens_details.cached_tokens > 0
    assert again.choices[0].message.content == choice.message.content


def test_openai_legacy_completion_hits_the_token_budget(client: object) -> None:
    out = client.completions.create(  # type: ignore[attr-defined]
        model="smol", prompt="Once upon a time", max_tokens=5, temperature=0
    )
    assert out.object == "text_completion"
    assert out.choices[0].finish_reason == "length" and out.usage.completion_tokens == 5
    assert out.choices[0].text


def test_openai_chat_stream_equals_the_whole_reply_and_reports_usage(client: object) -> None:
    args = {"model": "smol", "messages": CHAT, "max_tokens": 8, "temperature": 0}
    whole = client.chat.completions.create(**args)  # type: ignore[attr-defined]
    chunks = list(
        client.chat.completions.create(  # type: ignore[attr-defined]
            stream=True, stream_options={"include_usage": True}, **args
        )
    )
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == whole.choices[0].message.content
    assert chunks[0].choices[0].delta.role == "assistant"
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices]
    assert finishes[-1] == whole.choices[0].finish_reason
    assert not chunks[-1].choices and chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == whole.usage.completion_tokens
    plain = list(client.chat.completions.create(stream=True, **args))  # type: ignore[attr-defined]
    assert all(c.usage is None for c in plain)
    # As llama-server: the stream's last chunk carries the timings (a page shows tokens/s).
    timings = (plain[-1].model_extra or {}).get("timings")
    assert timings is not None and timings["predicted_n"] == whole.usage.completion_tokens
    assert (chunks[-1].model_extra or {}).get("timings") is not None


def test_openai_legacy_stream_equals_the_whole_reply(client: object) -> None:
    args = {"model": "smol", "prompt": "The sky is", "max_tokens": 6, "temperature": 0}
    whole = client.completions.create(**args)  # type: ignore[attr-defined]
    chunks = list(client.completions.create(stream=True, **args))  # type: ignore[attr-defined]
    assert "".join(c.choices[0].text for c in chunks) == whole.choices[0].text
    assert chunks[-1].choices[0].finish_reason == "length"


def test_native_completion_with_text_token_ids_and_stream(server: Server) -> None:
    body = {"prompt": "Hello, my name is", "n_predict": 6, "temperature": 0}
    whole = request(server.port, "POST", "/completion", body).json()
    assert whole["stop"] is True and whole["stop_type"] == "limit"
    assert whole["tokens_predicted"] == 6 and whole["timings"]["predicted_n"] == 6
    assert whole["model"] == "smol" and whole["prompt"] == "Hello, my name is"
    streamed = request(server.port, "POST", "/completion", {**body, "stream": True})
    assert streamed.headers["content-type"].startswith("text/event-stream")
    events = sse_data(streamed.text)
    assert "".join(str(e["content"]) for e in events) == whole["content"]
    assert events[-1]["stop"] is True and "[DONE]" not in streamed.text
    ids = request(server.port, "POST", "/tokenize", {"content": "Hello, my name is"}).json()
    by_ids = request(server.port, "POST", "/completion", {**body, "prompt": ids["tokens"]})
    assert by_ids.status == 200 and by_ids.json()["content"] == whole["content"]
    alias = request(server.port, "POST", "/completions", body)
    assert alias.status == 200 and alias.json()["content"] == whole["content"]


def test_prompt_objects_and_cache_prompt_false(server: Server) -> None:
    """llama-server's ``{"prompt_string": ...}`` form gives the string's reply; media need a
    multimodal model. ``cache_prompt: false`` evaluates the whole prompt again."""
    body = {"prompt": "The quick brown fox jumps over", "n_predict": 4, "temperature": 0}
    whole = request(server.port, "POST", "/completion", body).json()
    as_object = {**body, "prompt": {"prompt_string": body["prompt"]}}
    again = request(server.port, "POST", "/completion", as_object).json()
    assert again["content"] == whole["content"]
    assert again["timings"]["cache_n"] >= again["tokens_evaluated"] - 1  # found cached
    fresh = request(server.port, "POST", "/completion", {**body, "cache_prompt": False}).json()
    assert fresh["timings"]["cache_n"] == 0
    assert fresh["timings"]["prompt_n"] == fresh["tokens_evaluated"]
    media = {**body, "prompt": {"prompt_string": "x", "multimodal_data": ["aGk="]}}
    refused = request(server.port, "POST", "/completion", media)
    assert refused.status == 400 and "multimodal" in refused.json()["error"]["message"]


def test_stop_strings_end_the_reply(server: Server) -> None:
    body = {"prompt": "1, 2, 3, 4, 5, 6,", "n_predict": 12, "temperature": 0}
    free = request(server.port, "POST", "/completion", body).json()["content"]
    assert " 8" in free, free
    cut = request(server.port, "POST", "/completion", {**body, "stop": [" 8"]}).json()
    assert cut["content"] == free[: free.index(" 8")]
    assert cut["stop_type"] != "limit"


def test_tokenize_detokenize_and_apply_template(server: Server) -> None:
    toks = request(server.port, "POST", "/tokenize", {"content": "Hello world"}).json()["tokens"]
    assert toks and all(isinstance(t, int) for t in toks)
    text = request(server.port, "POST", "/detokenize", {"tokens": toks}).json()["content"]
    assert text == "Hello world"
    pieces = request(
        server.port, "POST", "/tokenize", {"content": "Hello world", "with_pieces": True}
    ).json()["tokens"]
    assert "".join(p["piece"] for p in pieces) == "Hello world"
    prompt = request(server.port, "POST", "/apply-template", {"messages": CHAT}).json()["prompt"]
    assert prompt.endswith("<|im_start|>assistant\n") and "Name one colour." in prompt


def test_a_tool_result_message_is_part_of_the_chat(server: Server) -> None:
    # What the remote client sends for Role.TOOL_CALL_RESULT: OpenAI's "tool" role.
    messages = [*CHAT, {"role": "tool", "content": "weather: sunny, 21 C"}]
    prompt = request(server.port, "POST", "/apply-template", {"messages": messages}).json()
    assert "weather: sunny, 21 C" in prompt["prompt"]
    answer = request(
        server.port, "POST", "/v1/chat/completions", {"messages": messages, "max_tokens": 4}
    )
    assert answer.status == 200, answer.text
    assert answer.json()["usage"]["completion_tokens"] > 0


def test_info_routes(server: Server) -> None:
    models = request(server.port, "GET", "/v1/models").json()
    assert models["object"] == "list" and models["data"][0]["id"] == "smol"
    props = request(server.port, "GET", "/props").json()
    assert props["total_slots"] == 2 and props["default_generation_settings"]["n_ctx"] == 1024
    assert "im_start" in props["chat_template"]
    slots = request(server.port, "GET", "/slots").json()
    assert [s["id"] for s in slots] == [0, 1]
    assert request(server.port, "GET", "/health").json() == {"status": "ok"}


def test_metrics_are_prometheus_text_with_llama_server_names(server: Server) -> None:
    request(server.port, "POST", "/completion", {"prompt": "Hi", "n_predict": 3})
    page = request(server.port, "GET", "/metrics")
    assert page.status == 200 and page.headers["content-type"].startswith("text/plain")
    for name in ("llamacpp:prompt_tokens_total", "llamacpp:tokens_predicted_total"):
        assert f"# HELP {name} " in page.text and f"# TYPE {name} counter" in page.text
    assert "# TYPE llminproc:time_to_first_token_seconds histogram" in page.text
    assert "llminproc:inter_token_latency_seconds_count" in page.text
    m = Metrics.from_prometheus(page.text)
    assert m.generated.count >= 3 and m.prompt.count > 0
    # A prompt twice: found in the cache the second time, counted as cached.
    body = {"prompt": "The quick brown fox jumps over the lazy dog", "n_predict": 3}
    request(server.port, "POST", "/completion", body)
    m = Metrics.from_prometheus(request(server.port, "GET", "/metrics").text)
    request(server.port, "POST", "/completion", body)
    again = Metrics.from_prometheus(request(server.port, "GET", "/metrics").text)
    assert again.prompt_cached_tokens >= m.prompt_cached_tokens + 5
    assert again.decode_calls >= m.decode_calls + 3
    assert again.busy_slots_per_decode >= 1.0
    assert again.max_sequence_tokens >= 4


@pytest.mark.parametrize(
    ("method", "path", "raw", "status", "kind"),
    [
        ("POST", "/completion", b"{not json", 400, "invalid_request_error"),
        ("POST", "/v1/chat/completions", b"[1, 2]", 400, "invalid_request_error"),
        ("POST", "/completion", b'{"n_predict": 3}', 400, "invalid_request_error"),
        ("POST", "/completion", b'{"prompt": "x", "n_predict": "3"}', 400, "invalid_request_error"),
        (
            "POST",
            "/completion",
            b'{"prompt": "x", "temperature": true}',
            400,
            "invalid_request_error",
        ),
        ("POST", "/v1/chat/completions", b'{"messages": "hi"}', 400, "invalid_request_error"),
        (
            "POST",
            "/v1/chat/completions",
            b'{"messages": [{"role": "bot", "content": "x"}]}',
            400,
            "invalid_request_error",
        ),
        ("POST", "/completion", b'{"prompt": [1, 99999999]}', 400, "invalid_request_error"),
        ("GET", "/no/such/route", None, 404, "not_found_error"),
        ("GET", "/completion", None, 404, "not_found_error"),
    ],
)
def test_bad_requests_get_llama_server_error_shapes(
    server: Server, method: str, path: str, raw: bytes | None, status: int, kind: str
) -> None:
    answer = request(server.port, method, path, raw=raw)
    assert answer.status == status, answer.text
    error = answer.json()["error"]
    assert error["code"] == status and error["type"] == kind and error["message"]


def test_a_prompt_past_the_context_names_its_size(server: Server) -> None:
    answer = request(server.port, "POST", "/completion", {"prompt": "hello " * 1500})
    assert answer.status == 400
    error = answer.json()["error"]
    assert error["type"] == "exceed_context_size_error"
    assert error["n_ctx"] == 1024 and error["n_prompt_tokens"] > 1024


def test_cors_preflight_and_origin(server: Server) -> None:
    pre = request(
        server.port,
        "OPTIONS",
        "/v1/chat/completions",
        headers={"Origin": "http://app.example", "Access-Control-Request-Method": "POST"},
    )
    assert pre.status == 200
    assert pre.headers["access-control-allow-origin"] == "http://app.example"
    assert "POST" in pre.headers["access-control-allow-methods"]
    got = request(server.port, "GET", "/health", headers={"Origin": "http://app.example"})
    assert got.headers["access-control-allow-origin"] == "http://app.example"


def _processing(server: Server) -> int:
    page = request(server.port, "GET", "/metrics").text
    return Metrics.from_prometheus(page).requests_processing


def test_a_client_that_disconnects_mid_stream_frees_its_slot(server: Server) -> None:
    before = Metrics.from_prometheus(request(server.port, "GET", "/metrics").text)
    body = {"prompt": "Count: 1, 2, 3,", "n_predict": 900, "ignore_eos": True, "stream": True}
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    conn.request("POST", "/completion", json.dumps(body), {"Content-Type": "application/json"})
    resp = conn.getresponse()
    assert resp.status == 200
    assert resp.read1(64).startswith(b"data: ")  # generation is under way
    conn.sock.close()  # the client goes away mid-stream
    conn.close()
    deadline = time.monotonic() + 20
    while _processing(server) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _processing(server) == 0
    after = Metrics.from_prometheus(request(server.port, "GET", "/metrics").text)
    assert after.generated.count - before.generated.count < 900
    nxt = request(server.port, "POST", "/completion", {"prompt": "Hi", "n_predict": 2}, timeout=30)
    assert nxt.status == 200 and nxt.json()["tokens_predicted"] == 2
