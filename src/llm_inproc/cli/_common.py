"""What the model-running commands share: sampling flags, the model and configuration
they choose, building a Session from flags, streaming a reply to stdout, metrics as JSON.

Precedence, for the model: ``--model``, then ``$LLM_INPROC_MODEL``, then the ``--config``
file's ``llm.model``, then the embedded default. Every other flag given overrides the
config file's value, which overrides the built-in default.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
from collections.abc import Callable, Iterable
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..sampling import Sampling
from . import MODEL_ENV, checked_type, flash_attention

if TYPE_CHECKING:
    from ..config import Config, KnownLLM, Options
    from ..metrics import Metrics
    from ..session import Session

__all__ = [
    "DEFAULT_MAX_TOKENS",
    "DEFAULT_TEMPERATURE",
    "add_sampling_flags",
    "chosen_model",
    "cli_config",
    "metrics_dict",
    "sampling_kwargs",
    "session_from_args",
    "session_options",
    "stream_to_stdout",
]

DEFAULT_MAX_TOKENS = 512
"""Bounded, so the first command a user runs ends even when a model never stops."""
DEFAULT_TEMPERATURE = Sampling.temperature
"""The library's default (llama-server's and Ollama's): varied but coherent replies."""

# Sampling flags whose value goes to the Sampling field of the same name when given.
_SAMPLING_FLAGS = ("top_k", "top_p", "min_p", "repeat_penalty")
_GIVEN = "_given_flags"


class _Given(argparse.Action):
    """Store the value and note that the user gave it, so it beats a ``--config`` file's
    value while an untouched flag's default does not."""

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: Any,
        option_string: str | None = None,
    ) -> None:
        setattr(namespace, self.dest, values)
        vars(namespace).setdefault(_GIVEN, set()).add(self.dest)


def _sampling_value(name: str, convert: Callable[[str], Any]) -> Callable[[str], Any]:
    """A flag checked as ``Sampling.<name>`` is: ``--top-p 2`` is refused while parsing."""

    def check(value: Any) -> None:
        fields: dict[str, Any] = {name: (value,) if name == "stop" else value}
        Sampling(**fields)

    return checked_type(convert, check)


def add_sampling_flags(parser: argparse.ArgumentParser) -> None:
    """The sampling flags, with the Session's meanings; ``sampling_kwargs`` reads them."""

    g = parser.add_argument_group("sampling (unset: the --config file's, else llama-server's)")
    g.add_argument(
        "--max-tokens",
        type=_sampling_value("max_tokens", int),
        action=_Given,
        default=DEFAULT_MAX_TOKENS,
        help="reply length limit; 0: until the model stops or the context is full",
    )
    g.add_argument(
        "--temperature",
        type=_sampling_value("temperature", float),
        action=_Given,
        default=DEFAULT_TEMPERATURE,
        help="0 is greedy; 0.8, as llama-server and Ollama, varies replies but keeps a "
        "small model coherent",
    )
    g.add_argument(
        "--seed",
        type=_sampling_value("seed", int),
        action=_Given,
        default=0,
        help="0 is random; fix it to repeat a reply",
    )
    g.add_argument(
        "--top-k",
        type=_sampling_value("top_k", int),
        help=f"keep the k most likely tokens; 0 keeps all (default: {Sampling.top_k})",
    )
    g.add_argument(
        "--top-p",
        type=_sampling_value("top_p", float),
        help="keep the most likely tokens whose probabilities add up to p; 1 disables "
        f"(default: {Sampling.top_p})",
    )
    g.add_argument(
        "--min-p",
        type=_sampling_value("min_p", float),
        help=f"drop tokens below min-p times the top one's probability (default: {Sampling.min_p})",
    )
    g.add_argument(
        "--repeat-penalty",
        type=_sampling_value("repeat_penalty", float),
        help="divide recently seen tokens' logits by this; 1 disables "
        f"(default: {Sampling.repeat_penalty})",
    )
    g.add_argument(
        "--stop",
        action="append",
        type=_sampling_value("stop", str),
        metavar="TEXT",
        help="end the reply at this text, not shown; repeat for several (default: none)",
    )
    shape = g.add_mutually_exclusive_group()
    shape.add_argument(
        "--json-schema",
        metavar="FILE",
        help="a JSON Schema file; the reply is JSON valid for it (default: none)",
    )
    shape.add_argument(
        "--grammar",
        metavar="FILE",
        help="a GBNF grammar file (root rule 'root') the reply follows (default: none)",
    )


def _given(args: argparse.Namespace) -> set[str]:
    given: set[str] = vars(args).get(_GIVEN, set())
    return given


def _read_text(flag: str, path: str) -> str:
    from ..errors import InvalidInputError

    try:
        return Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InvalidInputError(f"{flag} {path}: no such file; check the path") from None
    except OSError as e:
        raise InvalidInputError(f"{flag} {path}: cannot read it ({e.strerror or e})") from None
    except UnicodeDecodeError:
        raise InvalidInputError(f"{flag} {path}: not UTF-8 text") from None


def _json_schema(path: str) -> dict[str, Any]:
    from ..errors import InvalidInputError

    try:
        schema = json.loads(_read_text("--json-schema", path))
    except json.JSONDecodeError as e:
        raise InvalidInputError(
            f"--json-schema {path}: invalid JSON at line {e.lineno} column {e.colno}: {e.msg}"
        ) from None
    if not isinstance(schema, dict):
        raise InvalidInputError(
            f"--json-schema {path}: expected a JSON object (a JSON Schema), "
            f"got {type(schema).__name__}"
        )
    return schema


