"""Sampling controls and structured output on the real instruct model (SmolLM2)."""

from __future__ import annotations

import asyncio
import io
import json
import math
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from llm_inproc import (
    InvalidInputError,
    Message,
    Options,
    Reply,
    Role,
    Sampling,
    Session,
    load_config,
)

APPLE = [Message(Role.USER, "Repeat the word apple ten times: apple apple apple")]
COUNT = [Message(Role.USER, "Count from 1 to 10: 1, 2, 3,")]

# Strings are bounded: at temperature 1 an unbounded string can run past any token budget
# (CI saw a city name repeat to the limit), and a reply cut short is not whole JSON.
SCHEMA = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": 40},
        "age": {"type": "integer"},
        "color": {"enum": ["red", "green", "blue"]},
        "address": {
            "type": "object",
            "properties": {
                "city": {"type": "string", "maxLength": 40},
                "zip": {"type": "integer"},
            },
            "required": ["city", "zip"],
        },
    },
    "required": ["name", "age", "color", "address"],
}


# --- the value itself (no model) --------------------------------------------------------


def test_defaults_are_llama_servers() -> None:
    s = Sampling()
    assert (s.top_k, s.top_p, s.min_p, s.typical_p) == (40, 0.95, 0.05, 1.0)
    assert (s.repeat_penalty, s.repeat_last_n) == (1.0, 64)
    assert (s.presence_penalty, s.frequency_penalty, s.dry_multiplier) == (0.0, 0.0, 0.0)
    assert s.stop == () and dict(s.logit_bias) == {} and s.n_probs == 0


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"top_k": -1}, "top_k"),
        ({"top_p": 1.5}, "top_p"),
        ({"min_p": math.nan}, "min_p"),
        ({"repeat_penalty": 0}, "repeat_penalty"),
        ({"n_probs": 1000}, "n_probs"),
        ({"stop": [""]}, "stop"),
        ({"logit_bias": {-1: 1.0}}, "logit_bias key -1"),
        ({"logit_bias": {"x": "high"}}, "must be a number"),
        ({"grammar": "root ::= x", "json_schema": {}}, "not both"),
        ({"temperature": math.inf}, "temperature"),
        ({"ignore_eos": "yes"}, "ignore_eos"),
    ],
)
def test_bad_values_are_refused(kwargs: dict[str, object], match: str) -> None:
    with pytest.raises(InvalidInputError, match=match):
        Sampling(**kwargs)  # type: ignore[arg-type]


def test_a_single_stop_string_and_yaml_lists() -> None:
    assert Sampling(stop="END").stop == ("END",)  # type: ignore[arg-type]
    assert Sampling(stop=["a", "b"]).stop == ("a", "b")  # type: ignore[arg-type]


def test_options_sampling_from_yaml_and_back() -> None:
    cfg = load_config(
        io.StringIO('llm:\n  sampling:\n    top_k: 20\n    stop: ["\\n\\n"]\n    min_p: 0.1\n')
    )
    assert cfg.options.sampling == Sampling(top_k=20, stop=("\n\n",), min_p=0.1)
    assert cfg.options.to_dict()["sampling"] == {"top_k": 20, "min_p": 0.1, "stop": ["\n\n"]}
    with pytest.raises(InvalidInputError, match=r"llm\.sampling: unknown key 'topk'"):
        load_config(io.StringIO("llm:\n  sampling:\n    topk: 20\n"))


# --- on the model -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def batch_session(cache_dir: Path, chat_model_path: Path) -> Iterator[Session]:
    """The instruct model in a session of its own, for requests generated together: a
    prefix evaluated in a shared batch differs in its last bits from one evaluated alone,
    and the suite's ``chat_session`` keeps its cached prefixes one-request-at-a-time."""
    options = Options(model=str(chat_model_path), context_length=4096, parallel=6)
    with Session(options, cache_dir=cache_dir) as s:
        yield s


@pytest.mark.model
def test_json_schema_gives_valid_json_six_times_at_temperature_one(
    batch_session: Session,
) -> None:
    # All six at once, one slot each (each reply is checked against the schema only).
    async def six() -> list[Reply]:
        return await asyncio.gather(
            *(
                batch_session.acomplete(
                    [Message(Role.USER, "Describe a person as JSON.")],
                    temperature=1.0,
                    seed=100 + i,
                    max_tokens=200,
                    sampling=Sampling(json_schema=SCHEMA),
                )
                for i in range(6)
            )
        )

    replies = asyncio.run(six())
    assert len(replies) == 6
    for r in replies:
        assert r.finish_reason == "stop", r.text
        doc = json.loads(r.text)
        assert set(doc) == {"name", "age", "color", "address"}
        assert isinstance(doc["name"], str)
        assert isinstance(doc["age"], int) and not isinstance(doc["age"], bool)
        assert doc["color"] in ("red", "green", "blue")
        assert isinstance(doc["address"]["city"], str)
        assert isinstance(doc["address"]["zip"], int)


