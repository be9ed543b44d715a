"""The routes that do not generate: health, metrics, properties, slots, models, and the
tokenizer and template helpers (``/tokenize``, ``/detokenize``, ``/apply-template``)."""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any

import anyio.to_thread
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response

from ..backends.base import SlotInfo
from ..metrics import PROMETHEUS_CONTENT_TYPE
from ..sampling import Sampling
from .chat import parse_messages, parse_tools
from .conversation import chat_request, template_kwargs
from .errors import ApiError, invalid
from .parse import parse_json
from .prompts import tokenize
from .state import ServerState, state_of

__all__ = [
    "apply_template",
    "detokenize",
    "health",
    "metrics",
    "models",
    "props",
    "set_props",
    "slot_action",
    "slots",
    "tokenize_route",
]


async def health(request: Request) -> Response:
    state = state_of(request)
    if state.session is None:
        return state.not_ready().response()
    return JSONResponse({"status": "ok"})


async def metrics(request: Request) -> Response:
    state = state_of(request)
    if not state.settings.metrics:
        raise ApiError(
            501,
            "This server does not support metrics endpoint. Start it with `--metrics`",
            "not_supported_error",
        )
    return PlainTextResponse(state.metrics_page(), media_type=PROMETHEUS_CONTENT_TYPE)


def _params(state: ServerState) -> dict[str, Any]:
    d = state.settings.defaults
    out: dict[str, Any] = {}
    for f in dataclasses.fields(Sampling):
        value = getattr(Sampling(), f.name)
        out[f.name] = list(value) if isinstance(value, tuple) else value
    out.pop("logit_bias", None)
    out.update(
        n_predict=d.n_predict,
        max_tokens=d.n_predict,
        temperature=d.temperature,
        seed=0xFFFFFFFF if d.seed == -1 else d.seed,
        stream=False,
    )
    return out


def _slot(state: ServerState, info: SlotInfo) -> dict[str, Any]:
    """One slot in llama-server's shape: its task's fields once it has served one. With
    the slots sharing one unified KV cache, each may use the whole context (``n_ctx``)."""
    session = state.ready()
    out: dict[str, Any] = {
        "id": info.id,
        "n_ctx": session.model_info.n_ctx,
        "speculative": session.options.speculative not in ("", "none"),
        "is_processing": info.processing,
    }
    if info.task is not None:
        out.update(
            id_task=info.task,
            # llama-server's "prompt" is what the slot's cells hold: the prompt, then the
            # reply's tokens as they are evaluated.
            n_prompt_tokens=info.n_cached,
            n_prompt_tokens_processed=info.n_prompt_evaluated,
            n_prompt_tokens_cache=info.n_prompt_reused,
            state=info.state,
            params=_params(state),
            next_token=[
                {
                    "has_next_token": info.processing,
                    "has_new_line": False,
                    "n_remain": info.n_remain,
                    "n_decoded": info.n_decoded,
                }
            ],
        )
    return out


async def props(request: Request) -> Response:
    state = state_of(request)
    session = state.ready()
    info = session.model_info
    return JSONResponse(
        {
            "default_generation_settings": {"params": _params(state), "n_ctx": info.n_ctx},
            "total_slots": info.parallel,
            "model_alias": state.model_name,
            "model_path": state.model_path,
            "modalities": {"vision": False, "video": False, "audio": False},
            "endpoint_slots": state.settings.slots,
            "endpoint_props": state.settings.props,
            "endpoint_metrics": state.settings.metrics,
            "chat_template": state.settings.chat_template or info.chat_template or "",
            "build_info": "llm-inproc",
            "is_sleeping": False,
        }
    )


async def set_props(request: Request) -> Response:
    """``POST /props``: allowed with ``--props``; like llama-server's, it changes nothing."""
    state = state_of(request)
    if not state.settings.props:
        raise ApiError(
            501,
            "This server does not support changing global properties. Start it with `--props`",
            "not_supported_error",
        )
    parse_json(await request.body())
    return JSONResponse({"success": True})


async def slots(request: Request) -> Response:
    state = state_of(request)
    if not state.settings.slots:
        raise ApiError(
            501,
            "This server does not support slots endpoint. Start it with `--slots`",
            "not_supported_error",
        )
    session = state.ready()
    infos = session.slots()
    if request.query_params.get("fail_on_no_slot") and all(s.processing for s in infos):
        raise ApiError(503, "no slot available", "unavailable_error")
    return JSONResponse([_slot(state, s) for s in infos])


