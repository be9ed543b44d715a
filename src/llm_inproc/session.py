"""The Session facade: validates, encodes, cleans and measures once for every backend."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

from .backends import open_backend
from .backends.base import (
    Backend,
    ConversationStore,
    EmbeddingBackend,
    GenerationRequest,
    ModelInfo,
    SlotFile,
    SlotInfo,
    Vectors,
)
from .config import KnownLLM, Options, default_config, find_known_llm
from .embeddings.pooling import Pooling
from .embeddings.types import Progress, RankedDocument
from .errors import InvalidInputError, SessionClosedError
from .metrics import Metrics
from .models.references import PackedFileRef
from .prompting.encoding import PromptEncoding
from .prompting.messages import Message
from .prompting.reasoning import ThinkingMarkers, ThinkingSplit, thinking_markers
from .prompting.request_builder import NAMED_TEMPLATES, build_request
from .reply import AsyncReplyStream, Reply, ReplyStream
from .sampling import Sampling
from .tools.types import ToolChoice, ToolRequest, tool_request

__all__ = ["Session"]


class Session:
    """A loaded model you can prompt, from threads or asyncio.

    ``Session()`` loads the embedded default model in-process. Use it as a
    context manager, or call :meth:`close`, to free the model's memory.
    """

    model: str
    """The PackedFileRef or local path the session runs."""
    encoding: PromptEncoding | None
    """The raw prompt encoding, or None when the model's chat template is used."""
    backend: str
    """``"inproc"``, ``"remote"``, ``"llama-server"`` or ``"python"``."""
    model_path: Path
    """The local GGUF file that was loaded."""
    model_info: ModelInfo
    """What llama.cpp set up: context size, threads, layers offloaded to a GPU."""

    def __init__(
        self,
        options: Options | None = None,
        *,
        cache_dir: str | os.PathLike[str] | None = None,
        known_llms: Sequence[KnownLLM] | None = None,
    ) -> None:
        from .paths import resolve_cache_dir

        defaults = default_config()
        opts = options if options is not None else Options()
        if not isinstance(opts, Options):
            raise InvalidInputError(f"options must be an Options, not {type(opts).__name__}")
        opts.validate()
        self.options = opts
        self.cache_dir = resolve_cache_dir(cache_dir)
        catalogue = list(known_llms) if known_llms is not None else defaults.known_llms
        # model "python" names the backend; the server it starts runs the default model.
        model = opts.model if opts.model not in ("", "python") else defaults.options.model
        self.model = PackedFileRef(model) if model.startswith("hf:") else model
        self.backend = opts.resolved_backend()
        known = find_known_llm(catalogue, model)
        self.encoding = known.prompt_encoding if known else None
        self._hf: Any = None
        self._backend = self._start_backend()
        self._closed = False

    def _start_backend(self) -> Backend:
        from .prompting.chat_template import fallback_encoding

        backend, path = open_backend(self.options, self.model, self.cache_dir, lambda: self.hf)
        if path is not None:
            self.model_path = path
        self.model_info = backend.info
        if self.backend == "remote" and not self.options.model and backend.served_model:
            # No model named: the server's own model, through the server's chat template.
            self.model, self.encoding = backend.served_model, None
        if self.encoding is None and backend.in_process and not backend.info.chat_template:
            self.encoding = fallback_encoding(backend.info.architecture or "")
        return backend

    @property
    def hf(self) -> Any:
        """The ``huggingface_hub.HfApi`` used for downloads (created on first use)."""
        if self._hf is None:
            from huggingface_hub import HfApi

            self._hf = HfApi()
        return self._hf

    # -- prompting ---------------------------------------------------------------------------

    def _request(
        self,
        messages: Sequence[Message],
        max_tokens: int | None,
        seed: int | None,
        temperature: float | None,
        sampling: Sampling | None,
        timeout: float | None,
        tools: ToolRequest | None = None,
    ) -> GenerationRequest:
        if self._closed:
            raise SessionClosedError("the session is closed; create a new Session")
        sampling = self._sampling(sampling, max_tokens, seed, temperature)
        _check_timeout(timeout)
        return self._build(messages, sampling, tools)

    def _build(
        self,
        messages: Sequence[Message],
        sampling: Sampling,
        tools: ToolRequest | None,
        template: str = "",
        template_kwargs: Mapping[str, Any] | None = None,
    ) -> GenerationRequest:
        local = self._backend.in_process
        request = build_request(
            messages,
            sampling,
            model=self.model,
            encoding=self.encoding,
            template=template,
            tools=tools,
            chat_template=self.model_info.chat_template if local else None,
            local=local,
            template_tokens=self.model_info.template_tokens,
            template_kwargs={**self.options.chat_template_kwargs, **(template_kwargs or {})},
        )
        fmt = request.tool_format
        if fmt is not None and request.tools is not None:
            # Whether the reply starts inside a thinking block depends on the prompt's end.
            after = fmt.after_prompt(self.render(request))
            if after is not fmt:
                constraint = after.constraint(request.tools)
                request = dataclasses.replace(request, tool_format=after, constraint=constraint)
        elif self.options.reasoning_format != "none":
            request = self._with_thinking(request, template)
        return request

    def _with_thinking(self, request: GenerationRequest, template: str) -> GenerationRequest:
        """``request`` marked to have its reply's thinking split off, where its chat
        template thinks."""
        markers = self.thinking_markers(template)
        if markers is None:
            return request
        split = ThinkingSplit.of(markers, self.render(request), self.options.reasoning_format)
        return dataclasses.replace(request, thinking=split)

    def thinking_markers(self, template: str = "") -> ThinkingMarkers | None:
        """The markers the chat template wraps the model's reasoning in (``<think>`` …
        ``</think>``): ``template`` (a Jinja template overriding the model's), else the
        model's own; None where it does not think, or where a named format or a raw prompt
        encoding is used."""
        if template:
            source = "" if template in NAMED_TEMPLATES else template
        else:
            source = "" if self.encoding is not None else self.model_info.chat_template or ""
        return thinking_markers(source) if source else None

    def _sampling(
        self,
        sampling: Sampling | None,
        max_tokens: int | None,
        seed: int | None,
        temperature: float | None,
    ) -> Sampling:
        """``sampling`` (else ``Options.sampling``) with the keyword values that were given;
        a keyword left out (None) keeps what the sampling says."""
        if sampling is not None and not isinstance(sampling, Sampling):
            raise InvalidInputError(f"sampling must be a Sampling, not {type(sampling).__name__}")
        base = sampling if sampling is not None else self.options.sampling
        given: dict[str, Any] = {"max_tokens": max_tokens, "seed": seed, "temperature": temperature}
        changes = {k: v for k, v in given.items() if v is not None}
        return dataclasses.replace(base, **changes) if changes else base

    def prompt(
        self,
        messages: Sequence[Message],
        *,
        max_tokens: int | None = None,
        seed: int | None = None,
        temperature: float | None = None,
        sampling: Sampling | None = None,
        timeout: float | None = None,
        tools: Iterable[Any] | None = None,
        tool_choice: ToolChoice | Mapping[str, Any] | None = None,
        parallel_tool_calls: bool | None = None,
    ) -> str:
        """The model's reply, stripped of surrounding whitespace.

        ``max_tokens``, ``seed`` and ``temperature`` left out (None) are what ``sampling``
        says, else ``Options.sampling``, else llama-server's defaults: no token limit, a
        random seed, temperature 0.8.

        ``tools`` (``Tool`` values, OpenAI tool dicts or plain functions) are offered to the
        model; ``tool_choice`` is ``"auto"`` (default), ``"none"``, ``"required"`` or a tool's
        name, and ``parallel_tool_calls`` allows several calls in one reply (default False,
        as llama-server). The calls are on :meth:`complete`'s ``Reply.tool_calls``; to have
        Python functions run for you, use :meth:`run_tools`.
        """
        return self.complete(
            messages,
            max_tokens=max_tokens,
            seed=seed,
            temperature=temperature,
            sampling=sampling,
            timeout=timeout,
            tools=tools,
            tool_choice=tool_choice,
            parallel_tool_calls=parallel_tool_calls,
        ).text

    def complete(
        self,
        messages: Sequence[Message],
        *,
        max_tokens: int | None = None,
        seed: int | None = None,
        temperature: float | None = None,
        sampling: Sampling | None = None,
        timeout: float | None = None,
        tools: Iterable[Any] | None = None,
        tool_choice: ToolChoice | Mapping[str, Any] | None = None,
        parallel_tool_calls: bool | None = None,
    ) -> Reply:
        """The model's reply with what it cost (tokens, times, why it ended)."""
        stream = self.prompt_streaming(
            messages,
            max_tokens=max_tokens,
            seed=seed,
            temperature=temperature,
            sampling=sampling,
            timeout=timeout,
            tools=tools,
            tool_choice=tool_choice,
            parallel_tool_calls=parallel_tool_calls,
        )
        with stream:
            for _ in stream:
                pass
        assert stream.reply is not None
        return stream.reply

    def prompt_streaming(
        self,
        messages: Sequence[Message],
        *,
        max_tokens: int | None = None,
        seed: int | None = None,
        temperature: float | None = None,
        sampling: Sampling | None = None,
        timeout: float | None = None,
        tools: Iterable[Any] | None = None,
        tool_choice: ToolChoice | Mapping[str, Any] | None = None,
        parallel_tool_calls: bool | None = None,
    ) -> ReplyStream:
        """Yield the reply as it is generated; closing the iterator stops generation.

        Once exhausted, its ``.reply`` is the :class:`Reply`.
        """
        request = self._request(
            messages,
            max_tokens,
            seed,
            temperature,
            sampling,
            timeout,
            tool_request(tools, tool_choice, parallel_tool_calls),
        )
        return self.generate(request, timeout=timeout)

    async def aprompt(
        self,
        messages: Sequence[Message],
        *,
        max_tokens: int | None = None,
        seed: int | None = None,
        temperature: float | None = None,
        sampling: Sampling | None = None,
        timeout: float | None = None,
        tools: Iterable[Any] | None = None,
        tool_choice: ToolChoice | Mapping[str, Any] | None = None,
        parallel_tool_calls: bool | None = None,
    ) -> str:
        """:meth:`prompt` for asyncio; cancelling the task stops generation."""
        reply = await self.acomplete(
            messages,
            max_tokens=max_tokens,
            seed=seed,
            temperature=temperature,
            sampling=sampling,
            timeout=timeout,
            tools=tools,
            tool_choice=tool_choice,
            parallel_tool_calls=parallel_tool_calls,
        )
        return reply.text

    async def acomplete(
        self,
        messages: Sequence[Message],
        *,
        max_tokens: int | None = None,
        seed: int | None = None,
        temperature: float | None = None,
        sampling: Sampling | None = None,
        timeout: float | None = None,
        tools: Iterable[Any] | None = None,
        tool_choice: ToolChoice | Mapping[str, Any] | None = None,
        parallel_tool_calls: bool | None = None,
    ) -> Reply:
        """:meth:`complete` for asyncio; cancelling the task stops generation."""
        stream = self.aprompt_streaming(
            messages,
            max_tokens=max_tokens,
            seed=seed,
            temperature=temperature,
            sampling=sampling,
            timeout=timeout,
            tools=tools,
            tool_choice=tool_choice,
            parallel_tool_calls=parallel_tool_calls,
        )
        async with stream:
            async for _ in stream:
                pass
        assert stream.reply is not None
        return stream.reply

    def aprompt_streaming(
        self,
        messages: Sequence[Message],
        *,
        max_tokens: int | None = None,
        seed: int | None = None,
        temperature: float | None = None,
        sampling: Sampling | None = None,
        timeout: float | None = None,
        tools: Iterable[Any] | None = None,
        tool_choice: ToolChoice | Mapping[str, Any] | None = None,
        parallel_tool_calls: bool | None = None,
    ) -> AsyncReplyStream:
        """:meth:`prompt_streaming` for asyncio (call it inside a running event loop);
        cancelling the consuming task or closing the iterator stops generation."""
        request = self._request(
            messages,
            max_tokens,
            seed,
            temperature,
            sampling,
            timeout,
            tool_request(tools, tool_choice, parallel_tool_calls),
        )
        return self.agenerate(request, timeout=timeout)

    def count_tokens(
        self, messages: Sequence[Message], *, tools: Iterable[Any] | None = None
    ) -> int:
        """How many context tokens the prompt for ``messages`` (and ``tools``) takes."""
        request = self._request(messages, None, None, None, None, None, tool_request(tools))
        return self._backend.count_tokens(request)

    # -- tools -------------------------------------------------------------------------------

    def run_tools(
        self,
        messages: list[Message],
        tools: Iterable[Any],
        *,
        max_rounds: int = 8,
        tool_choice: ToolChoice | Mapping[str, Any] | None = None,
        parallel_tool_calls: bool | None = None,
        max_tokens: int | None = None,
        seed: int | None = None,
        temperature: float | None = None,
        sampling: Sampling | None = None,
        timeout: float | None = None,
    ) -> Reply:
        """Let the model use Python functions until it answers in text.

        Asks with ``tools`` (functions, or Tools made from them), runs the calls the model
        makes, appends its call turn and each result to ``messages`` and asks again; the
        final answer is appended too and returned. ``tool_choice`` applies to the first
        round, later ones are ``"auto"``, and after ``max_rounds`` rounds of calls the model
        is asked without tools. A tool that raises (or gets bad arguments) does not stop the
        loop: the model reads the error as the call's result. ``timeout`` is per round.
        """
        from .tools.loop import run_tools

        return run_tools(
            self,
            messages,
            tools,
            max_rounds=max_rounds,
            tool_choice=tool_choice,
            parallel_tool_calls=parallel_tool_calls,
            max_tokens=max_tokens,
            seed=seed,
            temperature=temperature,
            sampling=sampling,
            timeout=timeout,
        )

    async def arun_tools(
        self,
        messages: list[Message],
        tools: Iterable[Any],
        *,
        max_rounds: int = 8,
        tool_choice: ToolChoice | Mapping[str, Any] | None = None,
        parallel_tool_calls: bool | None = None,
        max_tokens: int | None = None,
        seed: int | None = None,
        temperature: float | None = None,
        sampling: Sampling | None = None,
        timeout: float | None = None,
    ) -> Reply:
        """:meth:`run_tools` for asyncio: plain functions run in a worker thread,
        ``async def`` tools are awaited."""
        from .tools.loop import arun_tools

        return await arun_tools(
            self,
            messages,
            tools,
            max_rounds=max_rounds,
            tool_choice=tool_choice,
            parallel_tool_calls=parallel_tool_calls,
            max_tokens=max_tokens,
            seed=seed,
            temperature=temperature,
            sampling=sampling,
            timeout=timeout,
        )

    # -- vectors -----------------------------------------------------------------------------

    def embed(
        self,
        texts: str | Iterable[str],
        *,
        pooling: Pooling | None = None,
        normalize: bool = True,
        truncate: bool = False,
        progress: Progress | None = None,
    ) -> Any:
        """Vectors of ``texts``: a float32 numpy array with one row per text (one vector
        for a single str), each of length 1 unless ``normalize=False``.

        ``pooling`` is how a text's token vectors become one: None is the model's own (the
        GGUF's pooling type; mean for a model that names none, such as any chat model), or
        ``"mean"``, ``"cls"``, ``"last"``; ``"none"`` gives each text's token vectors, a
        (tokens x dimensions) array per text, in a list. Many texts are evaluated together,
        several per batch; an iterator of any length streams through 256 texts at a
        time, calling ``progress(done, total)`` after each. A text longer than the context
        raises :class:`ContextOverflowError` with both numbers, unless ``truncate`` keeps
        its first tokens. Generation in progress and its cached conversations are not
        disturbed (in-process, a second context on the same weights).
        """
        from .embeddings.run import embed_texts

        return embed_texts(
            self._embedder("embed"),
            texts,
            pooling=pooling,
            normalize_rows=normalize,
            truncate=truncate,
            progress=progress,
        )

    async def aembed(
        self,
        texts: str | Iterable[str],
        *,
        pooling: Pooling | None = None,
        normalize: bool = True,
        truncate: bool = False,
        progress: Progress | None = None,
    ) -> Any:
        """:meth:`embed` for asyncio: it runs in a worker thread; cancelling the task stops
        it after the chunk being evaluated."""
        import asyncio
        import threading

        from .embeddings.run import embed_texts

        backend = self._embedder("embed")
        cancelled = threading.Event()
        try:
            return await asyncio.to_thread(
                embed_texts,
                backend,
                texts,
                pooling=pooling,
                normalize_rows=normalize,
                truncate=truncate,
                progress=progress,
                cancelled=cancelled,
            )
        except asyncio.CancelledError:
            cancelled.set()
            raise

    def rerank(
        self,
        query: str,
        documents: Iterable[str],
        top_n: int | None = None,
        *,
        truncate: bool = False,
    ) -> list[RankedDocument]:
        """``documents`` ranked by relevance to ``query``, best first (the ``top_n`` best),
        each with its index in ``documents`` and its score. Needs a reranker GGUF (rank
        pooling and a classification head, such as bge-reranker or Qwen3-Reranker); any
        other model raises :class:`InvalidInputError` saying so."""
        from .embeddings.run import rerank_documents

        return rerank_documents(self._embedder("rerank"), query, documents, top_n, truncate)

    def embed_inputs(
        self,
        inputs: Sequence[str | Sequence[int]],
        *,
        pooling: str | None = None,
        truncate: bool = False,
    ) -> Vectors:
        """Unnormalised vectors of texts or token-id lists, with the tokens each took (what
        a server needs for ``/embedding``); ``pooling`` may also be ``"rank"``."""
        return self._embedder("embed").embed(inputs, pooling, truncate=truncate)

    def rerank_scores(
        self, query: str, documents: Sequence[str], *, truncate: bool = False
    ) -> Vectors:
        """Raw scores of ``documents`` for ``query`` in their order, with the tokens each
        took (what a server needs for ``/rerank``)."""
        return self._embedder("rerank").rerank(query, documents, truncate=truncate)

    @property
    def model_pooling(self) -> str | None:
        """The pooling type the model's GGUF names (None: it names none, or a server's)."""
        return self._embedder("embed").model_pooling()

    def _embedder(self, what: str) -> EmbeddingBackend:
        if self._closed:
            raise SessionClosedError("the session is closed; create a new Session")
        backend = self._backend
        if not isinstance(backend, EmbeddingBackend):
            raise InvalidInputError(
                f"{what} is not available on the {backend.name!r} backend; use the model "
                "in-process (backend='inproc') or a server started with --embeddings "
                "(Options.remote)"
            )
        return backend

    # -- prepared requests (what a server needs) --------------------------------------------

    def chat_request(
        self,
        messages: Sequence[Message],
        sampling: Sampling,
        *,
        template: str = "",
        tools: ToolRequest | None = None,
        template_kwargs: Mapping[str, Any] | None = None,
    ) -> GenerationRequest:
        """The request :meth:`prompt` would make for ``messages`` (encoding or chat template,
        system-prompt template, stop markers, tools), to pass to :meth:`generate`;
        ``template`` overrides the model's chat template (a format name or a Jinja template);
        ``template_kwargs`` are the template's other variables (``enable_thinking``)."""
        if self._closed:
            raise SessionClosedError("the session is closed; create a new Session")
        sampling = self._sampling(sampling, None, None, None)
        return self._build(messages, sampling, tools, template, template_kwargs)

    def generate(self, request: GenerationRequest, *, timeout: float | None = None) -> ReplyStream:
        """Start a prepared request (raw text, token ids, or :meth:`chat_request`); the
        stream yields its text cleaned of ``request.stops``, as :meth:`prompt_streaming`."""
        if self._closed:
            raise SessionClosedError("the session is closed; create a new Session")
        _check_timeout(timeout)
        return ReplyStream(self._backend.submit(request), request, timeout)

    def agenerate(
        self, request: GenerationRequest, *, timeout: float | None = None
    ) -> AsyncReplyStream:
        """:meth:`generate` for asyncio (call it inside the running event loop)."""
        if self._closed:
            raise SessionClosedError("the session is closed; create a new Session")
        _check_timeout(timeout)
        return AsyncReplyStream(self._backend.submit(request), request, timeout)

    def render(self, request: GenerationRequest) -> str:
        """The prompt text the model sees for ``request``."""
        if request.prompt is not None:
            return request.prompt
        if request.tokens is not None:
            return self.detokenize(request.tokens)
        return self._backend.render(request)

    def tokenize(self, text: str, *, special: bool = True) -> list[int]:
        """Token ids of ``text``; with ``special``, BOS added (when the model wants one) and
        control tokens such as ``<|im_start|>`` recognised."""
        return self._backend.tokenize(text, special=special)

    def detokenize(self, tokens: Sequence[int]) -> str:
        """The text of token ids, control tokens included."""
        return self._backend.detokenize(tokens)

    # -- state -------------------------------------------------------------------------------

    def get_health(self) -> str:
        """``"ok"`` when the model is loaded and ready."""
        return "closed" if self._closed else self._backend.health()

    def get_metrics(self) -> Metrics:
        """Cumulative token counts and times, KV cache use, requests running and waiting."""
        if self._closed:
            raise SessionClosedError("the session is closed; create a new Session")
        return self._backend.metrics()

    # -- conversations on disk -----------------------------------------------------------------

    def save_conversations(self, path: str | os.PathLike[str]) -> int:
        """Write the KV state of every conversation this session holds (its idle slots and
        its prompt cache) to ``path``, atomically; how many. After a restart,
        :meth:`load_conversations` brings them back, so a bot's long system prompt and its
        users' histories are not evaluated again. In-process sessions only."""
        return self._store("save_conversations").save_conversations(path)

    def load_conversations(self, path: str | os.PathLike[str]) -> int:
        """Put the conversations saved in ``path`` into the prompt cache, from where a request
        that continues one restores it; how many. A file saved by another model, KV cache
        type or llama.cpp version, or a damaged one, raises :class:`InvalidInputError` and
        changes nothing."""
        return self._store("load_conversations").load_conversations(path)

    def save_slot(self, slot: int, path: str | os.PathLike[str]) -> SlotFile:
        """Write idle slot ``slot``'s conversation to ``path`` (llama-server's slot save)."""
        return self._store("save_slot").save_slot(slot, path)

    def restore_slot(self, slot: int, path: str | os.PathLike[str]) -> SlotFile:
        """Load a conversation saved by :meth:`save_slot` into idle slot ``slot``; a file
        that does not fit leaves the slot unchanged."""
        return self._store("restore_slot").restore_slot(slot, path)

    def erase_slot(self, slot: int) -> int:
        """Clear idle slot ``slot``'s cells; the tokens they held."""
        return self._store("erase_slot").erase_slot(slot)

    def slots(self) -> tuple[SlotInfo, ...]:
        """Every slot's state now: whether it serves a request, which, and what its cells
        hold (what ``/slots`` shows)."""
        return self._store("slots").slots()

    def _store(self, what: str) -> ConversationStore:
        if self._closed:
            raise SessionClosedError("the session is closed; create a new Session")
        store = self._backend.conversations
        if store is None:
            raise InvalidInputError(
                f"{what} needs the model in this process; the {self._backend.name!r} backend "
                "keeps its conversations in the server (llama-server: POST /slots/ID?action=save)"
            )
        return store

    def close(self) -> None:
        """Free the model; requests still running end with :class:`SessionClosedError`."""
        if not self._closed:
            self._closed = True
            self._backend.close()

    def __enter__(self) -> Session:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        return f"<Session {self.backend} model={str(self.model)!r} {state}>"


def _check_timeout(timeout: float | None) -> None:
    if timeout is None:
        return
    ok = isinstance(timeout, (int, float)) and not isinstance(timeout, bool)
    if not ok or not timeout > 0 or timeout != timeout or timeout == float("inf"):
        raise InvalidInputError(
            f"timeout must be a positive number of seconds or None, not {timeout!r}"
        )
