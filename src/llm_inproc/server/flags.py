"""Command-line flags of ``llm-inproc serve``: llama-server's own names for what we support,
besides our long ones, so a script that starts llama-server can start this server instead."""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass, field
from typing import Any

from ..config import DEFAULT_CACHE_RAM, KV_CACHE_TYPES, Options
from ..errors import InvalidInputError
from ..sampling import Sampling
from .parse import Defaults

__all__ = ["API_KEY_ENV", "ServerSettings", "add_server_flags", "settings_from_args"]

API_KEY_ENV = "LLM_INPROC_API_KEY"
"""The environment variable read for the API key when ``--api-key`` is not given."""


@dataclass(frozen=True)
class ServerSettings:
    """Everything the server needs besides the Session it serves."""

    options: Options
    cache_dir: str | None = None
    host: str = "127.0.0.1"
    port: int = 8080
    api_keys: tuple[str, ...] = ()
    """Accepted keys; empty: no authentication."""
    alias: str = ""
    """The model name shown in responses and ``/v1/models`` (default: the ``-m`` value)."""
    metrics: bool = False
    slots: bool = True
    slot_save_path: str = ""
    """Directory for ``POST /slots/{id}?action=save|restore`` files; empty: actions off."""
    chat_template: str = ""
    """A Jinja template or a format name (chatml, gemma, llama3, phi3) overriding the model's."""
    defaults: Defaults = field(default_factory=Defaults)
    webui: bool = True
    """Serve the chat page at ``/`` (``--no-webui``: 404 there)."""
    static_path: str = ""
    """``--path DIR``: serve the files of DIR at ``/`` instead of the packaged page."""


def unsupported(unknown: list[str]) -> str:
    """The usage error for arguments no flag took (llama-server flags we do not support)."""
    flags = [a for a in unknown if a.startswith("-")] or unknown
    return (
        f"unsupported flag {' '.join(flags)}: this llama-server flag (or argument) is not "
        "supported by llm-inproc's server; see --help for the ones that are"
    )


def _refuse_unknown(p: argparse.ArgumentParser) -> None:
    """Name an unknown flag as an unsupported llama-server one, also where ``p`` is a
    subcommand's parser (``llm-inproc serve``), whose leftovers argparse would otherwise
    report from the main parser as bare "unrecognized arguments"."""
    parse_known = p.parse_known_args

    def parse_known_args(
        args: Any = None, namespace: Any = None
    ) -> tuple[argparse.Namespace, list[str]]:
        ns, unknown = parse_known(args, namespace)
        if unknown:
            p.error(unsupported(unknown))
        return ns, unknown

    p.parse_known_args = parse_known_args  # type: ignore[method-assign,assignment]


