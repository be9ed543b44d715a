"""The remote backend: a llama-server, our own server, or any OpenAI-compatible server.

``Options.remote`` is ``host:port`` or an ``http(s)://`` base URL. On connecting we ask
``/props`` once: a server that answers speaks llama-server's API (raw prompts through
``/completion``, tokenizer routes, every sampler); one that does not is treated as
OpenAI-only (``/v1/completions`` and ``/v1/chat/completions``, from ``/v1/models``).
Requests are always streamed; bodies and stream parsing live in :mod:`.requests`,
the I/O in :mod:`.io`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import time
from collections.abc import Sequence
from typing import Any

import httpx2

from ...errors import BackendError, InvalidInputError, LLMError, SessionClosedError
from ...metrics import Metrics
from ...wire import SSEDecoder
from ..base import GenerationRequest, RawItem, Vectors
from ..stream import RawStream
from .answers import error_from_response, info_from_models, info_from_props, model_name
from .io import EventLoopThread
from .requests import Call, Dialect, StreamDecoder, generation_call

__all__ = ["API_KEY_ENV", "RemoteBackend", "base_url"]

API_KEY_ENV = "LLM_INPROC_API_KEY"
"""Read for the key when ``Options.api_key`` is empty (the same variable our server reads)."""

_LOADING_WAIT = 60.0
"""How long to wait for a server that answers 503 "Loading model" before giving up."""


def base_url(remote: str) -> str:
    """The server's root URL from ``Options.remote`` (``host:port`` or a URL; ``/v1`` and a
    trailing slash are dropped, the OpenAI routes add it back)."""
    url = remote if "://" in remote else f"http://{remote}"
    url = url.rstrip("/")
    return url[: -len("/v1")] if url.endswith("/v1") else url


def api_key_from(options_key: str) -> str:
    return options_key or os.environ.get(API_KEY_ENV, "")


class RemoteBackend:
    """Generates through a server over HTTP; see the module docstring."""

    def __init__(
        self,
        url: str,
        *,
        api_key: str = "",
        name: str = "remote",
        trust_env: bool = True,
        connect_timeout: float = 10.0,
        read_timeout: float = 300.0,
    ) -> None:
        self.name = name
        self.url = url
        self._read_timeout = read_timeout
        self._connect_timeout = connect_timeout
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._client = httpx2.AsyncClient(
            headers=headers,
            timeout=httpx2.Timeout(read_timeout, connect=connect_timeout, write=30.0),
            limits=httpx2.Limits(max_connections=None, max_keepalive_connections=32),
            trust_env=trust_env,
        )
        self._io = EventLoopThread(f"llm-inproc-{name}")
        self._streams: set[_Exchange] = set()
        self._closed = False
        try:
            self._detect()
        except BaseException:
            self.close()
            raise

    # -- plain requests --------------------------------------------------------------------

    def _fail(self, e: httpx2.HTTPError, where: str) -> BackendError:
        """Our error for a transport failure (one place for every route)."""
        if isinstance(e, httpx2.ConnectTimeout):
            why = f"did not accept a connection within {self._connect_timeout:g} s"
        elif isinstance(e, httpx2.ConnectError):
            why = f"cannot be reached ({e}); check that it is running and Options.remote"
        elif isinstance(e, httpx2.ReadTimeout):
            why = f"sent nothing for {self._read_timeout:g} s"
        elif isinstance(e, (httpx2.RemoteProtocolError, httpx2.ReadError, httpx2.WriteError)):
            why = f"dropped the connection ({e}); it may have stopped, check its log"
        else:
            why = f"failed: {type(e).__name__}: {e}"
        return BackendError(f"the server at {self.url} {why} (asking {where})")

    async def _arequest(
        self, method: str, path: str, body: Any, accept: tuple[int, ...], read: float = 30.0
    ) -> httpx2.Response:
        where = self.url + path
        timeout = httpx2.Timeout(read, connect=self._connect_timeout)
        try:
            resp = await self._client.request(method, where, json=body, timeout=timeout)
        except httpx2.HTTPError as e:
            raise self._fail(e, where) from None
        if resp.status_code >= 400 and resp.status_code not in accept:
            raise error_from_response(resp.status_code, resp.content, where)
        return resp

    def _request(
        self, method: str, path: str, body: Any = None, *, accept: tuple[int, ...] = ()
    ) -> httpx2.Response:
        """The response; an error status not in ``accept`` raises our error for it."""
        if self._closed:
            raise SessionClosedError("the session is closed; create a new Session")
        return self._io.call(self._arequest(method, path, body, accept))

    def _json(self, resp: httpx2.Response) -> Any:
        try:
            return resp.json()
        except ValueError:
            raise BackendError(
                f"{resp.request.url} did not answer JSON; is Options.remote a llama-server or "
                "OpenAI-compatible server?"
            ) from None

    def _call(self, method: str, path: str, body: Any = None) -> Any:
        return self._json(self._request(method, path, body))

    def _detect(self) -> None:
        deadline = time.monotonic() + _LOADING_WAIT
        resp = self._request("GET", "/props", accept=(404, 503))
        while resp.status_code == 503 and time.monotonic() < deadline:
            time.sleep(0.25)  # 503 "Loading model": the server is starting
            resp = self._request("GET", "/props", accept=(404, 503))
        self.dialect: Dialect
        props: Any = None
        models: Any = None
        if resp.status_code == 200:
            self.dialect = "llama"
            props = self._json(resp)
            answer = self._request("GET", "/v1/models", accept=(404,))
            models = self._json(answer) if answer.status_code == 200 else None
            self.info = info_from_props(props, models, self.url)
        elif resp.status_code == 404:
            self.dialect = "openai"
            models = self._call("GET", "/v1/models")
            self.info = info_from_models(models, self.url)
        else:
            raise error_from_response(resp.status_code, resp.content, self.url + "/props")
        self.served_model: str | None = model_name(props, models) or None
        """The model the server runs, as it names it."""

    in_process = False
    conversations = None

    # -- generation --------------------------------------------------------------------------

    def _start(self, request: GenerationRequest) -> _Exchange:
        if self._closed:
            raise SessionClosedError("the session is closed; create a new Session")
        call = generation_call(request, self.dialect)
        decoder = StreamDecoder(
            call.route, started=time.monotonic(), want_probs=request.sampling.n_probs > 0
        )
        exchange = _Exchange(self, call, decoder)
        if not self._io.soon(exchange.start):
            raise SessionClosedError("the session is closed; create a new Session")
        return exchange

    def submit(self, request: GenerationRequest) -> RawStream:
        return self._start(request).stream

    # -- tokens ------------------------------------------------------------------------------

    def _llama_only(self, what: str) -> None:
        if self.dialect != "llama":
            raise BackendError(
                f"the server at {self.url} speaks only OpenAI's API, which cannot {what}; "
                "use a llama-server compatible server (llama-server, llm-inproc serve)"
            )

    def render(self, request: GenerationRequest) -> str:
        """The prompt text the server's chat template makes of ``request``."""
        if request.prompt is not None:
            return request.prompt
        self._llama_only("show the prompt its chat template makes")
        body = generation_call(request, "llama").body
        shown = ("messages", "tools", "tool_choice", "parallel_tool_calls", "chat_template_kwargs")
        data = self._call("POST", "/apply-template", {k: body[k] for k in shown if k in body})
        return str(data.get("prompt", ""))

    def count_tokens(self, request: GenerationRequest) -> int:
        if request.tokens is not None:
            return len(request.tokens)
        return len(self.tokenize(self.render(request), special=True))

    def tokenize(self, text: str, *, special: bool = True) -> list[int]:
        self._llama_only("count or list tokens (it has no /tokenize)")
        body = {"content": text, "add_special": special, "parse_special": special}
        tokens = self._call("POST", "/tokenize", body).get("tokens", [])
        return [int(t["id"]) if isinstance(t, dict) else int(t) for t in tokens]

    def detokenize(self, tokens: Sequence[int]) -> str:
        self._llama_only("turn tokens into text (it has no /detokenize)")
        return str(self._call("POST", "/detokenize", {"tokens": list(tokens)}).get("content", ""))

    # -- vectors -----------------------------------------------------------------------------

    def model_pooling(self) -> str | None:
        return None  # the server pools as it was started

    def embed(
        self, inputs: Sequence[str | Sequence[int]], pooling: str | None, *, truncate: bool
    ) -> Vectors:
        from .embed import remote_embed

        if truncate:
            raise InvalidInputError(
                "truncate=True needs the model in this process: llama-server refuses a text "
                "longer than its context; shorten the texts"
            )
        count = (lambda text: len(self.tokenize(text))) if self.dialect == "llama" else None
        return remote_embed(self._call_post, self.url, inputs, pooling, count)

    def rerank(self, query: str, documents: Sequence[str], *, truncate: bool) -> Vectors:
        from .embed import remote_rerank

        if truncate:
            raise InvalidInputError("truncate=True needs the model in this process")
        return remote_rerank(self._call_post, self.url, query, documents)

    def _call_post(self, path: str, body: Any) -> Any:
        """POST with the generation read timeout: a chunk of texts may take a while."""
        if self._closed:
            raise SessionClosedError("the session is closed; create a new Session")
        coro = self._arequest("POST", path, body, (), read=self._read_timeout)
        return self._json(self._io.call(coro))

    # -- state -------------------------------------------------------------------------------

    def health(self) -> str:
        """``"ok"`` when the server is ready, else what it says (e.g. ``"loading model"``)."""
        if self._closed:
            return "closed"
        resp = self._request("GET", "/health", accept=(404, 503))
        if resp.status_code == 404:  # an OpenAI-only server: ready when it lists its models
            self._request("GET", "/v1/models")
            return "ok"
        data = self._json(resp)
        if resp.status_code == 503:
            error = data.get("error") if isinstance(data, dict) else None
            message = error.get("message") if isinstance(error, dict) else None
            return str(message or "unavailable").lower()
        status = data.get("status") if isinstance(data, dict) else None
        return str(status) if status else "ok"

    def metrics(self) -> Metrics:
        resp = self._request("GET", "/metrics", accept=(404, 501))
        if resp.status_code != 200:
            raise BackendError(
                f"the server at {self.url} does not export metrics; start llama-server (or "
                "llm-inproc serve) with --metrics"
            )
        return Metrics.from_prometheus(resp.text)

    def close(self) -> None:
        """End running requests (with :class:`SessionClosedError`) and the connections."""
        if self._closed:
            return
        self._closed = True

        async def shutdown() -> None:
            for x in list(self._streams):
                x.abort(SessionClosedError("the session was closed while this request ran"))
            tasks = [x.task for x in self._streams if x.task is not None]
            await asyncio.gather(*tasks, return_exceptions=True)
            await self._client.aclose()

        with contextlib.suppress(LLMError, TimeoutError):
            self._io.call(shutdown(), timeout=15)
        self._io.stop()


