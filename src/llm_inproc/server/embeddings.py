"""llama-server's embedding and reranking routes: ``/embedding`` and ``/embeddings`` (its
native shape), ``/v1/embeddings`` (OpenAI's), and ``/rerank``, ``/reranking``,
``/v1/rerank``, ``/v1/reranking``; on only with ``--embeddings`` (and ``--reranking``),
answering what llama-server answers otherwise. Requests are read as llama-server's
``handle_embeddings_impl`` and ``post_rerank`` read them; the JSON shapes live in
:mod:`llm_inproc.embeddings.wire`, shared with our HTTP client."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import anyio.to_thread
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from ..embeddings.batches import TextTooLongError
from ..embeddings.pooling import normalize
from ..embeddings.wire import native_response, oai_response, rerank_response
from .errors import ApiError, invalid
from .parse import parse_json
from .prompts import mixed_tokens
from .state import state_of

if TYPE_CHECKING:
    from ..session import Session
    from .state import ServerState

__all__ = ["routes"]


def _not_supported(message: str) -> ApiError:
    return ApiError(501, message, "not_supported_error")


def server_pooling(state: ServerState, session: Session) -> str:
    """``--pooling`` (rank with ``--reranking``), else the model's own, else none: as
    llama-server's context resolves it."""
    settings = state.settings
    if settings.reranking:
        return "rank"
    return settings.pooling or session.model_pooling or "none"


def _input(session: Session, item: Any) -> str | list[int]:
    """One input as ``tokenize_input_subprompt`` takes it: a string, token ids, token ids
    mixed with strings, or ``{"prompt_string": ...}``."""
    if isinstance(item, str):
        return item
    if isinstance(item, dict) and "prompt_string" in item:
        if item.get("multimodal_data"):
            raise invalid(
                "Multimodal data provided, but model does not support multimodal requests."
            )
        return _input(session, item["prompt_string"])
    if isinstance(item, list) and all(
        isinstance(p, str) or (isinstance(p, int) and not isinstance(p, bool)) for p in item
    ):
        return mixed_tokens(session, item)
    raise invalid(
        '"prompt" elements must be a string, a list of tokens, a JSON object containing a '
        "prompt string, or a list of mixed strings & tokens."
    )


def _inputs(session: Session, prompt: Any) -> list[str | list[int]]:
    if isinstance(prompt, list) and not any(
        isinstance(p, int) and not isinstance(p, bool) for p in prompt
    ):
        return [_input(session, p) for p in prompt]
    return [_input(session, prompt)]


def _model(body: dict[str, Any], state: ServerState) -> str:
    """The request's ``model``, else the served one (as llama-server's ``json_value``)."""
    model = body.get("model")
    return model if isinstance(model, str) else state.model_name


def _overflow(e: TextTooLongError, pooling: str) -> ApiError:
    """llama-server's answer for an input too long: a 500 where its pooling cannot split a
    text across batches (all but last), else a 400 naming both numbers."""
    if pooling != "last":
        return ApiError(
            500,
            f"input ({e.n_tokens} tokens) is too large to process. increase the context "
            f"size (current context size: {e.n_ctx})",
            "server_error",
        )
    return ApiError(
        400,
        f"request ({e.n_tokens} tokens) exceeds the available context size ({e.n_ctx} "
        "tokens), try increasing it",
        "exceed_context_size_error",
        n_prompt_tokens=e.n_tokens,
        n_ctx=e.n_ctx,
    )


async def _embeddings(request: Request, oai: bool) -> Response:
    state = state_of(request)
    settings = state.settings
    if not settings.embedding:
        raise _not_supported(
            "This server does not support embeddings. Start it with `--embeddings`"
        )
    session = state.ready()
    pooling = server_pooling(state, session)
    if oai and pooling == "none":
        raise invalid(
            "Pooling type 'none' is not OAI compatible. Please use a different pooling type"
        )
    body = parse_json(await request.body())
    if "input" in body:
        prompt = body["input"]
    elif "content" in body:
        oai = False  # "content" is not OpenAI's field: the native answer
        prompt = body["content"]
    else:
        raise invalid('"input" or "content" must be provided')
    use_base64 = False
    if "encoding_format" in body:
        fmt = body["encoding_format"]
        if fmt == "base64":
            use_base64 = True
        elif fmt != "float":
            raise invalid("The format to return the embeddings in. Can be either float or base64")
    p = body.get("embd_normalize", settings.embd_normalize)
    if isinstance(p, bool) or not isinstance(p, int):
        raise invalid("Field 'embd_normalize': must be an integer")

    def run() -> tuple[list[Any], list[int]]:
        inputs = _inputs(session, prompt)
        if not inputs:
            raise invalid('"input" must not be empty')
        empty = session.tokenize("") == []  # a model that adds no BOS: "" has no tokens
        if any(x == [] or (x == "" and empty) for x in inputs):
            raise invalid("Input content cannot be empty")
        try:
            got = session.embed_inputs(inputs, pooling=pooling)
        except TextTooLongError as e:
            raise _overflow(e, pooling) from None
        rows = got.rows if pooling == "none" else [normalize(r, p) for r in got.rows]
        return rows, got.tokens

    rows, tokens = await anyio.to_thread.run_sync(run)
    if oai:
        return JSONResponse(oai_response(_model(body, state), rows, tokens, use_base64=use_base64))
    return JSONResponse(native_response(rows))


async def embedding(request: Request) -> Response:
    return await _embeddings(request, oai=False)


async def oai_embeddings(request: Request) -> Response:
    return await _embeddings(request, oai=True)


async def rerank(request: Request) -> Response:
    state = state_of(request)
    settings = state.settings
    if not (settings.embedding and settings.reranking):
        raise _not_supported("This server does not support reranking. Start it with `--reranking`")
    session = state.ready()
    body = parse_json(await request.body())
    tei = "texts" in body
    if "query" not in body:
        raise invalid('"query" must be provided')
    query = body["query"]
    if not isinstance(query, str):
        raise invalid('"query" must be a string')
    documents = body.get("documents", body.get("texts", []))
    if not isinstance(documents, list) or not all(isinstance(d, str) for d in documents):
        documents = []
    if not documents:
        raise invalid('"documents" must be a non-empty string array')
    top_n = body.get("top_n", len(documents))
    if isinstance(top_n, bool) or not isinstance(top_n, int):
        top_n = len(documents)

    def run() -> tuple[list[float], list[int]]:
        try:
            got = session.rerank_scores(query, documents)
        except TextTooLongError as e:
            raise _overflow(e, "rank") from None
        return [float(r[0]) for r in got.rows], got.tokens

    scores, tokens = await anyio.to_thread.run_sync(run)
    answer = rerank_response(
        body, _model(body, state), scores, tokens, documents, tei=tei, top_n=top_n
    )
    return JSONResponse(answer)


def routes() -> list[BaseRoute]:
    """The routes, as llama-server registers them."""
    post = ["POST"]
    return [
        Route("/embedding", embedding, methods=post),
        Route("/embeddings", embedding, methods=post),
        Route("/v1/embeddings", oai_embeddings, methods=post),
        Route("/rerank", rerank, methods=post),
        Route("/reranking", rerank, methods=post),
        Route("/v1/rerank", rerank, methods=post),
        Route("/v1/reranking", rerank, methods=post),
    ]
