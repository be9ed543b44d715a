"""Sampling controls and structured output over HTTP: our server as a real process on
SmolLM2, spoken to by the official ``openai`` client and by plain HTTP (llama-server's
fields): JSON Schema and JSON mode, grammars, logit bias, token probabilities in both
shapes, ``n`` choices, stop strings, seeds, several prompts, and bad grammars."""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from servers import Server, env_without_key, request, sse_data, start_ours
from test_sampling import SCHEMA  # the same bounded person, over HTTP

pytestmark = [pytest.mark.model, pytest.mark.timeout(300)]

COUNT = "Count: 1, 2, 3,"
HI = [{"role": "user", "content": "Say hello."}]


@pytest.fixture(scope="module")
def server(chat_model_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    log = tmp_path_factory.mktemp("server-sampling") / "server.log"
    with start_ours(chat_model_path, log, "-c", "2048", "-np", "3", env=env_without_key()) as s:
        yield s


@pytest.fixture(scope="module")
def client(server: Server) -> Any:
    import openai

    return openai.OpenAI(base_url=server.url + "/v1", api_key="unused", timeout=120, max_retries=0)


def _post(server: Server, path: str, body: dict[str, Any]) -> Any:
    answer = request(server.port, "POST", path, body=body, timeout=120)
    assert answer.status == 200, answer.text
    return answer.json()


def _events(server: Server, path: str, body: dict[str, Any]) -> list[dict[str, Any]]:
    answer = request(server.port, "POST", path, body={**body, "stream": True}, timeout=120)
    assert answer.status == 200, answer.text
    return sse_data(answer.text)


def _check_person(text: str) -> None:
    doc = json.loads(text)
    assert set(doc) == {"name", "age", "color", "address"}
    assert isinstance(doc["name"], str)
    assert isinstance(doc["age"], int) and not isinstance(doc["age"], bool)
    assert doc["color"] in ("red", "green", "blue")
    assert isinstance(doc["address"]["city"], str)
    assert isinstance(doc["address"]["zip"], int) and not isinstance(doc["address"]["zip"], bool)


# --- structured output --------------------------------------------------------------------


def test_openai_json_schema_replies_are_valid_for_the_schema_at_temperature_one(
    client: Any,
) -> None:
    fmt = {"type": "json_schema", "json_schema": {"name": "person", "schema": SCHEMA}}
    texts = []
    for seed in (1, 2):  # three choices each, generated at once: six documents
        reply = client.chat.completions.create(
            model="smol",
            messages=[{"role": "user", "content": "Describe a person as JSON."}],
            response_format=fmt,
            temperature=1.0,
            seed=seed,
            max_tokens=200,
            n=3,
        )
        assert len(reply.choices) == 3
        for choice in reply.choices:
            assert choice.finish_reason == "stop", choice.message.content
            texts.append(choice.message.content)
    for text in texts:
        _check_person(text)
    assert len(set(texts)) > 1  # really sampled


def test_json_schema_field_and_json_object_mode(server: Server, client: Any) -> None:
    native = _post(
        server,
        "/completion",
        {
            "prompt": "A person as JSON:",
            "json_schema": SCHEMA,
            "n_predict": 200,
            "temperature": 1,
            "seed": 7,
        },
    )
    assert native["stop_type"] == "eos"
    _check_person(native["content"])
    # Any JSON object (a small model can loop inside one greedily: keep the question simple).
    for prompt in ("Give a JSON object with a name and an age.",):
        reply = client.chat.completions.create(
            model="smol",
            messages=[{"role": "user", "content": prompt}],
            response_format={"type": "json_object"},
            temperature=0,
            max_tokens=200,
        )
        text = reply.choices[0].message.content
        assert reply.choices[0].finish_reason == "stop", (prompt, text)
        assert isinstance(json.loads(reply.choices[0].message.content), dict)


def test_a_grammar_restricts_the_reply(server: Server, client: Any) -> None:
    grammar = 'root ::= "yes" | "no"'
    for seed in (1, 2, 3):
        out = _post(
            server,
            "/completion",
            {"prompt": "Is the sky green? Answer:", "grammar": grammar, "seed": seed},
        )
        assert out["content"] in ("yes", "no")
    reply = client.chat.completions.create(
        model="smol",
        messages=[{"role": "user", "content": "Is the sky green?"}],
        extra_body={"grammar": grammar},
        seed=4,
    )
    assert reply.choices[0].message.content in ("yes", "no")


def test_invalid_grammar_or_schema_is_a_400_and_the_server_goes_on(
    server: Server, client: Any
) -> None:
    bad = [
        ("/completion", {"prompt": "x", "grammar": "root ::= undefined_rule"}, "undefined_rule"),
        ("/completion", {"prompt": "x", "grammar": "root ::= ("}, "grammar"),
        ("/completion", {"prompt": "x", "json_schema": {"type": "nonsense"}}, "json_schema"),
        ("/completion", {"prompt": "x", "grammar": "root ::= x", "json_schema": {}}, "both"),
        (
            "/v1/chat/completions",
            {"messages": HI, "response_format": {"type": "xml"}},
            "response_format",
        ),
        ("/v1/chat/completions", {"messages": HI, "top_logprobs": 2}, "requires logprobs"),
        ("/completion", {"prompt": "x", "logit_bias": "ban"}, "logit_bias"),
        ("/completion", {"prompt": "x", "logit_bias": [[10**9, -1]]}, "logit_bias"),
        ("/v1/chat/completions", {"messages": HI, "n": 9}, "'n'"),
    ]
    for path, body, words in bad:
        answer = request(server.port, "POST", path, body=body)
        assert answer.status == 400, (body, answer.text)
        error = answer.json()["error"]
        assert error["type"] == "invalid_request_error" and error["code"] == 400
        assert words in error["message"], error["message"]
    streamed = request(server.port, "POST", "/completion", body={**bad[0][1], "stream": True})
    assert streamed.status == 400 and "undefined_rule" in streamed.text
    reply = client.chat.completions.create(model="smol", messages=HI, max_tokens=4, temperature=0)
    assert reply.choices[0].message.content
    assert request(server.port, "GET", "/health").json() == {"status": "ok"}


# --- logit bias -----------------------------------------------------------------------------


def test_logit_bias_bans_a_word_in_all_its_forms(server: Server, client: Any) -> None:
    plain = client.chat.completions.create(model="smol", messages=HI, max_tokens=8, temperature=0)
    assert "Hello" in plain.choices[0].message.content
    hello = _post(server, "/tokenize", {"content": "Hello"})["tokens"]
    assert len(hello) == 1
    forms: list[Any] = [
        [["Hello", False]],
        [[hello[0], False]],
        [["Hello", -1e30]],
        {str(hello[0]): -100},
        {"Hello": False},
    ]
    for bias in forms:
        out = _post(
            server,
            "/v1/chat/completions",
            {"messages": HI, "max_tokens": 8, "temperature": 0, "logit_bias": bias},
        )
        text = out["choices"][0]["message"]["content"]
        assert text and not text.startswith("Hello"), (bias, text)
        assert "Hello" not in text, (bias, text)
    # The official client's form: token ids as strings.
    banned = client.chat.completions.create(
        model="smol", messages=HI, max_tokens=8, temperature=0, logit_bias={str(hello[0]): -100}
    )
    assert "Hello" not in banned.choices[0].message.content


# --- token probabilities --------------------------------------------------------------------


def _check_entry(e: dict[str, Any], n_top: int, greedy: bool = True) -> None:
    assert set(e) == {"id", "token", "bytes", "logprob", "top_logprobs"}
    assert isinstance(e["id"], int) and e["bytes"] == list(e["token"].encode())
    assert e["logprob"] <= 0
    top = e["top_logprobs"]
    assert len(top) == n_top
    assert all(set(t) == {"id", "token", "bytes", "logprob"} for t in top)
    lps = [t["logprob"] for t in top]
    assert lps == sorted(lps, reverse=True) and all(lp <= 0 for lp in lps)
    assert sum(math.exp(lp) for lp in lps) <= 1 + 1e-6
    if greedy:  # the chosen token is the most likely one
        assert top[0]["id"] == e["id"] and math.isclose(top[0]["logprob"], e["logprob"])
    else:
        assert e["logprob"] <= lps[0] + 1e-9


def test_n_probs_in_llama_servers_shape_match_the_chosen_tokens(server: Server) -> None:
    body = {"prompt": COUNT, "n_predict": 10, "temperature": 0, "n_probs": 3}
    out = _post(server, "/completion", body)
    probs = out["completion_probabilities"]
    assert len(probs) == out["tokens_predicted"] == 10
    for e in probs:
        _check_entry(e, 3)
    assert "".join(e["token"] for e in probs) == out["content"]
    events = _events(server, "/completion", body)
    streamed = [e for ev in events for e in ev.get("completion_probabilities", [])]
    # Same tokens (the second request's prompt comes from the cache: the last bits of the
    # logits may differ with the batch shape).
    assert [e["id"] for e in streamed] == [e["id"] for e in probs]
    for e in streamed:
        _check_entry(e, 3)
    assert "".join(ev["content"] for ev in events) == out["content"]
    # Sampled at temperature 1: the chosen token is any of the likely ones.
    hot = _post(server, "/completion", {**body, "temperature": 1, "seed": 3})
    for e in hot["completion_probabilities"]:
        _check_entry(e, 3, greedy=False)


def test_top_logprobs_in_openais_shape_match_the_chosen_tokens(client: Any) -> None:
    reply = client.chat.completions.create(
        model="smol", messages=HI, max_tokens=8, temperature=0, logprobs=True, top_logprobs=2
    )
    content = reply.choices[0].logprobs.content
    assert len(content) == reply.usage.completion_tokens == 8
    assert "".join(t.token for t in content) == reply.choices[0].message.content
    for t in content:
        assert -50 < t.logprob <= 0 and len(t.top_logprobs) == 2
        assert t.top_logprobs[0].token == t.token and t.bytes == list(t.token.encode())
    chunks = list(
        client.chat.completions.create(
            model="smol",
            messages=HI,
            max_tokens=8,
            temperature=0,
            logprobs=True,
            top_logprobs=2,
            stream=True,
        )
    )
    streamed = [t for c in chunks for ch in c.choices if ch.logprobs for t in ch.logprobs.content]
    assert [t.token for t in streamed] == [t.token for t in content]
    only = client.chat.completions.create(
        model="smol", messages=HI, max_tokens=4, temperature=0, logprobs=True, top_logprobs=0
    )
    assert [t.top_logprobs for t in only.choices[0].logprobs.content] == [[]] * 4
    legacy = client.completions.create(
        model="smol", prompt=COUNT, max_tokens=6, temperature=0, logprobs=2
    )
    lp = legacy.choices[0].logprobs
    assert "".join(lp.tokens) == legacy.choices[0].text
    assert len(lp.token_logprobs) == len(lp.top_logprobs) == len(lp.text_offset) == 6
    assert all(len(top) == 2 and max(top.values()) <= 0 for top in lp.top_logprobs)
    assert lp.text_offset[0] == 0 and lp.text_offset == sorted(lp.text_offset)


# --- choices, prompts, seeds ------------------------------------------------------------------


def test_n_choices_are_generated_at_once(server: Server, client: Any) -> None:
    reply = client.chat.completions.create(
        model="smol", messages=HI, max_tokens=6, temperature=1, seed=5, n=3
    )
    assert [c.index for c in reply.choices] == [0, 1, 2]
    texts = [c.message.content for c in reply.choices]
    assert all(texts) and len(set(texts)) > 1
    assert 3 <= reply.usage.completion_tokens <= 18  # all three choices' tokens
    stream = client.chat.completions.create(
        model="smol", messages=HI, max_tokens=6, temperature=1, seed=5, n=3, stream=True
    )
    parts: dict[int, str] = {0: "", 1: "", 2: ""}
    finished = set()
    for chunk in stream:
        for ch in chunk.choices:
            parts[ch.index] += ch.delta.content or ""
            if ch.finish_reason:
                finished.add(ch.index)
    assert finished == {0, 1, 2}
    # Not the same texts bit for bit: requests sharing a batch change the last bits of
    # each other's logits, so a seeded choice repeats only when the batches do.
    assert all(parts[i].strip() for i in range(3))
    legacy = client.completions.create(model="smol", prompt=COUNT, max_tokens=4, n=2, seed=9)
    assert [c.index for c in legacy.choices] == [0, 1]


def test_several_prompts_give_one_result_each(server: Server) -> None:
    prompts = [COUNT, "The capital of France is"]
    alone = [
        _post(server, "/completion", {"prompt": p, "n_predict": 5, "temperature": 0})["content"]
        for p in prompts
    ]
    both = _post(server, "/completion", {"prompt": prompts, "n_predict": 5, "temperature": 0})
    assert isinstance(both, list) and [r["index"] for r in both] == [0, 1]
    assert [r["content"] for r in both] == alone
    assert [r["prompt"] for r in both] == prompts
    legacy = _post(
        server, "/v1/completions", {"prompt": prompts, "max_tokens": 5, "temperature": 0}
    )
    assert [c["text"] for c in legacy["choices"]] == alone
    events = _events(server, "/completion", {"prompt": prompts, "n_predict": 5, "temperature": 0})
    texts = ["".join(e["content"] for e in events if e["index"] == i) for i in (0, 1)]
    assert texts == alone


def test_seed_zero_is_repeatable_and_no_seed_is_random(server: Server) -> None:
    body = {"prompt": "Once upon a time", "n_predict": 16, "temperature": 1}
    # The prompt in the cache (one token is enough to keep it): the same logits for each.
    _post(server, "/completion", {**body, "seed": 0, "n_predict": 1})
    zero = [_post(server, "/completion", {**body, "seed": 0})["content"] for _ in range(2)]
    assert zero[0] == zero[1]
    fixed = _post(server, "/completion", {**body, "seed": 12345})["content"]
    assert fixed == _post(server, "/completion", {**body, "seed": 12345})["content"]
    free = {_post(server, "/completion", {**body, "seed": s})["content"] for s in (-1, None, -1)}
    assert len(free) > 1


# --- stop strings ---------------------------------------------------------------------------


def test_stop_strings_never_leak_and_stop_type_is_word(server: Server, client: Any) -> None:
    full = _post(server, "/completion", {"prompt": COUNT, "n_predict": 20, "temperature": 0})
    assert "6, 7" in full["content"] and full["stop_type"] == "limit"
    expected = full["content"][: full["content"].index("6, 7")]
    body = {"prompt": COUNT, "n_predict": 20, "temperature": 0, "stop": ["nope", "6, 7"]}
    out = _post(server, "/completion", body)
    assert out["content"] == expected
    assert (out["stop_type"], out["stopping_word"]) == ("word", "6, 7")
    events = _events(server, "/completion", body)
    assert "".join(e["content"] for e in events) == expected
    assert (events[-1]["stop_type"], events[-1]["stopping_word"]) == ("word", "6, 7")
    probs = _post(server, "/completion", {**body, "n_probs": 1})["completion_probabilities"]
    assert "".join(e["token"] for e in probs).startswith(expected)
    assert "7" not in "".join(e["token"] for e in probs)[len(expected) :]
    # The OpenAI routes, whole and streamed.
    args = {"model": "smol", "prompt": COUNT, "max_tokens": 20, "temperature": 0, "stop": "6, 7"}
    legacy = client.completions.create(**args)
    assert legacy.choices[0].text == expected and legacy.choices[0].finish_reason == "stop"
    pieces = [c.choices[0].text for c in client.completions.create(**args, stream=True)]
    assert "".join(pieces) == expected