async def slot_action(request: Request) -> Response:
    """``POST /slots/{id}?action=save|restore|erase``, as llama-server: slots' conversations
    to and from files in ``--slot-save-path``."""
    state = state_of(request)
    directory = state.settings.slot_save_path
    if not directory:
        raise ApiError(
            501,
            "This server does not support slots action. Start it with `--slot-save-path`",
            "not_supported_error",
        )
    try:
        slot = int(request.path_params["id_slot"])
    except ValueError:
        raise invalid("Invalid slot ID") from None
    action = request.query_params.get("action", "")
    if action not in ("save", "restore", "erase"):
        raise invalid("Invalid action")
    session = state.ready()
    if action == "erase":
        n = await anyio.to_thread.run_sync(session.erase_slot, slot)
        return JSONResponse({"id_slot": slot, "n_erased": n})
    body = parse_json(await request.body())
    filename = body.get("filename")
    if not isinstance(filename, str) or not valid_filename(filename):
        raise invalid("Invalid filename")
    path = Path(directory) / filename
    t0 = time.perf_counter()
    if action == "save":
        done = await anyio.to_thread.run_sync(session.save_slot, slot, path)
        ms = round((time.perf_counter() - t0) * 1000, 3)
        return JSONResponse(
            {
                "id_slot": slot,
                "filename": filename,
                "n_saved": done.tokens,
                "n_written": done.bytes,
                "timings": {"save_ms": ms},
            }
        )
    if not path.is_file():
        raise invalid(f"Slot file {filename!r} not found in --slot-save-path")
    done = await anyio.to_thread.run_sync(session.restore_slot, slot, path)
    ms = round((time.perf_counter() - t0) * 1000, 3)
    return JSONResponse(
        {
            "id_slot": slot,
            "filename": filename,
            "n_restored": done.tokens,
            "n_read": done.bytes,
            "timings": {"restore_ms": ms},
        }
    )


def valid_filename(name: str) -> bool:
    """A plain file name inside the save directory (llama.cpp's ``fs_validate_filename``,
    without subdirectories): no separators, no ``..``, no control characters."""
    return (
        0 < len(name.encode()) <= 255
        and name not in (".", "..")
        and not name.startswith(".")
        and not any(c in name for c in '/\\:*?"<>|')
        and all(ord(c) >= 32 and ord(c) != 127 for c in name)
    )


async def models(request: Request) -> Response:
    state = state_of(request)
    info = state.ready().model_info
    name = state.model_name
    return JSONResponse(
        {
            "object": "list",
            "data": [
                {
                    "id": name,
                    "aliases": [state.settings.alias] if state.settings.alias else [],
                    "tags": list(state.settings.tags),
                    "object": "model",
                    "created": state.created,
                    "owned_by": "llamacpp",
                    "meta": {"n_ctx": info.n_ctx, "n_ctx_train": info.n_ctx_train},
                }
            ],
        }
    )


def _bool(body: dict[str, Any], name: str, default: bool) -> bool:
    value = body.get(name, default)
    if not isinstance(value, bool):
        raise invalid(f"Field '{name}': must be true or false")
    return value


async def tokenize_route(request: Request) -> Response:
    state = state_of(request)
    body = parse_json(await request.body())
    session = state.ready()
    content = body.get("content", "")
    if not isinstance(content, str):
        raise invalid("Field 'content': must be a string")
    add_special = _bool(body, "add_special", False)
    parse_special = _bool(body, "parse_special", True)
    with_pieces = _bool(body, "with_pieces", False)

    def run() -> list[Any]:  # a long text: off the event loop, as every prompt is
        tokens = tokenize(session, content, add_special=add_special, parse_special=parse_special)
        if not with_pieces:
            return tokens
        return [{"id": t, "piece": session.detokenize([t])} for t in tokens]

    return JSONResponse({"tokens": await anyio.to_thread.run_sync(run)})


async def detokenize(request: Request) -> Response:
    state = state_of(request)
    body = parse_json(await request.body())
    session = state.ready()
    tokens = body.get("tokens", [])
    if not isinstance(tokens, list) or not all(
        isinstance(t, int) and not isinstance(t, bool) for t in tokens
    ):
        raise invalid("Field 'tokens': must be an array of token ids")
    text = await anyio.to_thread.run_sync(session.detokenize, tokens)
    return JSONResponse({"content": text})


async def apply_template(request: Request) -> Response:
    state = state_of(request)
    body = parse_json(await request.body())
    session = state.ready()
    messages = parse_messages(body)
    tools = parse_tools(body)
    kwargs = template_kwargs(body)

    def run() -> str:
        req = chat_request(state, session, messages, Sampling(), tools, kwargs)
        return session.render(req)

    return JSONResponse({"prompt": await anyio.to_thread.run_sync(run)})
