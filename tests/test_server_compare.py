"""The same requests to our server and to the real llama-server (built from the llama.cpp
sources llama-cpp-python vendors), on the same model: same status codes, same fields,
and, greedy, the same text."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from servers import (
    Answer,
    Server,
    both,
    env_without_key,
    sse_data,
    start_llama_server,
    start_ours,
)

pytestmark = [pytest.mark.model, pytest.mark.timeout(300)]

FLAGS = ("-c", "1024", "-np", "1", "-t", "1", "--metrics", "--alias", "smol")
CHAT = [{"role": "user", "content": "Name one colour."}]


@pytest.fixture(scope="module")
def theirs(
    llama_server_binary: Path,
    repack_flags: list[str],
    chat_model_path: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Server]:
    log = tmp_path_factory.mktemp("llama-server") / "server.log"
    # Our engine evaluates without flash attention (bit-exact replies across batches);
    # llama-server must too (start_llama_server's -fa off), or greedy replies differ.
    flags = [*FLAGS, *repack_flags]
    with start_llama_server(llama_server_binary, chat_model_path, log, *flags) as s:
        yield s


@pytest.fixture(scope="module")
def ours(chat_model_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    log = tmp_path_factory.mktemp("ours") / "server.log"
    with start_ours(chat_model_path, log, *FLAGS[:4], *FLAGS[6:], env=env_without_key()) as s:
        yield s


def _both(ours: Server, theirs: Server, method: str, path: str, **kw: Any) -> tuple[Answer, Answer]:
    return both(ours, theirs, method, path, **kw)


def _missing(ours: Any, theirs: Any, where: str = "") -> list[str]:
    """Fields llama-server sends that we do not, recursively through objects."""
    if not isinstance(theirs, dict) or not isinstance(ours, dict):
        return []
    out = [f"{where}{k}" for k in theirs if k not in ours]
    for k in theirs.keys() & ours.keys():
        out += _missing(ours[k], theirs[k], f"{where}{k}.")
        if isinstance(theirs[k], list) and isinstance(ours[k], list) and theirs[k] and ours[k]:
            out += _missing(ours[k][0], theirs[k][0], f"{where}{k}[0].")
    return out


GREEDY = {"temperature": 0, "seed": 1}
SAME_FIELDS = [
    ("/completion", {"prompt": "Hello, my name is", "n_predict": 6, **GREEDY}),
    ("/v1/completions", {"prompt": "Hello, my name is", "max_tokens": 6, **GREEDY}),
    ("/v1/chat/completions", {"messages": CHAT, "max_tokens": 6, **GREEDY}),
    (
        "/v1/chat/completions",
        {
            "messages": [*CHAT, {"role": "assistant", "content": "My favourite colour is"}],
            "continue_final_message": True,
            "add_generation_prompt": False,
            "max_tokens": 6,
            **GREEDY,
        },
    ),
]
# Fields we do not have an honest value for (per-token internals, llama.cpp build options).
NOT_OURS = {
    "generation_settings.adaptive_target",
    "generation_settings.adaptive_decay",
    "generation_settings.dynatemp_range",
    "generation_settings.dynatemp_exponent",
    "generation_settings.mirostat",
    "generation_settings.mirostat_tau",
    "generation_settings.mirostat_eta",
    "generation_settings.n_keep",
    "generation_settings.n_discard",
    "generation_settings.min_keep",
    "generation_settings.grammar_lazy",
    "generation_settings.grammar_triggers",
    "generation_settings.preserved_tokens",
    "generation_settings.chat_format",
    "generation_settings.reasoning_format",
    "generation_settings.reasoning_in_content",
    "generation_settings.generation_prompt",
    "generation_settings.samplers",
    "generation_settings.speculative.types",
    "generation_settings.timings_per_token",
    "generation_settings.post_sampling_probs",
    "generation_settings.backend_sampling",
    "generation_settings.lora",
}


@pytest.mark.parametrize(("path", "body"), SAME_FIELDS)
def test_generation_has_the_same_fields_and_greedy_text(
    ours: Server, theirs: Server, path: str, body: dict[str, Any]
) -> None:
    a, b = _both(ours, theirs, "POST", path, body=body)
    assert a.status == b.status == 200
    assert set(_missing(a.json(), b.json())) <= NOT_OURS
    text = {
        "/completion": lambda j: j["content"],
        "/v1/completions": lambda j: j["choices"][0]["text"],
        "/v1/chat/completions": lambda j: j["choices"][0]["message"]["content"],
    }[path]
    assert text(a.json()) == text(b.json())
    for field in ("usage", "timings"):
        if field in b.json():
            assert a.json()[field].keys() == b.json()[field].keys()


@pytest.mark.parametrize(("path", "body"), SAME_FIELDS)
def test_streams_have_the_same_fields_and_text(
    ours: Server, theirs: Server, path: str, body: dict[str, Any]
) -> None:
    extra = {"stream_options": {"include_usage": True}} if "chat" in path else {}
    a, b = _both(ours, theirs, "POST", path, body={**body, "stream": True, **extra})
    assert a.status == b.status == 200
    assert a.headers["content-type"].startswith("text/event-stream")
    ea, eb = sse_data(a.text), sse_data(b.text)
    assert ("data: [DONE]" in a.text) == ("data: [DONE]" in b.text)
    assert set(_missing(ea[0], eb[0])) <= NOT_OURS
    assert set(_missing(ea[-1], eb[-1])) <= NOT_OURS

    def text(events: list[dict[str, Any]]) -> str:
        if path == "/completion":
            return "".join(e["content"] for e in events)
        key = "text" if path == "/v1/completions" else "delta"
        parts = [c[key] for e in events for c in e["choices"]]
        return "".join(p if isinstance(p, str) else p.get("content") or "" for p in parts)

    assert text(ea) == text(eb)


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("GET", "/health", None),
        ("GET", "/nope", None),
        ("GET", "/completion", None),
        ("POST", "/completion", {"n_predict": 3}),
        ("POST", "/completion", {"prompt": "x", "n_predict": "3"}),
        ("POST", "/v1/chat/completions", {"messages": "hi"}),
        ("POST", "/v1/chat/completions", {"messages": [{"role": "user"}]}),
        ("POST", "/v1/completions", {"prompt": "hello " * 1200, "max_tokens": 2}),
        ("POST", "/tokenize", {"content": "Hello world", "with_pieces": True}),
        ("POST", "/detokenize", {"tokens": [19556, 905]}),
        ("POST", "/apply-template", {"messages": CHAT}),
        ("GET", "/v1/models", None),
        ("GET", "/props", None),
        ("GET", "/slots", None),
        ("POST", "/props", {}),
        # A last assistant message is continued (a prefill), as llama-server does.
        ("POST", "/apply-template", {"messages": [*CHAT, {"role": "assistant", "content": "Re"}]}),
        ("POST", "/v1/chat/completions", {"messages": CHAT, "continue_final_message": True}),
        (
            "POST",
            "/v1/chat/completions",
            {
                "messages": [
                    *CHAT,
                    {"role": "assistant", "content": "A"},
                    {"role": "assistant", "content": "B"},
                ]
            },
        ),
    ],
)
def test_same_status_and_error_shape(
    ours: Server, theirs: Server, method: str, path: str, body: Any
) -> None:
    a, b = _both(ours, theirs, method, path, body=body)
    assert a.status == b.status, (a.text, b.text)
    ja, jb = a.json(), b.json()
    if "error" in jb:
        assert ja["error"].keys() == jb["error"].keys()
        assert ja["error"]["type"] == jb["error"]["type"]
        assert ja["error"]["code"] == jb["error"]["code"]
    elif path in ("/tokenize", "/detokenize", "/apply-template", "/health"):
        assert ja == jb


def test_metrics_pages_share_the_llama_server_names(ours: Server, theirs: Server) -> None:
    a, b = _both(ours, theirs, "GET", "/metrics")
    assert a.status == b.status == 200
    names = {
        "llamacpp:prompt_tokens_total",
        "llamacpp:prompt_seconds_total",
        "llamacpp:tokens_predicted_total",
        "llamacpp:tokens_predicted_seconds_total",
        "llamacpp:requests_processing",
        "llamacpp:requests_deferred",
        "llamacpp:prompt_tokens_seconds",
        "llamacpp:predicted_tokens_seconds",
        "llamacpp:prompt_tokens_cached_total",
        "llamacpp:n_decode_total",
        "llamacpp:n_tokens_max",
        "llamacpp:n_busy_slots_per_decode",
        "llamacpp:spec_decode_num_draft_tokens_total",
        "llamacpp:spec_decode_num_accepted_tokens_total",
        "llamacpp:spec_decode_num_drafts_total",
    }
    for name in names:
        assert f"# TYPE {name} " in b.text and f"# TYPE {name} " in a.text, name


def test_malformed_json_is_400_where_llama_server_says_500(ours: Server, theirs: Server) -> None:
    a, b = _both(ours, theirs, "POST", "/completion", raw=b"{not json")
    assert (a.status, b.status) == (400, 500)
    assert a.json()["error"]["type"] == "invalid_request_error"


def _entries(path: str, body: Any) -> list[dict[str, Any]]:
    if path == "/completion":
        return list(body.get("completion_probabilities", []))
    choice = body["choices"][0] if body.get("choices") else {}
    return list((choice.get("logprobs") or {}).get("content") or [])


PROBS = [
    ("/completion", {"prompt": "Hello, my name is", "n_predict": 6, "n_probs": 3, **GREEDY}),
    ("/v1/completions", {"prompt": "Hello, my name is", "max_tokens": 6, "logprobs": 3, **GREEDY}),
    (
        "/v1/chat/completions",
        {"messages": CHAT, "max_tokens": 6, "logprobs": True, "top_logprobs": 3, **GREEDY},
    ),
]


@pytest.mark.parametrize(("path", "body"), PROBS)
def test_token_probabilities_have_the_same_shape_and_tokens(
    ours: Server, theirs: Server, path: str, body: dict[str, Any]
) -> None:
    a, b = _both(ours, theirs, "POST", path, body=body)
    assert a.status == b.status == 200
    assert set(_missing(a.json(), b.json())) <= NOT_OURS
    ea, eb = _entries(path, a.json()), _entries(path, b.json())
    assert len(ea) == len(eb) == 6
    for x, y in zip(ea, eb, strict=True):
        assert x.keys() == y.keys() and x["id"] == y["id"] and x["token"] == y["token"]
        assert x["bytes"] == y["bytes"] and abs(x["logprob"] - y["logprob"]) < 0.05
        assert len(x["top_logprobs"]) == len(y["top_logprobs"]) == 3
        assert [t.keys() for t in x["top_logprobs"]] == [t.keys() for t in y["top_logprobs"]]
        assert x["top_logprobs"][0]["id"] == y["top_logprobs"][0]["id"]
    # Streamed: the same entries (ours come in one event before the last, theirs one per event).
    sa, sb = _both(ours, theirs, "POST", path, body={**body, "stream": True})
    flat_a = [e for ev in sse_data(sa.text) for e in _entries(path, ev)]
    flat_b = [e for ev in sse_data(sb.text) for e in _entries(path, ev)]
    assert [e["id"] for e in flat_a] == [e["id"] for e in flat_b]
    assert [e.keys() for e in flat_a] == [e.keys() for e in flat_b]


def test_a_stop_string_ends_the_reply_the_same_way(ours: Server, theirs: Server) -> None:
    body = {"prompt": "Count: 1, 2, 3,", "n_predict": 20, "stop": ["6, 7"], **GREEDY}
    a, b = _both(ours, theirs, "POST", "/completion", body=body)
    ja, jb = a.json(), b.json()
    assert (ja["content"], ja["stop_type"], ja["stopping_word"]) == (
        jb["content"],
        jb["stop_type"],
        jb["stopping_word"],
    )
    assert jb["stop_type"] == "word"


def test_structured_output_and_bad_grammars_alike(ours: Server, theirs: Server) -> None:
    import json

    schema = {
        "type": "object",
        "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
        "required": ["name", "age"],
    }
    fmt = {"type": "json_schema", "json_schema": {"name": "p", "schema": schema}}
    body = {"messages": CHAT, "max_tokens": 60, "response_format": fmt, **GREEDY}
    a, b = _both(ours, theirs, "POST", "/v1/chat/completions", body=body)
    assert a.status == b.status == 200
    for answer in (a, b):
        doc = json.loads(answer.json()["choices"][0]["message"]["content"])
        assert set(doc) == {"name", "age"} and isinstance(doc["age"], int)
    bad = {"prompt": "x", "n_predict": 2, "grammar": "root ::= undefined_rule"}
    a, b = _both(ours, theirs, "POST", "/completion", body=bad)
    assert a.status == b.status == 400
    assert a.json()["error"]["type"] == b.json()["error"]["type"] == "invalid_request_error"
    a, b = _both(ours, theirs, "POST", "/v1/chat/completions", body={"messages": CHAT, "n": 2})
    assert a.status == b.status == 400  # n beyond the parallel slots (-np 1)


# What a slot shows that we keep no copy of: the prompt and reply as text.
SLOT_TEXT = {"prompt", "generated"}


def test_slots_and_models_have_llama_servers_fields(ours: Server, theirs: Server) -> None:
    """After a request, each server's slot shows its task in the same fields, and
    ``/v1/models`` describes the model with the same keys."""
    body = {"prompt": "Hello, my name is", "n_predict": 3, **GREEDY}
    _both(ours, theirs, "POST", "/completion", body=body)
    a, b = _both(ours, theirs, "GET", "/slots")
    slot_a, slot_b = a.json()[0], b.json()[0]
    assert set(_missing(slot_a, slot_b)) - SLOT_TEXT <= {f"params.{k}" for k in _PARAM_ONLY}
    assert slot_a["is_processing"] is slot_b["is_processing"] is False
    assert slot_a["n_prompt_tokens"] == slot_b["n_prompt_tokens"]
    # llama-server resets n_decoded when the slot is released; ours keeps the last reply's.
    assert slot_a["next_token"][0]["n_decoded"] == 3
    assert slot_a["id_task"] >= 0 and slot_b["id_task"] >= 0
    ma, mb = _both(ours, theirs, "GET", "/v1/models")
    assert set(_missing(ma.json()["data"][0], mb.json()["data"][0])) <= {
        f"meta.{k}" for k in ("vocab_type", "n_vocab", "n_embd", "n_params", "size", "ftype")
    }


# Sampler fields of llama-server's params we have no honest value for.
_PARAM_ONLY = {k.split(".", 1)[1] for k in NOT_OURS} | {"speculative.types"}
