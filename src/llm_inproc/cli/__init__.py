"""The ``llm-inproc`` command line.

Each subcommand lives in its own module exposing ``add_parser(subparsers)``;
that function registers the parser and sets ``func`` to a ``run(args) -> int``.
Output goes to stdout, logs and progress to stderr. Exit status: 0 success,
2 bad usage, 1 failure with a one-line reason (a traceback only with ``--verbose``).

Flag values are checked while the command line is parsed, by the same rules as
``Options`` and ``Sampling``, so a bad value is a usage error before anything loads.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import re
import sys
from collections.abc import Callable, Sequence
from typing import Any

from .. import __version__
from ..errors import LLMError

__all__ = [
    "HelpFormatter",
    "add_cache_dir_flag",
    "add_common_model_flags",
    "add_config_flag",
    "build_parser",
    "checked_type",
    "main",
    "parse_args",
]

_SUBCOMMANDS = (
    "prompt",
    "chat",
    "serve",
    "pull",
    "models",
    "build",
    "info",
    "bench",
    "rpc",
    "embed",
)

MODEL_ENV = "LLM_INPROC_MODEL"
"""The environment variable that names the model when ``--model`` is not given."""

_FLASH_ATTENTION = {"on": True, "off": False, "auto": None}


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Append ``(default: X)`` to a flag's help unless it says its default already.

    A ``None`` or ``False`` default is not shown: a flag whose default needs words
    (``None`` meaning "all physical cores") says so in its own help.
    """

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        unset = action.default is None or action.default is False or action.default == ""
        said = "default" in text or f"({action.default})" in text  # "port (8080)"
        if said or unset or action.default == argparse.SUPPRESS:
            return text
        return super()._get_help_string(action)


def checked_type(
    convert: Callable[[str], Any], check: Callable[[Any], object]
) -> Callable[[str], Any]:
    """An argparse ``type``: ``convert`` the text, then ``check`` the value (which raises
    :class:`InvalidInputError`), so a bad value is a usage error in the library's words."""

    def parse(text: str) -> Any:
        from ..errors import InvalidInputError

        value = convert(text)
        try:
            check(value)
        except InvalidInputError as e:
            # "Options.threads: 0 is invalid; ..." -> "0 is invalid; ..." (argparse names the flag)
            raise argparse.ArgumentTypeError(re.sub(r"^Options\.\w+: ", "", str(e))) from None
        return value

    parse.__name__ = convert.__name__  # argparse's "invalid int value: 'x'"
    return parse


def option_value(name: str, convert: Callable[[str], Any]) -> Callable[[str], Any]:
    """A flag checked as ``Options.<name>`` is: ``--threads 0`` is refused while parsing."""

    def check(value: Any) -> None:
        from ..config import Options

        Options(**{name: value}).validate()

    return checked_type(convert, check)


def add_common_model_flags(parser: argparse.ArgumentParser, *, session: bool = True) -> None:
    """The flags every command that loads a model shares.

    ``session=False`` leaves out what only a :class:`Session` built by
    ``session_from_args`` uses (``--config``, ``--parallel``, ``--flash-attention``).
    """
    g = parser.add_argument_group("model")
    g.add_argument(
        "--model",
        default=None,
        help=f"hf: reference, local .gguf path, or 'python' (default: ${MODEL_ENV}, else "
        "the --config file's llm.model, else the embedded SmolLM2-135M-Instruct)"
        if session
        else f"hf: reference or local .gguf path (default: ${MODEL_ENV}, else Gemma 3 270M)",
    )
    if session:
        add_config_flag(g)
    g.add_argument(
        "--context-length",
        type=option_value("context_length", int),
        default=None,
        help="context window in tokens (default: 0, the model's trained length capped at 8192)",
    )
    g.add_argument(
        "--threads",
        type=option_value("threads", int),
        default=None,
        help="CPU threads (default: all physical cores)",
    )
    g.add_argument(
        "--gpu-layers",
        type=option_value("gpu_layers", int),
        default=None,
        help="layers to offload to a GPU: -1 all, 0 none (default: -1)",
    )
    g.add_argument(
        "--repack",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="repack weights for the CPU's fast kernels; --no-repack for CPUs that report "
        "AMX but cannot run it (default: auto, decided by a one-time probe)",
    )
    if session:
        from ..config import DEFAULT_PARALLEL

        g.add_argument(
            "--parallel",
            type=option_value("parallel", int),
            default=None,
            help=f"requests generated at once in one context (default: {DEFAULT_PARALLEL})",
        )
        g.add_argument(
            "--flash-attention",
            choices=tuple(_FLASH_ATTENTION),
            default=None,
            help="llama.cpp's flash attention (default: auto, on when layers run on a GPU)",
        )
        g.add_argument(
            "--chat-template-kwargs",
            metavar="JSON",
            type=option_value("chat_template_kwargs", _json_object),
            default=None,
            help="a JSON object of variables every chat template rendering gets, e.g. "
            "'{\"enable_thinking\": false}' (default: none)",
        )
        from ._rpc import add_rpc_flags

        add_rpc_flags(g)
    add_cache_dir_flag(parser)


