"""Command-line flags of ``llm-inproc serve``: llama-server's own names for what we support,
besides our long ones, so a script that starts llama-server can start this server instead."""

from __future__ import annotations

import argparse
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ..config import (
    DEFAULT_BATCH,
    DEFAULT_CACHE_RAM,
    KV_CACHE_TYPES,
    Options,
    template_kwargs_from_json,
)
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
    cors_origins: str = "*"
    """``--cors-origins``: ``*`` (with credentials: the request's origin echoed back),
    ``localhost`` (only local origins echoed), or a comma-separated list."""
    cors_methods: str = "GET, POST, DELETE, OPTIONS"
    cors_headers: str = "*"
    cors_credentials: bool = True
    tags: tuple[str, ...] = ()
    """``--tags``: informational model tags shown by ``/v1/models``."""
    props: bool = False
    """``--props``: ``POST /props`` is allowed (it changes nothing, as in llama-server)."""
    reasoning_format: str = "auto"
    """``--reasoning-format``, as given (shown by ``/props``; see its help)."""
    embedding: bool = False
    """``--embeddings``: serve ``/embedding``, ``/v1/embeddings`` (and, with ``reranking``,
    ``/rerank``). Completions keep working: embeddings use a context of their own."""
    pooling: str = ""
    """``--pooling``: none, mean, cls, last or rank; empty: the model's own, else none."""
    reranking: bool = False
    """``--reranking``: serve ``/rerank`` (rank pooling; implies ``embedding``)."""
    embd_normalize: int = 2
    """``--embd-normalize``: how pooled vectors are normalised when a request does not say
    (-1 none, 0 max absolute int16, 1 taxicab, 2 Euclidean, >2 p-norm)."""


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


class _Lacking(argparse.Action):
    """A llama-server flag whose feature we lack: a usage error that names the feature."""

    def __init__(self, option_strings: list[str], dest: str, feature: str, **kw: Any) -> None:
        kw.setdefault("nargs", 0)
        super().__init__(option_strings, dest=argparse.SUPPRESS, **kw)
        self.feature = feature

    def __call__(
        self, parser: argparse.ArgumentParser, ns: Any, values: Any, opt: Any = None
    ) -> None:
        parser.error(f"{opt}: {self.feature}")


_ALWAYS = "accepted for llama-server compatibility: always on in-process"


def _add_compat_flags(p: argparse.ArgumentParser) -> None:
    """llama-server flags that scripts pass to every server: those with no meaning here
    are accepted (and documented as such), those whose feature we lack are refused."""
    c = p.add_argument_group("llama-server compatibility")
    c.add_argument(
        "-kvu", "--kv-unified", action="store_true", help=_ALWAYS + " (slots share one KV cache)"
    )
    c.add_argument(
        "-no-kvu",
        "--no-kv-unified",
        action=_Lacking,
        feature="per-slot KV buffers are not supported: the slots always share one unified "
        "KV cache (drop the flag)",
        help="refused: the slots always share one KV cache",
    )
    c.add_argument("--swa-full", action="store_true", help=_ALWAYS + " (a full-size SWA cache)")
    c.add_argument(
        "-cb", "--cont-batching", action="store_true", help=_ALWAYS + " (continuous batching)"
    )
    c.add_argument(
        "-nocb",
        "--no-cont-batching",
        action="store_true",
        help="accepted: batching is always continuous, which changes no reply",
    )
    c.add_argument(
        "--context-shift",
        dest="context_shift",
        action="store_true",
        default=None,
        help="a reply that fills the context goes on, the older half of its conversation "
        "dropped (default: off: it ends with finish_reason length)",
    )
    c.add_argument(
        "--no-context-shift",
        dest="context_shift",
        action="store_false",
        help="end a reply that fills the context (the default)",
    )
    c.add_argument(
        "--cache-reuse",
        type=int,
        default=0,
        metavar="N",
        help="accepted as 0 only: cached prefixes are reused without KV shifting (default: 0)",
    )
    c.add_argument(
        "--offline",
        action="store_true",
        help="use only models already in the cache; never reach the Hub (sets HF_HUB_OFFLINE)",
    )
    c.add_argument(
        "--reasoning-format",
        choices=("auto", "none", "deepseek", "deepseek-legacy"),
        default="auto",
        help="where a chat reply's thinking goes, for templates that think (<think> ... "
        "</think>, found in the template): auto and deepseek put it in "
        "message.reasoning_content (streamed as delta.reasoning_content), deepseek-legacy "
        "also keeps it in the content, none leaves it in the content as written; a request's "
        "reasoning_format overrides it (default: auto)",
    )
    c.add_argument(
        "--sleep-idle-seconds",
        type=int,
        default=-1,
        metavar="SECONDS",
        help="accepted as -1 only: the model stays loaded (default: -1)",
    )