@pytest.mark.model
def test_marker_text_inside_a_grammar_reply_is_content(chat_session: Session) -> None:
    """Turn markers' text (``</s>``, ``<|im_end|>``) inside a constrained reply does not
    end it: the grammar decides where it ends, and the document comes out whole (cut at
    the marker, a JSON string was left open with ``finish_reason="stop"``)."""
    doc = '{"html": "<s>old</s> new", "note": "then <|im_end|> ends a turn"}'
    reply = chat_session.complete(
        [Message(Role.USER, "Give the JSON.")],
        temperature=0,
        max_tokens=96,
        sampling=Sampling(grammar="root ::= " + json.dumps(doc)),
    )
    assert (reply.text, reply.finish_reason) == (doc, "stop")
    assert json.loads(reply.text)["html"] == "<s>old</s> new"


@pytest.mark.model
def test_a_grammar_restricts_the_reply(chat_session: Session) -> None:
    yes_no = Sampling(grammar='root ::= "yes" | "no"')
    for seed in (1, 2, 3):
        reply = chat_session.prompt(
            [Message(Role.USER, "Is the sky green?")], seed=seed, sampling=yes_no
        )
        assert reply in ("yes", "no")


@pytest.mark.model
def test_stop_strings_never_leak_streaming_or_not(chat_session: Session) -> None:
    # The count reaches "6, 7" by the 20th token (28: room to spare, none spent past it).
    full = chat_session.prompt(COUNT, max_tokens=28, temperature=0)
    assert "6, 7" in full  # the model does count on past the stop below
    stop = Sampling(stop=("6, 7",))  # spans several tokens: "6", ",", " ", "7"
    blocking = chat_session.complete(COUNT, max_tokens=28, temperature=0, sampling=stop)
    assert blocking.finish_reason == "stop"
    assert blocking.text == full[: full.index("6, 7")].strip()
    pieces = list(chat_session.prompt_streaming(COUNT, max_tokens=28, temperature=0, sampling=stop))
    assert "".join(pieces).strip() == blocking.text
    assert not any("7" in p for p in pieces)


@pytest.mark.model
def test_minus_infinity_bias_bans_a_word(chat_session: Session) -> None:
    assert "apple" in chat_session.prompt(APPLE, max_tokens=20, temperature=0).lower()
    banned = Sampling(logit_bias={"apple": -math.inf, "Apple": -math.inf})
    reply = chat_session.prompt(APPLE, max_tokens=20, temperature=0, sampling=banned)
    assert "apple" not in reply.lower()


@pytest.mark.model
def test_n_probs_match_the_chosen_tokens(chat_session: Session) -> None:
    r = chat_session.complete(APPLE, max_tokens=8, temperature=0, sampling=Sampling(n_probs=3))
    assert r.logprobs is not None and len(r.logprobs) == r.generated.count
    assert "".join(p.text for p in r.logprobs).strip() == r.text
    for p in r.logprobs:
        assert 0.0 <= p.prob <= 1.0 and p.logprob <= 0.0
        assert len(p.top) == 3
        assert p.top[0].id == p.id  # greedy: the chosen token is the most likely
        assert all(0.0 <= q.prob <= 1.0 for q in p.top)
        assert [q.prob for q in p.top] == sorted((q.prob for q in p.top), reverse=True)
    assert chat_session.complete(APPLE, max_tokens=2).logprobs is None


@pytest.mark.model
@pytest.mark.parametrize("which", ["chat_session", "session"])
def test_plain_greedy_picks_what_llama_cpps_greedy_sampler_picks(
    which: str, request: pytest.FixtureRequest
) -> None:
    # Greedy with at most biases takes the argmax of the logits; a presence penalty too
    # small to change a float32 logit keeps llama.cpp's own sampler chain (penalties,
    # then greedy). Each request reuses the same cached prefix: identical logits.
    s: Session = request.getfixturevalue(which)
    prompt = [Message(Role.USER, "Write a short story about a fox and a crow.")]
    native = Sampling(presence_penalty=1e-12)
    s.complete(prompt, max_tokens=1, temperature=0)
    for extra in ({}, {"ignore_eos": True}, {"logit_bias": {"fox": -math.inf, " the": 2.5}}):
        fast = s.complete(prompt, max_tokens=16, temperature=0, sampling=Sampling(**extra))
        chain = s.complete(prompt, max_tokens=16, temperature=0, sampling=replace(native, **extra))
        assert fast.generated.count == chain.generated.count > 8, extra
        assert fast.text == chain.text, extra
        if "logit_bias" in extra:
            assert "fox" not in fast.text