def add_server_flags(p: argparse.ArgumentParser) -> None:
    _refuse_unknown(p)
    m = p.add_argument_group("model (llama-server's short flags work too)")
    m.add_argument(
        "-m",
        "--model",
        default=None,
        help="hf: reference or local .gguf path (default: the embedded SmolLM2-135M-Instruct)",
    )
    m.add_argument(
        "-c",
        "--ctx-size",
        "--context-length",
        dest="context_length",
        type=int,
        default=None,
        help="context size in tokens, shared by the parallel slots (default: 0, the model's "
        "trained length capped at 8192)",
    )
    m.add_argument(
        "-t", "--threads", type=int, default=None, help="CPU threads (default: all physical cores)"
    )
    m.add_argument(
        "-ngl",
        "--n-gpu-layers",
        "--gpu-layers",
        dest="gpu_layers",
        type=int,
        default=None,
        help="layers to offload to a GPU: -1 all (default), 0 none",
    )
    m.add_argument(
        "-np", "--parallel", type=int, default=None, help="requests generated at once (default: 4)"
    )
    m.add_argument(
        "-fa",
        "--flash-attn",
        "--flash-attention",
        dest="flash_attention",
        choices=("on", "off", "auto"),
        default="auto",
        help="llama.cpp's flash attention (default: auto, on when layers run on a GPU)",
    )
    m.add_argument(
        "--repack",
        dest="repack",
        action="store_const",
        const=True,
        default=None,
        help="repack weights for the CPU's fast kernels (default: auto, decided by a one-time "
        "probe that turns it off on CPUs that report AMX but cannot run it)",
    )
    m.add_argument(
        "-nr",
        "--no-repack",
        dest="repack",
        action="store_const",
        const=False,
        help="do not repack weights (as llama-server's -nr)",
    )
    m.add_argument(
        "-cram",
        "--cache-ram",
        dest="cache_ram",
        type=int,
        default=None,
        help="MiB of host memory for conversations moved out of the slots, so a returning "
        f"user's next turn evaluates only the new text (default: {DEFAULT_CACHE_RAM}, -1 no "
        "limit, 0 off)",
    )
    m.add_argument(
        "-ctk",
        "--cache-type-k",
        dest="cache_type_k",
        choices=KV_CACHE_TYPES,
        default=None,
        help="KV cache type of the keys (default: f16)",
    )
    m.add_argument(
        "-ctv",
        "--cache-type-v",
        dest="cache_type_v",
        choices=KV_CACHE_TYPES,
        default=None,
        help="KV cache type of the values (default: f16; a quantized type needs flash attention)",
    )
    m.add_argument(
        "--spec-type",
        dest="speculative",
        choices=("none", "ngram-simple"),
        default=None,
        help="speculative decoding without a draft model (default: none)",
    )
    m.add_argument(
        "--spec-ngram-simple-size-n",
        dest="spec_ngram_size_n",
        type=int,
        default=None,
        help="tokens looked up for an ngram-simple draft (default: 12)",
    )
    m.add_argument(
        "--spec-ngram-simple-size-m",
        dest="spec_ngram_size_m",
        type=int,
        default=None,
        help="most tokens drafted per step (default: 16)",
    )
    m.add_argument(
        "--slot-save-path",
        default="",
        metavar="DIR",
        help="directory where POST /slots/ID?action=save|restore keeps slots' conversations "
        "(default: off)",
    )
    m.add_argument(
        "--max-pending", type=int, default=None, help="requests that may wait (default: 64)"
    )
    m.add_argument(
        "--cache-dir", default=None, help="(default: $LLM_INPROC_CACHE or the user cache dir)"
    )
    m.add_argument(
        "--alias", default="", help="model name shown to clients (default: the -m value)"
    )
    m.add_argument(
        "--chat-template",
        default="",
        help="a Jinja chat template, or chatml, gemma, llama3, phi3 (default: the GGUF's own)",
    )
    m.add_argument(
        "--chat-template-file",
        default="",
        metavar="FILE",
        help="a file holding the Jinja chat template to use instead of the GGUF's (as "
        "llama-server; beats --chat-template) (default: none)",
    )
    m.add_argument(
        "--jinja",
        "--no-jinja",
        action="store_true",
        help="accepted for llama-server compatibility: chat templates always run in Jinja, "
        "so tools (tools, tool_choice) always work",
    )
    s = p.add_argument_group("server")
    s.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1)")
    s.add_argument("--port", type=int, default=8080, help="port to listen on (default: 8080)")
    s.add_argument(
        "--api-key",
        default=None,
        help=f"required key, comma-separated for several (default: ${API_KEY_ENV}, else none)",
    )
    s.add_argument(
        "--webui",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="serve the chat page at / (default: on; --no-webui answers 404 there)",
    )
    s.add_argument(
        "--path",
        dest="static_path",
        default="",
        metavar="DIR",
        help="serve static files from DIR at / instead of the packaged page, as llama-server "
        "(e.g. llama.cpp's own web UI) (default: none)",
    )
    s.add_argument(
        "--metrics", action="store_true", help="serve Prometheus /metrics (default: off)"
    )
    s.add_argument(
        "--slots",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="serve /slots (default: on)",
    )
    g = p.add_argument_group("sampling defaults")
    g.add_argument(
        "-n",
        "--n-predict",
        "--predict",
        dest="n_predict",
        type=int,
        default=-1,
        help="tokens to generate; -1: until the model stops (default: -1)",
    )
    g.add_argument(
        "--temp",
        "--temperature",
        dest="temp",
        type=float,
        default=Sampling.temperature,
        help=f"temperature of requests that give none; 0 is greedy (default: "
        f"{Sampling.temperature})",
    )
    g.add_argument(
        "-s",
        "--seed",
        type=int,
        default=-1,
        help="seed of requests that give none; -1: random (default: -1)",
    )