ENV_FLAGS: dict[str, tuple[str, str | None]] = {
    "LLAMA_ARG_MODEL": ("--model", None),
    "LLAMA_ARG_CTX_SIZE": ("--ctx-size", None),
    "LLAMA_ARG_THREADS": ("--threads", None),
    "LLAMA_ARG_N_GPU_LAYERS": ("--n-gpu-layers", None),
    "LLAMA_ARG_N_PARALLEL": ("--parallel", None),
    "LLAMA_ARG_BATCH": ("--batch-size", None),
    "LLAMA_ARG_UBATCH": ("--ubatch-size", None),
    "LLAMA_ARG_FLASH_ATTN": ("--flash-attn", None),
    "LLAMA_ARG_REPACK": ("--repack", "--no-repack"),
    "LLAMA_ARG_CACHE_RAM": ("--cache-ram", None),
    "LLAMA_ARG_CACHE_TYPE_K": ("--cache-type-k", None),
    "LLAMA_ARG_CACHE_TYPE_V": ("--cache-type-v", None),
    "LLAMA_ARG_SPEC_TYPE": ("--spec-type", None),
    "LLAMA_ARG_ALIAS": ("--alias", None),
    "LLAMA_ARG_CHAT_TEMPLATE": ("--chat-template", None),
    "LLAMA_ARG_CHAT_TEMPLATE_FILE": ("--chat-template-file", None),
    "LLAMA_ARG_CHAT_TEMPLATE_KWARGS": ("--chat-template-kwargs", None),
    "LLAMA_ARG_REASONING": ("--reasoning", None),
    "LLAMA_ARG_THINK_BUDGET": ("--reasoning-budget", None),
    "LLAMA_ARG_JINJA": ("--jinja", None),
    "LLAMA_ARG_HOST": ("--host", None),
    "LLAMA_ARG_PORT": ("--port", None),
    "LLAMA_ARG_RPC": ("--rpc", None),
    "LLAMA_ARG_TENSOR_SPLIT": ("--tensor-split", None),
    "LLAMA_API_KEY": ("--api-key", None),
    "LLAMA_ARG_ENDPOINT_METRICS": ("--metrics", None),
    "LLAMA_ARG_ENDPOINT_SLOTS": ("--slots", "--no-slots"),
    "LLAMA_ARG_ENDPOINT_PROPS": ("--props", None),
    "LLAMA_ARG_N_PREDICT": ("--n-predict", None),
    "LLAMA_ARG_TEMPERATURE": ("--temp", None),
    "LLAMA_ARG_KV_UNIFIED": ("--kv-unified", "--no-kv-unified"),
    "LLAMA_ARG_SWA_FULL": ("--swa-full", None),
    "LLAMA_ARG_CONTEXT_SHIFT": ("--context-shift", "--no-context-shift"),
    "LLAMA_ARG_CACHE_REUSE": ("--cache-reuse", None),
    "LLAMA_ARG_CONT_BATCHING": ("--cont-batching", "--no-cont-batching"),
    "LLAMA_ARG_OFFLINE": ("--offline", None),
    "LLAMA_ARG_THINK": ("--reasoning-format", None),
    "LLAMA_ARG_CORS_ORIGINS": ("--cors-origins", None),
    "LLAMA_ARG_CORS_CREDENTIALS": ("--cors-credentials", "--no-cors-credentials"),
    "LLAMA_ARG_TAGS": ("--tags", None),
    "LLAMA_ARG_UI": ("--webui", "--no-webui"),
    "LLAMA_ARG_STATIC_PATH": ("--path", None),
    "LLAMA_ARG_EMBEDDINGS": ("--embeddings", None),
    "LLAMA_ARG_POOLING": ("--pooling", None),
    "LLAMA_ARG_RERANKING": ("--reranking", None),
}
"""The environment variables llama-server reads, as the flag each stands for (a switch's
on and off forms). A flag on the command line beats its variable, as in llama-server."""

_TRUE = ("on", "enabled", "true", "1")
_FALSE = ("off", "disabled", "false", "0")