@pytest.mark.model
def test_the_penalties_shortlist_changes_no_draw(chat_session: Session) -> None:
    # With top-k (or greedy) after penalties that only lower logits, the chain keeps the
    # top_k + repeat_last_n best candidates before the penalties. Against the same chain
    # over the whole vocabulary (repeat_last_n=-1: no shortlist; the same history here,
    # as prompt and reply stay under 64 tokens), every seeded draw must be the same.
    s = chat_session
    prompt = [Message(Role.USER, "List some fruits.")]
    s.complete(prompt, max_tokens=1, temperature=0)
    chains = [
        (0.0, {"repeat_penalty": 1.5}),
        (0.8, {"repeat_penalty": 1.2, "presence_penalty": 0.5, "frequency_penalty": 0.5}),
        (1.0, {"top_k": 10, "top_p": 0.9, "repeat_penalty": 1.1, "frequency_penalty": 1.0}),
        (1.5, {"top_k": 100, "min_p": 0.0, "top_p": 1.0, "presence_penalty": 2.0}),
    ]
    for temperature, fields in chains:
        for seed in (1, 2):
            kw = {"max_tokens": 16, "temperature": temperature, "seed": seed}
            short = s.complete(prompt, **kw, sampling=Sampling(**fields))  # type: ignore[arg-type]
            whole = s.complete(
                prompt,
                **kw,  # type: ignore[arg-type]
                sampling=Sampling(**fields, repeat_last_n=-1),  # type: ignore[arg-type]
            )
            assert short.cached_tokens + short.prompt.count + short.generated.count < 64
            assert (short.text, short.generated.count) == (whole.text, whole.generated.count)


@pytest.mark.model
def test_ignore_eos_generates_the_whole_budget(chat_session: Session) -> None:
    # The greedy reply ends on its own well inside a budget of 40 (after 23 tokens here).
    short = chat_session.complete([Message(Role.USER, "Say hi.")], max_tokens=40, temperature=0)
    assert short.finish_reason == "stop" and short.generated.count < 40
    r = chat_session.complete(
        [Message(Role.USER, "Say hi.")],
        max_tokens=40,
        temperature=0,
        sampling=Sampling(ignore_eos=True),
    )
    assert r.finish_reason == "length" and r.generated.count == 40


STORY = [Message(Role.USER, "Tell me a story about a dragon.")]


@pytest.mark.model
def test_truncating_samplers_take_effect(chat_session: Session) -> None:
    """At temperature 1.5 the default chain draws away from greedy; with a sampler set to
    keep only the most likely token, the same seeded draw is greedy again. (Every request
    finds the prompt cached and evaluates the same batches: identical logits.)"""
    s = chat_session
    s.complete(STORY, max_tokens=1, temperature=0)

    def hot(seed: int, sampling: Sampling | None = None) -> str:
        return s.prompt(STORY, max_tokens=12, temperature=1.5, seed=seed, sampling=sampling)

    greedy = s.prompt(STORY, max_tokens=12, temperature=0)
    seed = next((k for k in (1, 2, 3) if hot(k) != greedy), None)
    assert seed is not None, "the default chain at temperature 1.5 always drew greedily"
    for fields in ({"top_k": 1}, {"top_p": 0.0}, {"min_p": 1.0}, {"top_n_sigma": 1e-6}):
        assert hot(seed, Sampling(**fields)) == greedy, fields  # type: ignore[arg-type]
    # XTC, always applied with threshold 0, keeps only the least likely candidate left by
    # top-k, top-p and min-p: not greedy, and no longer random.
    xtc = Sampling(xtc_probability=1.0, xtc_threshold=0.0)
    xtc_replies = {hot(k, xtc) for k in (seed, seed + 10)}
    assert len(xtc_replies) == 1 and greedy not in xtc_replies


@pytest.fixture(scope="module")
def greedy_apples(chat_session: Session) -> str:
    """The greedy reply each penalty is measured against (the same for all four)."""
    return chat_session.prompt(APPLE, max_tokens=16, temperature=0).lower()