def _save_dir(path: str) -> str:
    """``--slot-save-path``, created if missing (llama-server creates it too)."""
    if not path:
        return ""
    try:
        os.makedirs(path, exist_ok=True)
    except OSError as e:
        raise InvalidInputError(f"--slot-save-path {path!r} cannot be created: {e}") from None
    return path


def _chat_template(args: argparse.Namespace) -> str:
    """``--chat-template-file``'s text (an unreadable or empty file is refused at startup),
    else ``--chat-template``."""
    path = args.chat_template_file
    if not path:
        return str(args.chat_template)
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except FileNotFoundError:
        raise InvalidInputError(
            f"--chat-template-file {path}: no such file; check the path"
        ) from None
    except OSError as e:
        raise InvalidInputError(
            f"--chat-template-file {path}: cannot read it ({e.strerror or e})"
        ) from None
    except UnicodeDecodeError:
        raise InvalidInputError(f"--chat-template-file {path}: not UTF-8 text") from None
    if not text.strip():
        raise InvalidInputError(
            f"--chat-template-file {path}: the file is empty; it must hold a Jinja chat template"
        )
    return text


def settings_from_args(args: argparse.Namespace) -> ServerSettings:
    """Settings from parsed flags (the API key falls back to the environment)."""
    opts = Options(model=args.model or "")
    if args.context_length is not None:
        opts.context_length = args.context_length
    if args.threads is not None:
        opts.threads = args.threads
    if args.gpu_layers is not None:
        opts.gpu_layers = args.gpu_layers
    if args.parallel is not None:
        opts.parallel = args.parallel
    if args.max_pending is not None:
        opts.max_pending = args.max_pending
    opts.flash_attention = {"on": True, "off": False, "auto": None}[args.flash_attention]
    opts.repack = args.repack
    for name in (
        "cache_ram",
        "cache_type_k",
        "cache_type_v",
        "speculative",
        "spec_ngram_size_n",
        "spec_ngram_size_m",
    ):
        if getattr(args, name) is not None:
            setattr(opts, name, getattr(args, name))
    opts.validate()
    if not 0 <= args.port <= 65535:
        raise InvalidInputError(f"--port {args.port} is not a TCP port; use 1 to 65535")
    raw_key = args.api_key if args.api_key is not None else os.environ.get(API_KEY_ENV, "")
    keys = tuple(k for k in (k.strip() for k in raw_key.split(",")) if k)
    if args.n_predict < -1:
        raise InvalidInputError(f"--n-predict {args.n_predict} is invalid; use -1 or more")
    return ServerSettings(
        options=opts,
        cache_dir=args.cache_dir,
        host=args.host,
        port=args.port,
        api_keys=keys,
        alias=args.alias,
        metrics=args.metrics,
        slots=args.slots,
        slot_save_path=_save_dir(args.slot_save_path),
        chat_template=_chat_template(args),
        webui=args.webui,
        static_path=args.static_path,
        defaults=Defaults(n_predict=args.n_predict, temperature=args.temp, seed=args.seed),
    )