def sampling_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    """The keyword arguments of ``Session.prompt`` the sampling flags set: ``max_tokens``,
    ``seed``, ``temperature`` and ``sampling`` (a :class:`Sampling` with only what the
    user gave changed from the ``--config`` file's or llama-server's defaults).

    Call it before loading the model: it reads the schema and grammar files and the
    config file, and raises :class:`InvalidInputError` naming the one that is wrong.
    """
    from ..errors import InvalidInputError

    config = cli_config(args)
    base = config.options.sampling if config is not None else Sampling()
    given = _given(args)
    changes: dict[str, Any] = {}
    for name in _SAMPLING_FLAGS:
        value = getattr(args, name, None)
        if value is not None:
            changes[name] = value
    if getattr(args, "stop", None):
        changes["stop"] = tuple(args.stop)
    if getattr(args, "json_schema", None):
        changes.update(json_schema=_json_schema(args.json_schema), grammar="")
    if getattr(args, "grammar", None):
        grammar = _read_text("--grammar", args.grammar)
        if not grammar.strip():
            raise InvalidInputError(f"--grammar {args.grammar}: the file is empty")
        changes.update(grammar=grammar, json_schema=None)
    # The three per-request values: a flag given, else the config file's when it sets one,
    # else the command line's default.
    plain = Sampling()
    for name in ("max_tokens", "seed", "temperature"):
        if name in given or getattr(base, name) == getattr(plain, name):
            changes[name] = getattr(args, name)
    sampling = dataclasses.replace(base, **changes)  # checks the combination again
    return {
        "max_tokens": sampling.max_tokens,
        "seed": sampling.seed,
        "temperature": sampling.temperature,
        "sampling": sampling,
    }


def cli_config(args: argparse.Namespace) -> Config | None:
    """The ``--config`` file, read once per command (None without the flag)."""
    from ..config import load_config
    from ..errors import InvalidInputError

    path = getattr(args, "config", None)
    if not path:
        return None
    cached = vars(args).get("_config")
    if cached is None:
        try:
            cached = load_config(path)
        except InvalidInputError as e:
            if path in str(e):
                raise
            # Errors inside a section name the key ("llm: unknown key ..."), not the file.
            raise InvalidInputError(f"--config {path}: {e}") from None
        vars(args)["_config"] = cached
    config: Config = cached
    return config


def chosen_model(args: argparse.Namespace) -> tuple[str, str]:
    """The model to run and where that choice came from (``"--model"``,
    ``"$LLM_INPROC_MODEL"``, ``"--config FILE"``, ``"default"``); ``""`` for the default."""
    if getattr(args, "model", None):
        return str(args.model), "--model"
    env = os.environ.get(MODEL_ENV, "").strip()
    if env:
        return env, f"${MODEL_ENV}"
    config = cli_config(args)
    if config is not None and config.options.model:
        return str(config.options.model), f"--config {args.config}"
    return "", "default"


def session_options(args: argparse.Namespace) -> tuple[Options, list[KnownLLM] | None]:
    """The Options the flags describe (over the ``--config`` file's), validated, and the
    config file's catalogue ahead of the packaged one (None: the packaged one alone)."""
    from ..config import Options, default_config
    from ..errors import InvalidInputError

    config = cli_config(args)
    opts = dataclasses.replace(config.options) if config is not None else Options()
    model, origin = chosen_model(args)
    opts.model = model
    for name in ("context_length", "threads", "gpu_layers", "parallel"):
        value = getattr(args, name, None)
        if value is not None:
            setattr(opts, name, value)
    if getattr(args, "flash_attention", None) is not None:
        opts.flash_attention = flash_attention(args)
    if getattr(args, "repack", None) is not None:
        opts.repack = args.repack
    if getattr(args, "chat_template_kwargs", None) is not None:
        opts.chat_template_kwargs = args.chat_template_kwargs
    from ._rpc import apply_rpc_flags

    apply_rpc_flags(args, opts)
    try:
        opts.validate()
    except InvalidInputError as e:
        if str(e).startswith("Options.model"):
            raise InvalidInputError(f"{e} (the model came from {origin})") from None
        raise
    known = None
    if config is not None:
        known = [*config.known_llms, *default_config().known_llms]
    return opts, known


def session_from_args(args: argparse.Namespace) -> Session:
    """A Session for the model flags, ``$LLM_INPROC_MODEL`` and ``--config``."""
    from ..session import Session

    opts, known = session_options(args)
    return Session(opts, cache_dir=args.cache_dir, known_llms=known)


def stream_to_stdout(pieces: Iterable[str]) -> str:
    """Print a streamed reply as it comes (leading white space dropped); return it stripped."""
    out: list[str] = []
    for piece in pieces:
        if not out:
            piece = piece.lstrip()
            if not piece:
                continue
        out.append(piece)
        sys.stdout.write(piece)
        sys.stdout.flush()
    sys.stdout.write("\n")
    sys.stdout.flush()
    return "".join(out).strip()


def _plain(value: Any) -> Any:
    if isinstance(value, timedelta):
        return value.total_seconds()
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


def metrics_dict(m: Metrics) -> dict[str, Any]:
    """Metrics as JSON-ready values (durations in seconds, rates in tokens/s)."""
    out: dict[str, Any] = _plain(dataclasses.asdict(m))
    out["prompt"]["rate"] = m.prompt.rate()
    out["generated"]["rate"] = m.generated.rate()
    return out