class _Exchange:
    """One streamed request: its task on the private loop, and the stream it fills."""

    def __init__(self, backend: RemoteBackend, call: Call, decoder: StreamDecoder) -> None:
        self.backend = backend
        self.call = call
        self.decoder = decoder
        self.stream = RawStream(on_cancel=self.cancel)
        self.task: asyncio.Task[None] | None = None
        self._cancelled = False

    # On the private loop --------------------------------------------------------------------

    def start(self) -> None:
        if self._cancelled:
            self.stream.put(self.decoder.cancelled())
            return
        self.task = asyncio.get_running_loop().create_task(self._run())
        self.backend._streams.add(self)

    def abort(self, error: BaseException) -> None:
        self.stream.put(error)
        if self.task is not None:
            self.task.cancel()

    def _cancel_now(self) -> None:
        if self.task is None:
            self._cancelled = True
        elif not self.task.done():
            self.task.cancel()

    def _post(self, items: list[RawItem]) -> None:
        for item in items:
            self.stream.put(item)

    async def _run(self) -> None:
        backend, call, decoder = self.backend, self.call, self.decoder
        where = backend.url + call.path
        try:
            async with backend._client.stream("POST", where, json=call.body) as resp:
                if resp.status_code >= 400:
                    raise error_from_response(resp.status_code, await resp.aread(), where)
                if resp.headers.get("content-type", "").startswith("application/json"):
                    # A server that answers whole although asked to stream.
                    self._post(decoder.feed(json.loads(await resp.aread())))
                    if not decoder.done:
                        self._post(decoder.end_of_stream())
                    return
                sse = SSEDecoder()
                # Read to the end even after the final event, so the connection is reused.
                async for line in resp.aiter_lines():
                    event = sse.feed(line)
                    if event is not None:
                        self._post(decoder.feed(event))
                event = sse.flush()
                if event is not None:
                    self._post(decoder.feed(event))
                if not decoder.done:
                    self._post(decoder.end_of_stream())
        except asyncio.CancelledError:
            if not decoder.done:
                self.stream.put(decoder.cancelled())
            raise
        except LLMError as e:
            self.stream.put(e)
        except httpx2.HTTPError as e:
            self.stream.put(backend._fail(e, where))
        except json.JSONDecodeError as e:
            self.stream.put(BackendError(f"{where} sent a malformed event: {e}"))
        except Exception as e:  # never leave the consumer waiting
            error = BackendError(f"{where} failed: {type(e).__name__}: {e}")
            self.stream.put(error)
        finally:
            backend._streams.discard(self)

    # From any thread -------------------------------------------------------------------------

    def cancel(self) -> None:
        """Stop the request: its response is closed, so the server stops generating."""
        if not self.stream.closed and not self.backend._io.soon(self._cancel_now):
            self.stream.put(SessionClosedError("the session is closed"))
