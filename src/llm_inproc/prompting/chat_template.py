"""The chat-template prompt path: the GGUF's own Jinja template, or a format by architecture.

Used when a model has no raw :class:`~llm_inproc.prompting.encoding.PromptEncoding` in the
catalogue. Templates run in Jinja's sandbox: they come from downloaded files.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache
from typing import Any

from ..errors import InvalidInputError
from .encoding import PromptEncoding
from .messages import Message, Role

__all__ = ["fallback_encoding", "render_chat_template"]

_GEMMA = PromptEncoding(
    system_token_start="<start_of_turn>user\n",
    system_token_end="<end_of_turn>\n",
    user_token_start="<start_of_turn>user\n",
    user_token_end="<end_of_turn>\n",
    assistant_token_start="<start_of_turn>model\n",
    assistant_token_end="<end_of_turn>\n",
)
_CHATML = PromptEncoding(
    system_token_start="<|im_start|>system\n",
    system_token_end="<|im_end|>\n",
    user_token_start="<|im_start|>user\n",
    user_token_end="<|im_end|>\n",
    assistant_token_start="<|im_start|>assistant\n",
    assistant_token_end="<|im_end|>\n",
)
_LLAMA3 = PromptEncoding(
    begin_of_text="<|begin_of_text|>",
    system_token_start="<|start_header_id|>system<|end_header_id|>\n\n",
    system_token_end="<|eot_id|>",
    user_token_start="<|start_header_id|>user<|end_header_id|>\n\n",
    user_token_end="<|eot_id|>",
    assistant_token_start="<|start_header_id|>assistant<|end_header_id|>\n\n",
    assistant_token_end="<|eot_id|>",
)
_PHI3 = PromptEncoding(
    system_token_start="<|system|>\n",
    system_token_end="<|end|>\n",
    user_token_start="<|user|>\n",
    user_token_end="<|end|>\n",
    assistant_token_start="<|assistant|>\n",
    assistant_token_end="<|end|>\n",
)

_BY_ARCH = {
    "gemma": _GEMMA,
    "gemma2": _GEMMA,
    "gemma3": _GEMMA,
    "gemma3n": _GEMMA,
    "qwen2": _CHATML,
    "qwen3": _CHATML,
    "llama": _LLAMA3,
    "phi3": _PHI3,
}


def fallback_encoding(architecture: str) -> PromptEncoding:
    """A known raw format for a GGUF that carries no chat template (ChatML otherwise)."""
    return _BY_ARCH.get(architecture, _CHATML)


_ROLE_NAMES = {
    Role.SYSTEM: "system",
    Role.USER: "user",
    Role.ASSISTANT: "assistant",
    Role.AVAILABLE_TOOLS: "system",
    Role.TOOL_CALL: "assistant",
    Role.TOOL_CALL_RESULT: "tool",
}


@lru_cache(maxsize=8)
def _compile(source: str) -> Any:
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)

    def raise_exception(message: str) -> None:
        raise InvalidInputError(f"the model's chat template refused the messages: {message}")

    env.globals["raise_exception"] = raise_exception
    return env.from_string(source)


def render_chat_template(
    template: str, messages: Sequence[Message], *, bos_token: str = "", eos_token: str = ""
) -> str:
    """Render ``messages`` with a Hugging Face style chat template, ready for the reply."""
    from jinja2 import TemplateError

    try:
        compiled = _compile(template)
        return str(
            compiled.render(
                messages=[{"role": _ROLE_NAMES[m.role], "content": m.content} for m in messages],
                add_generation_prompt=messages[-1].role is not Role.ASSISTANT,
                bos_token=bos_token,
                eos_token=eos_token,
            )
        )
    except TemplateError as e:
        raise InvalidInputError(
            f"the model's chat template failed on these messages ({e}); "
            "check the roles (some templates refuse a system message) or use a raw prompt encoding"
        ) from e