@pytest.mark.model
@pytest.mark.parametrize(
    "penalty",
    [
        {"repeat_penalty": 5.0},
        {"presence_penalty": 5.0},
        {"frequency_penalty": 5.0},
        {"dry_multiplier": 5.0},
    ],
)
def test_each_penalty_changes_a_greedy_reply_that_repeats(
    chat_session: Session, greedy_apples: str, penalty: dict[str, float]
) -> None:
    s = chat_session
    greedy = greedy_apples
    assert greedy.count("apple") >= 3, greedy
    penalised = s.prompt(
        APPLE,
        max_tokens=16,
        temperature=0,
        sampling=Sampling(**penalty),  # type: ignore[arg-type]
    ).lower()
    assert penalised != greedy and penalised.count("apple") < greedy.count("apple"), penalised


@pytest.mark.model
def test_a_logit_bias_by_token_id_bans_or_forces_a_token(chat_session: Session) -> None:
    s = chat_session
    first = s.complete(STORY, max_tokens=1, temperature=0, sampling=Sampling(n_probs=3))
    assert first.logprobs is not None
    chosen, runner_up, third = (t.id for t in first.logprobs[0].top)
    assert first.logprobs[0].id == chosen

    def first_token(bias: dict[int | str, float]) -> int:
        r = s.complete(
            STORY, max_tokens=1, temperature=0, sampling=Sampling(n_probs=1, logit_bias=bias)
        )
        assert r.logprobs is not None
        return r.logprobs[0].id

    assert first_token({chosen: -math.inf}) == runner_up  # banned: the next best is drawn
    assert first_token({third: 100.0}) == third  # raised above the others
    # The same through llama.cpp's own chain (a penalty keeps the native sampler).
    native = Sampling(n_probs=1, presence_penalty=1e-12, logit_bias={chosen: -math.inf})
    r = s.complete(STORY, max_tokens=1, temperature=0, sampling=native)
    assert r.logprobs is not None and r.logprobs[0].id == runner_up


@pytest.mark.model
def test_the_tuned_chain_repeats_with_its_seed_and_changes_the_draws(
    chat_session: Session,
) -> None:
    s = chat_session
    tuned = Sampling(
        repeat_penalty=1.3,
        frequency_penalty=0.2,
        presence_penalty=0.2,
        dry_multiplier=0.8,
        top_k=20,
        top_p=0.9,
        min_p=0.1,
        typical_p=0.95,
        xtc_probability=0.3,
        top_n_sigma=2.0,
    )
    s.complete(APPLE, max_tokens=1, temperature=0)

    def draw(seed: int, sampling: Sampling | None = None) -> str:
        return s.prompt(APPLE, max_tokens=20, temperature=0.8, seed=seed, sampling=sampling)

    a, b = draw(5, tuned), draw(5, tuned)
    assert a and a == b
    # The same seeds through the default chain draw other replies: the samplers act. Seed
    # 5's tuned draw is ``a`` (repeatable, as just shown); the first differing seed is enough.
    differ = any((a if seed == 5 else draw(seed, tuned)) != draw(seed) for seed in (5, 6, 7))
    assert differ, "the tuned chain drew exactly what the default chain draws"


@pytest.mark.model
def test_session_default_sampling(chat_model_path: object) -> None:
    opts = Options(model=str(chat_model_path), context_length=512, parallel=1)
    opts.sampling = Sampling(stop=("4,",))
    with Session(opts) as s:
        assert s.prompt(COUNT, max_tokens=40, temperature=0).rstrip().endswith("3,")
        # A per-call value replaces the session's default.
        assert "5" in s.prompt(COUNT, max_tokens=16, temperature=0, sampling=Sampling())


@pytest.mark.model
@pytest.mark.parametrize(
    ("sampling", "match"),
    [
        (Sampling(grammar="root ::= ("), r"not valid GBNF: .*expecting '\)'"),
        (Sampling(grammar="root ::= foo"), "Undefined rule identifier 'foo'"),
        (Sampling(json_schema={"type": "nonsense"}), "json_schema cannot be turned"),
        (Sampling(logit_bias={10**9: 1.0}), r"token id 1000000000 is not in \[0, "),
    ],
)
def test_bad_grammar_or_schema_is_refused_and_the_session_goes_on(
    chat_session: Session, sampling: Sampling, match: str
) -> None:
    with pytest.raises(InvalidInputError, match=match):
        chat_session.prompt(APPLE, max_tokens=4, sampling=sampling)
    assert chat_session.get_metrics().requests_processing == 0
    assert chat_session.prompt(APPLE, max_tokens=4, temperature=0)
