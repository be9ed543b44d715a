"""The chat-template prompt path, on real GGUF files made from the default model."""

from __future__ import annotations

from pathlib import Path

import pytest

from gguf_tools import copy_with_metadata
from llm_inproc import Message, Options, Role, Session
from llm_inproc.errors import InvalidInputError
from llm_inproc.prompting.chat_template import fallback_encoding, render_chat_template

pytestmark = pytest.mark.model

GEMMA_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}<start_of_turn>"
    "{{ 'model' if m.role == 'assistant' else 'user' }}\n{{ m.content }}<end_of_turn>\n"
    "{% endfor %}{% if add_generation_prompt %}<start_of_turn>model\n{% endif %}"
)
CONVO = [
    Message(Role.USER, "Hello, how are you?"),
    Message(Role.ASSISTANT, "Fine."),
    Message(Role.USER, "Tell me about the moon."),
]


@pytest.fixture(scope="module")
def templated_model(model_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("gguf") / "gemma-with-template.gguf"
    return copy_with_metadata(model_path, out, {"tokenizer.chat_template": GEMMA_TEMPLATE})


def test_template_renders_like_the_raw_encoding() -> None:
    text = render_chat_template(GEMMA_TEMPLATE, CONVO, bos_token="<bos>")
    assert text == "<bos>" + fallback_encoding("gemma3").encode(CONVO)


def test_template_errors_are_ours() -> None:
    bad = "{% if messages[0].role == 'user' %}{{ raise_exception('no users here') }}{% endif %}"
    with pytest.raises(InvalidInputError, match="no users here"):
        render_chat_template(bad, CONVO)
    with pytest.raises(InvalidInputError, match="chat template"):
        render_chat_template("{{ messages[0].content | nosuchfilter }}", CONVO)


def test_model_chat_template_is_used(templated_model: Path, session: Session) -> None:
    """A local file matches no KnownLLM: its own template builds the prompt.

    The template is the Gemma format, so the reply must equal the raw-encoding path's.
    """
    with Session(Options(model=str(templated_model), context_length=1024)) as s:
        assert s.encoding is None
        assert s.model_info.chat_template == GEMMA_TEMPLATE
        assert s.count_tokens(CONVO) == session.count_tokens(CONVO)
        reply = s.prompt(CONVO, max_tokens=24, temperature=0)
        assert reply
        assert reply == session.prompt(CONVO, max_tokens=24, temperature=0)
        streamed = "".join(s.prompt_streaming(CONVO, max_tokens=24, temperature=0))
        assert streamed.strip() == reply


def test_no_template_falls_back_by_architecture(model_path: Path) -> None:
    with Session(Options(model=str(model_path), context_length=512), known_llms=[]) as s:
        assert s.model_info.chat_template is None
        assert s.encoding == fallback_encoding("gemma3")
        assert s.prompt(CONVO, max_tokens=8, temperature=0)


def test_multibyte_text_streams_whole_characters(session: Session) -> None:
    msgs = [Message(Role.USER, "日本語で答えてください。富士山について教えて。🗻")]
    pieces = list(session.prompt_streaming(msgs, max_tokens=48, temperature=0))
    text = "".join(pieces)
    assert text.strip()
    assert "\ufffd" not in text
    assert any(ord(c) > 0x3000 for c in text), text


def test_offload_is_reported(session: Session) -> None:
    import llama_cpp

    info = session.model_info
    assert info.gpu_offload_supported is bool(llama_cpp.llama_supports_gpu_offload())
    assert info.gpu_layers_offloaded == 0  # CPU-only build here
    assert info.n_layers > 0 and info.threads >= 1


def test_a_last_assistant_message_is_continued_as_llama_server_does() -> None:
    """The chat-template path prefills: the turn is left open after the given text."""
    text = render_chat_template(GEMMA_TEMPLATE, [*CONVO, Message(Role.ASSISTANT, "The moon is")])
    assert text.endswith("Tell me about the moon.<end_of_turn>\n<start_of_turn>model\nThe moon is")
    with pytest.raises(InvalidInputError, match="2 or more assistant messages"):
        render_chat_template(GEMMA_TEMPLATE, [*CONVO[:2], Message(Role.ASSISTANT, "More.")])


def test_a_prefilled_reply_goes_on_from_the_prefill(chat_session: Session) -> None:
    reply = chat_session.complete(
        [Message(Role.USER, "List three colours as JSON."), Message(Role.ASSISTANT, '["red",')],
        temperature=0,
        max_tokens=12,
    )
    # The reply continues the array: it does not open another turn or repeat the prefill.
    assert not reply.text.lstrip().startswith('["red"')
    assert '"' in reply.text