def _env_defaults(p: argparse.ArgumentParser, environ: Mapping[str, str]) -> dict[str, Any]:
    """Defaults for ``p`` from llama-server's environment variables; a bad value is a usage
    error naming the variable."""
    actions = p._option_string_actions  # argparse has no public lookup by option string
    out: dict[str, Any] = {}
    for var, (on, off) in ENV_FLAGS.items():
        value = environ.get(var)
        if value is None or on not in actions:
            continue
        action = actions[on]
        if action.nargs == 0 and not isinstance(action, argparse.BooleanOptionalAction):
            if value in _TRUE:
                chosen = action
            elif value in _FALSE and off is not None:
                chosen = actions[off]
            elif value in _FALSE:
                continue
            else:
                p.error(f"environment variable {var}={value!r}: expected one of {_TRUE + _FALSE}")
            if isinstance(chosen, _Lacking):
                p.error(f"environment variable {var}={value}: {chosen.feature}")
            out[chosen.dest] = (
                True if isinstance(chosen, argparse._StoreTrueAction) else chosen.const
            )
            continue
        if isinstance(action, argparse.BooleanOptionalAction):
            if value not in _TRUE + _FALSE:
                p.error(f"environment variable {var}={value!r}: expected one of {_TRUE + _FALSE}")
            out[action.dest] = value in _TRUE
            continue
        try:
            converted = action.type(value) if callable(action.type) else value
        except ValueError:
            p.error(f"environment variable {var}={value!r}: not a valid value for {on}")
        if action.choices is not None and converted not in action.choices:
            choices = ", ".join(map(str, action.choices))
            p.error(f"environment variable {var}={value!r}: use one of {choices}")
        out[action.dest] = converted
    return out


def _add_embedding_flags(p: argparse.ArgumentParser) -> None:
    """llama-server's embedding and reranking switches."""
    e = p.add_argument_group("embeddings and reranking")
    e.add_argument(
        "--embedding",
        "--embeddings",
        dest="embedding",
        action="store_true",
        help="serve /embedding and /v1/embeddings (completions keep working: embeddings use "
        "a context of their own) (default: off)",
    )
    e.add_argument(
        "--pooling",
        choices=("none", "mean", "cls", "last", "rank"),
        default="",
        help="pooling of embeddings (default: the model's own, else none: one vector per "
        "token, which /v1/embeddings refuses as llama-server does)",
    )
    e.add_argument(
        "--rerank",
        "--reranking",
        dest="reranking",
        action="store_true",
        help="serve /rerank with a reranker GGUF (rank pooling; implies --embeddings) "
        "(default: off)",
    )
    e.add_argument(
        "--embd-normalize",
        dest="embd_normalize",
        type=int,
        default=2,
        metavar="N",
        help="normalisation of pooled embeddings when a request gives no embd_normalize: -1 "
        "none, 0 max absolute int16, 1 taxicab, 2 Euclidean, >2 p-norm (default: 2)",
    )


