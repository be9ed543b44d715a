"""Sampling settings hold: a ``Sampling`` passed to a prompt call, ``Options.sampling`` and a
YAML ``sampling:`` section keep their temperature, seed and max_tokens unless a keyword
argument is given; one temperature default (llama-server's 0.8) everywhere."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from llm_inproc import Message, Options, Role, Sampling, Session, load_config

pytestmark = pytest.mark.model

STORY = [Message(Role.USER, "Tell me a long story about a lighthouse keeper.")]


def test_one_temperature_default_everywhere() -> None:
    from llm_inproc.cli._common import DEFAULT_TEMPERATURE
    from llm_inproc.server.parse import Defaults

    assert Sampling().temperature == 0.8
    assert DEFAULT_TEMPERATURE == Defaults().temperature == Sampling().temperature


def test_a_sampling_argument_keeps_its_temperature_and_budget(chat_session: Session) -> None:
    greedy = Sampling(temperature=0, max_tokens=12)
    first = chat_session.complete(STORY, sampling=greedy)
    again = chat_session.complete(STORY, sampling=greedy)
    assert 0 < first.generated.count <= 12
    assert first.finish_reason == "length"  # the story goes on: the budget ended it
    # Greedy, so token for token the same, and the same as the keywords would give.
    assert again.text == first.text
    assert chat_session.prompt(STORY, temperature=0, max_tokens=12) == first.text
    streamed = "".join(chat_session.prompt_streaming(STORY, sampling=greedy)).strip()
    assert streamed == first.text


def test_a_keyword_given_overrides_the_sampling(chat_session: Session) -> None:
    budget = Sampling(temperature=0, max_tokens=12)
    short = chat_session.complete(STORY, sampling=budget, max_tokens=3)
    assert short.generated.count == 3
    full = chat_session.complete(STORY, sampling=budget)
    assert full.text.startswith(short.text)


def test_options_sampling_is_the_session_default(chat_model_path: Path, cache_dir: Path) -> None:
    opts = Options(
        model=str(chat_model_path),
        context_length=512,
        parallel=1,
        sampling=Sampling(temperature=0, max_tokens=5),
    )
    with Session(opts, cache_dir=cache_dir) as s:
        a, b = s.complete(STORY), s.complete(STORY)
        assert a.generated.count == 5 and a.finish_reason == "length"
        assert a.text == b.text
        assert s.complete(STORY, max_tokens=2).generated.count == 2


def test_a_yaml_sampling_section_holds(chat_model_path: Path, cache_dir: Path) -> None:
    yaml = f"""
llm:
  model: {chat_model_path}
  context_length: 512
  parallel: 1
  sampling:
    temperature: 0
    max_tokens: 4
    seed: 9
"""
    config = load_config(io.StringIO(yaml))
    assert config.options.sampling == Sampling(temperature=0, max_tokens=4, seed=9)
    with Session(config.options, cache_dir=cache_dir) as s:
        a, b = s.complete(STORY), s.complete(STORY)
        assert a.generated.count == 4 and a.text == b.text
