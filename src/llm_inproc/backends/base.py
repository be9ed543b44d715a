"""The small interface every backend implements, and the values that cross it.

A backend takes a :class:`GenerationRequest` and returns a :class:`~.stream.RawStream`:
text pieces as the model produces them, then one :class:`Outcome` saying how the
request ended and what it cost. The Session cleans the text and builds the public ``Reply`` the
same way for every backend, in threads and in asyncio alike.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import TYPE_CHECKING, Any, Literal, Protocol, runtime_checkable

from ..metrics import Metrics, TokenPerformance
from ..prompting.messages import Message
from ..sampling import Sampling, TokenProb
from ..tools.types import Constraint, ToolCall, ToolRequest

if TYPE_CHECKING:
    from ..prompting.reasoning import ThinkingSplit
    from ..tools.formats import ToolFormat
    from .stream import RawStream

__all__ = [
    "Backend",
    "ConversationStore",
    "DeviceUse",
    "EmbeddingBackend",
    "FinishReason",
    "GenerationRequest",
    "ModelInfo",
    "Outcome",
    "RawItem",
    "SlotFile",
    "SlotInfo",
    "Vectors",
]

FinishReason = Literal["stop", "length", "cancelled", "tool_calls"]


@dataclass(frozen=True)
class ModelInfo:
    """Facts about the loaded model, as the backend reports them."""

    architecture: str | None
    """``general.architecture`` from the GGUF, e.g. ``llama`` or ``gemma3``; None when a
    server does not say (every field below reads None for "unknown", never 0 or "")."""
    description: str
    """A one-line description (size and quantization, or the server's model and URL)."""
    chat_template: str | None
    """``tokenizer.chat_template``, or None when the file has none (or a server hides it)."""
    n_ctx: int | None
    """The context window actually allocated, in tokens (shared by all parallel slots)."""
    n_ctx_train: int | None
    """The context length the model was trained with."""
    n_layers: int | None
    gpu_layers_offloaded: int | None
    """Layers reported offloaded to a GPU (0 on a CPU-only build)."""
    gpu_offload_supported: bool | None
    """Whether the build can offload at all."""
    threads: int | None
    parallel: int = 1
    """Requests generated at once."""
    flash_attention: bool | None = None
    """Whether llama.cpp's flash attention is on."""
    repack: bool | None = None
    """Whether weights were repacked for the CPU's fast kernels (None: unknown, a server)."""
    devices: tuple[DeviceUse, ...] = ()
    """The devices holding the model, local and RPC, with the layers each holds (in
    process; empty where a server does not say)."""
    template_tokens: tuple[str, str] = ("", "")
    """The text of the BOS and EOS tokens, which chat templates write as ``bos_token`` and
    ``eos_token`` (empty where unknown)."""


@dataclass(frozen=True)
class DeviceUse:
    """One device a model was loaded onto, read through ggml's device API."""

    name: str
    """ggml's device name: ``CPU``, ``CUDA0``, ``RPC0``…"""
    description: str
    """The hardware, or for an RPC device the server's ``host:port``."""
    memory_free: int
    """Free memory in bytes after the load, as the device reports it."""
    memory_total: int
    """Total memory in bytes."""
    layers: int
    """Repeating layers placed on it (the output layer not counted)."""


@dataclass(frozen=True)
class GenerationRequest:
    """One prompt, already validated: raw text, token ids, or messages for the chat template."""

    sampling: Sampling
    prompt: str | None = None
    """Raw ``/completion`` text, when the model has a prompt encoding."""
    messages: Sequence[Message] = ()
    """Messages for the model's own chat template, when it has no raw encoding."""
    tokens: Sequence[int] | None = None
    """Token ids to evaluate as they are (no template, no BOS added)."""
    stops: tuple[str, ...] = ()
    """Text that ends the reply (never shown to the caller)."""
    tools: ToolRequest | None = None
    """The tools offered: rendered into the chat template (in-process) or sent on (HTTP)."""
    tool_format: ToolFormat | None = None
    """How the model writes calls, when this process reads them from the text (None where
    a server parses them and the outcome carries them)."""
    constraint: Constraint | None = None
    """The grammar the sampler enforces for the tools (in-process only)."""
    cache_prompt: bool = True
    """Reuse a cached prefix of the prompt (the slot's cells, the prompt cache); False
    evaluates it all (llama-server's ``cache_prompt``)."""
    template_kwargs: Mapping[str, Any] = field(default_factory=dict)
    """Variables the chat template reads besides the messages, such as ``enable_thinking``
    (llama-server's ``chat_template_kwargs``)."""
    thinking: ThinkingSplit | None = None
    """Split the reply's thinking from its text (``Options.reasoning_format``); None: the
    text as written."""


@dataclass(frozen=True)
class Outcome:
    """How one request ended and what it cost; the last item of every raw stream."""

    finish_reason: FinishReason
    """``stop`` (end of turn or a stop marker), ``length`` (token budget or full context),
    or ``cancelled`` (the caller stopped it)."""
    prompt: TokenPerformance = field(default_factory=TokenPerformance)
    """Prompt tokens evaluated for this request, and the time they took."""
    cached_tokens: int = 0
    """Prompt tokens reused from the KV cache instead of evaluated."""
    generated: TokenPerformance = field(default_factory=TokenPerformance)
    """Tokens generated, and the time from the first to the last."""
    time_to_first_token: timedelta = field(default_factory=timedelta)
    """From the request's arrival (queueing included) to its first generated token."""
    logprobs: tuple[TokenProb, ...] | None = None
    """Per generated token, when ``Sampling.n_probs`` > 0."""
    drafted: int = 0
    """Tokens drafted by speculative decoding (llama-server's ``draft_n``)."""
    draft_accepted: int = 0
    """Drafted tokens the model agreed with (``draft_n_accepted``)."""
    tool_calls: tuple[ToolCall, ...] = ()
    """Calls a server parsed from the reply (HTTP backends); in-process the Session reads
    them from the text."""


RawItem = str | Outcome


@dataclass(frozen=True)
class SlotFile:
    """What a slot action moved: tokens and bytes (llama-server's ``n_saved``/``n_written``
    and ``n_restored``/``n_read``)."""

    tokens: int
    bytes: int


@dataclass(frozen=True)
class SlotInfo:
    """One slot of an in-process session, as ``/slots`` shows it: whether it serves a
    request, which, and the tokens its cells hold."""

    id: int
    processing: bool
    state: str
    """``idle``, ``prompt`` (evaluating the prompt) or ``generating``."""
    task: int | None
    """The request served, or last served (None: none yet)."""
    n_cached: int
    """Tokens whose KV cells the slot holds now."""
    n_prompt_evaluated: int
    n_prompt_reused: int
    """Prompt tokens found in the cells (or the prompt cache) and not evaluated again."""
    n_decoded: int
    n_remain: int


class ConversationStore(Protocol):
    """Conversations' KV states to and from disk (in-process backends only)."""

    def save_conversations(self, path: str | os.PathLike[str]) -> int:
        """Write every conversation held (slots and prompt cache); how many."""
        ...

    def load_conversations(self, path: str | os.PathLike[str]) -> int:
        """Put the conversations of a file into the prompt cache; how many."""
        ...

    def save_slot(self, slot: int, path: str | os.PathLike[str]) -> SlotFile: ...

    def restore_slot(self, slot: int, path: str | os.PathLike[str]) -> SlotFile: ...

    def erase_slot(self, slot: int) -> int:
        """Clear an idle slot's cells; the tokens they held."""
        ...

    def slots(self) -> tuple[SlotInfo, ...]:
        """Every slot's state now."""
        ...


class Backend(Protocol):
    """Runs generation for a Session."""

    name: str
    """``"inproc"``, ``"remote"``, ``"llama-server"`` or ``"python"``."""
    info: ModelInfo

    @property
    def in_process(self) -> bool:
        """True when the model runs in this process, and the Session picks a known prompt
        format for a GGUF without a chat template; a server applies its own."""
        ...

    @property
    def served_model(self) -> str | None:
        """The model a server says it runs (alias, path or id); None in-process."""
        ...

    @property
    def conversations(self) -> ConversationStore | None:
        """Saving and loading conversations' KV states; None where the backend cannot."""
        ...

    def render(self, request: GenerationRequest) -> str:
        """The prompt text the model sees for ``request``."""
        ...

    def submit(self, request: GenerationRequest) -> RawStream:
        """Start ``request``; its stream serves a thread or an asyncio task on any loop
        (raises ``BusyError`` when the queue is full)."""
        ...

    def count_tokens(self, request: GenerationRequest) -> int:
        """Tokens the prompt of ``request`` takes in the context."""
        ...

    def tokenize(self, text: str, *, special: bool = True) -> list[int]: ...

    def detokenize(self, tokens: Sequence[int]) -> str: ...

    def health(self) -> str: ...

    def metrics(self) -> Metrics: ...

    def close(self) -> None: ...


@dataclass(frozen=True)
class Vectors:
    """What a backend's embedding (or reranking) computed, unnormalised."""

    rows: list[Any]
    """One float32 numpy array per input: a vector, a (tokens x dimensions) matrix for
    pooling ``none``, or one score for reranking."""
    tokens: list[int]
    """Tokens evaluated per input (what ``usage`` counts)."""
    pooling: str
    """The pooling applied (``mean``, ``cls``, ``last``, ``none`` or ``rank``)."""


@runtime_checkable
class EmbeddingBackend(Protocol):
    """A backend that also embeds and reranks (the in-process one, and servers)."""

    def model_pooling(self) -> str | None:
        """The pooling type the GGUF names; None when it names none, or a server decides."""
        ...

    def embed(
        self, inputs: Sequence[str | Sequence[int]], pooling: str | None, *, truncate: bool
    ) -> Vectors:
        """Vectors of ``inputs`` (texts, or token ids evaluated as they are); ``pooling``
        None is the model's own (in-process: else mean) or the server's."""
        ...

    def rerank(self, query: str, documents: Sequence[str], *, truncate: bool) -> Vectors:
        """One relevance score per document (raw, higher is more relevant)."""
        ...