def _add_rpc_flags(p: argparse.ArgumentParser) -> None:
    """``--rpc`` and ``-ts``: layers on llama.cpp rpc-server instances, as llama-server."""
    from ..cli._rpc import add_rpc_flags

    add_rpc_flags(p.add_argument_group("RPC (a model spread over several machines)"))


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
        "-b",
        "--batch-size",
        dest="batch_size",
        type=int,
        default=None,
        help=f"logical batch size (default: {DEFAULT_BATCH}; llama-server's 2048 evaluates "
        "the same, as each call takes at most the ubatch)",
    )
    m.add_argument(
        "-ub",
        "--ubatch-size",
        dest="ubatch_size",
        type=int,
        default=None,
        help=f"physical batch size: most tokens per llama.cpp call (default: {DEFAULT_BATCH})",
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
        "--chat-template-kwargs",
        default="",
        metavar="JSON",
        help="a JSON object of variables every chat template rendering gets, e.g. "
        "'{\"enable_thinking\": false}' (as llama-server) (default: none)",
    )
    m.add_argument(
        "-rea",
        "--reasoning",
        choices=("on", "off", "auto"),
        default="auto",
        help="whether a thinking template thinks: off renders it with enable_thinking "
        "false (as llama-server) (default: auto, the template's own)",
    )
    m.add_argument(
        "--reasoning-budget",
        type=int,
        default=-1,
        metavar="N",
        help="tokens a reply may think: -1 unrestricted, 0 none (the template renders with "
        "enable_thinking false); a budget in between is refused (default: -1)",
    )
    m.add_argument(
        "--jinja",
        "--no-jinja",
        action="store_true",
        help="accepted for llama-server compatibility: chat templates always run in Jinja, "
        "so tools (tools, tool_choice) always work",
    )
    _add_compat_flags(p)
    _add_embedding_flags(p)
    _add_rpc_flags(p)
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
        "--cors-origins",
        default="*",
        metavar="ORIGINS",
        help="comma-separated origins allowed by CORS; 'localhost' allows only local ones "
        "(default: *, any origin, echoed back with credentials)",
    )
    s.add_argument(
        "--cors-methods",
        default=ServerSettings.cors_methods,
        metavar="METHODS",
        help=f"methods allowed on a CORS preflight (default: {ServerSettings.cors_methods})",
    )
    s.add_argument(
        "--cors-headers",
        default="*",
        metavar="HEADERS",
        help="headers allowed on a CORS preflight (default: *)",
    )
    s.add_argument(
        "--cors-credentials",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="allow credentials on CORS requests (default: on)",
    )
    s.add_argument(
        "--tags",
        default="",
        metavar="TAGS",
        help="comma-separated model tags shown by /v1/models (informational) (default: none)",
    )
    s.add_argument(
        "--props",
        action="store_true",
        help="allow POST /props (as llama-server, it changes nothing yet) (default: off)",
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
    p.set_defaults(**_env_defaults(p, os.environ))


def _save_dir(path: str) -> str:
    """``--slot-save-path``, created if missing (llama-server creates it too)."""
    if not path:
        return ""
    try:
        os.makedirs(path, exist_ok=True)
    except OSError as e:
        raise InvalidInputError(f"--slot-save-path {path!r} cannot be created: {e}") from None
    return path


def _template_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    """``--chat-template-kwargs`` as an object, with ``--reasoning``'s and
    ``--reasoning-budget``'s ``enable_thinking``."""
    kwargs: dict[str, Any] = {}
    if args.chat_template_kwargs:
        kwargs = template_kwargs_from_json(args.chat_template_kwargs, "--chat-template-kwargs")
    if args.reasoning != "auto":
        kwargs["enable_thinking"] = args.reasoning == "on"
    if args.reasoning_budget == 0:
        kwargs["enable_thinking"] = False
    elif args.reasoning_budget != -1:
        raise InvalidInputError(
            f"--reasoning-budget {args.reasoning_budget}: a thinking budget in tokens is not "
            "supported; use 0 (no thinking) or -1 (unrestricted)"
        )
    return kwargs


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


def _check_compat(args: argparse.Namespace) -> None:
    """Values of the compatibility flags that ask for a feature we lack; ``--offline``."""
    if args.cache_reuse != 0:
        raise InvalidInputError(
            f"--cache-reuse {args.cache_reuse}: reusing cached chunks by KV shifting is not "
            "supported (cached prefixes are reused without it); drop the flag or pass 0"
        )
    if args.sleep_idle_seconds != -1:
        raise InvalidInputError(
            f"--sleep-idle-seconds {args.sleep_idle_seconds}: sleeping when idle is not "
            "supported (the model stays loaded); drop the flag or pass -1"
        )
    if args.offline:
        os.environ["HF_HUB_OFFLINE"] = "1"


def _apply_rpc(args: argparse.Namespace, opts: Options) -> None:
    """The server holds the model itself, as llama-server does: with ``--rpc``, a dead
    rpc-server ends this server process (llama.cpp aborts), never a client's."""
    from ..cli._rpc import apply_rpc_flags

    apply_rpc_flags(args, opts)
    if opts.rpc_servers:
        opts.backend = "inproc"


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
        "context_shift",
        "batch_size",
        "ubatch_size",
        "cache_ram",
        "cache_type_k",
        "cache_type_v",
        "speculative",
        "spec_ngram_size_n",
        "spec_ngram_size_m",
    ):
        if getattr(args, name) is not None:
            setattr(opts, name, getattr(args, name))
    _apply_rpc(args, opts)
    opts.chat_template_kwargs = _template_kwargs(args)
    opts.validate()
    _check_compat(args)
    if not 0 <= args.port <= 65535:
        raise InvalidInputError(f"--port {args.port} is not a TCP port; use 1 to 65535")
    raw_key = args.api_key if args.api_key is not None else os.environ.get(API_KEY_ENV, "")
    keys = tuple(k for k in (k.strip() for k in raw_key.split(",")) if k)
    if args.n_predict < -1:
        raise InvalidInputError(f"--n-predict {args.n_predict} is invalid; use -1 or more")
    if args.static_path and not os.path.isdir(args.static_path):
        # Checked here, not when the route is built: a typo must stop the server at start.
        raise InvalidInputError(
            f"--path {args.static_path}: no such directory; give the directory whose files "
            "to serve at / (its index.html is the page)"
        )
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
        cors_origins=args.cors_origins,
        cors_methods=args.cors_methods,
        cors_headers=args.cors_headers,
        cors_credentials=args.cors_credentials,
        tags=tuple(t for t in (t.strip() for t in args.tags.split(",")) if t),
        props=args.props,
        reasoning_format=args.reasoning_format,
        embedding=args.embedding or args.reranking,
        pooling="rank" if args.reranking else args.pooling,
        reranking=args.reranking or (args.embedding and args.pooling == "rank"),
        embd_normalize=args.embd_normalize,
        webui=args.webui,
        static_path=args.static_path,
        defaults=Defaults(n_predict=args.n_predict, temperature=args.temp, seed=args.seed),
    )