def _json_object(text: str) -> Any:
    from ..config import template_kwargs_from_json
    from ..errors import InvalidInputError

    try:
        return template_kwargs_from_json(text, "value")
    except InvalidInputError as e:
        raise argparse.ArgumentTypeError(str(e).removeprefix("value: ")) from None


_json_object.__name__ = "JSON object"


def flash_attention(args: argparse.Namespace) -> bool | None:
    """``--flash-attention`` as ``Options.flash_attention`` (None: auto)."""
    return _FLASH_ATTENTION[getattr(args, "flash_attention", None) or "auto"]


def add_config_flag(parser: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
    parser.add_argument(
        "--config",
        metavar="FILE",
        default=None,
        help="a YAML configuration (llm: options, knownllms: catalogue); flags override it "
        "(default: none)",
    )


def add_cache_dir_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--cache-dir", default=None, help="default: $LLM_INPROC_CACHE or the user cache dir"
    )


def _make_parsers() -> tuple[argparse.ArgumentParser, dict[str, argparse.ArgumentParser]]:
    parser = argparse.ArgumentParser(
        prog="llm-inproc",
        description="Run a local LLM inside this process.",
        formatter_class=HelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logs and tracebacks")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in _SUBCOMMANDS:
        module = importlib.import_module(f"{__name__}._{name}")
        module.add_parser(sub)
    commands: dict[str, argparse.ArgumentParser] = sub.choices
    for p in commands.values():
        p.formatter_class = HelpFormatter
        # Also after the subcommand (``llm-inproc prompt -v hi``); SUPPRESS keeps the main
        # parser's value when it is given before the subcommand instead.
        p.add_argument(
            "-v",
            "--verbose",
            action="store_true",
            default=argparse.SUPPRESS,
            help="debug logs and tracebacks",
        )
    return parser, commands


def build_parser() -> argparse.ArgumentParser:
    return _make_parsers()[0]


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Parse like ``build_parser().parse_args``, but report a flag no subcommand knows
    with that subcommand's usage (argparse would show the main parser's)."""
    parser, commands = _make_parsers()
    args, extra = parser.parse_known_args(argv)
    if extra:
        commands.get(args.command, parser).error(f"unrecognized arguments: {' '.join(extra)}")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    try:
        return int(args.func(args))
    except BrokenPipeError:
        # The reader went away (``llm-inproc models | head``): not an error.
        sys.stderr.close()
        return 0
    except KeyboardInterrupt:
        print("llm-inproc: interrupted", file=sys.stderr)  # noqa: T201
        return 130
    except (LLMError, OSError) as e:
        if args.verbose:
            raise
        reason = " ".join(str(e).split()) or type(e).__name__
        print(f"llm-inproc: error: {reason}", file=sys.stderr)  # noqa: T201
        return 1


if __name__ == "__main__":
    sys.exit(main())
