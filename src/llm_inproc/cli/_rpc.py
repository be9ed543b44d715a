"""``llm-inproc rpc-server``, and the ``--rpc`` / ``--tensor-split`` flags of the commands
that load a model, spelled as llama-server spells them.

``rpc-server`` runs llama.cpp's own ``rpc-server`` (built by ``llm-inproc build --target
rpc-server`` from the same sources as the in-process library, so the protocol versions
match). Its protocol has no authentication and no encryption: anyone who can reach the
port can run computations on, and read the memory of, the devices it exposes. It is bound
to 127.0.0.1 unless told otherwise, and anything else is warned about loudly.
"""

from __future__ import annotations

import argparse
import ipaddress
import os
import re
import sys
from typing import Any

from . import add_cache_dir_flag, checked_type

__all__ = ["add_parser", "add_rpc_flags", "apply_rpc_flags", "rpc_server_list", "run"]

DEFAULT_PORT = 50052
"""rpc-server's own default port."""


def _check_servers(value: list[str]) -> None:
    from ..config import Options

    Options(rpc_servers=value).validate()


def _check_split(value: list[float]) -> None:
    from ..config import Options

    Options(tensor_split=value).validate()


def _server_list(text: str) -> list[str]:
    return [s.strip() for s in text.split(",") if s.strip()]


def _float_list(text: str) -> list[float]:
    return [float(v) for v in re.split(r"[,/]+", text) if v.strip()]


_float_list.__name__ = "list of numbers"


rpc_server_list = checked_type(_server_list, _check_servers)
"""``--rpc``'s argparse type: comma-separated ``host:port``, checked as ``rpc_servers`` is."""


def add_rpc_flags(group: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
    """``--rpc SERVERS`` and ``-ts/--tensor-split N0,N1,…`` (llama-server's spelling)."""
    group.add_argument(
        "--rpc",
        metavar="SERVERS",
        dest="rpc_servers",
        type=rpc_server_list,
        default=None,
        help="comma-separated host:port of llama.cpp rpc-server instances that hold part of "
        "the model (needs llama.cpp built with RPC: llm-inproc build --preset rpc) "
        "(default: none, all local)",
    )
    group.add_argument(
        "-ts",
        "--tensor-split",
        metavar="N0,N1,...",
        dest="tensor_split",
        type=checked_type(_float_list, _check_split),
        default=None,
        help="share of the offloaded layers per device, RPC servers first, e.g. 3,1 "
        "(default: by free memory)",
    )


def apply_rpc_flags(args: argparse.Namespace, options: Any) -> None:
    """Copy ``--rpc`` and ``--tensor-split`` onto ``options`` where they were given."""
    if getattr(args, "rpc_servers", None) is not None:
        options.rpc_servers = list(args.rpc_servers)
    if getattr(args, "tensor_split", None) is not None:
        options.tensor_split = list(args.tensor_split)


# -- llm-inproc rpc-server -------------------------------------------------------------------


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = subparsers.add_parser(
        "rpc-server",
        help="run llama.cpp's rpc-server, lending this machine's devices to another's model",
        description="Start llama.cpp's rpc-server (build it with: llm-inproc build --target "
        "rpc-server). Another machine then runs a model with --rpc HOST:PORT and places part "
        "of its layers here. The protocol has no authentication: bind it to a trusted network "
        "only.",
    )
    p.add_argument("-H", "--host", default="127.0.0.1", help="address to bind (default: loopback)")
    p.add_argument(
        "-p", "--port", type=int, default=DEFAULT_PORT, help=f"port (default: {DEFAULT_PORT})"
    )
    p.add_argument(
        "-d", "--device", default=None, help="comma-separated devices to expose (default: all)"
    )
    p.add_argument("-t", "--threads", type=int, default=None, help="CPU threads for the CPU device")
    p.add_argument(
        "-c",
        "--cache",
        action="store_true",
        help="cache received tensors on disk, so a model sent again loads faster",
    )
    add_cache_dir_flag(p)
    p.set_defaults(func=run)


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


WARNING = (
    "\n!!! rpc-server is bound to {host}, not to loopback. Its protocol has NO authentication\n"
    "!!! and NO encryption: anyone who reaches {host}:{port} can run code on its devices and\n"
    "!!! read their memory. Use it only on a network you trust, behind a firewall.\n"
)


def rpc_server_command(args: argparse.Namespace, binary: str) -> list[str]:
    """The rpc-server command line for the parsed flags."""
    cmd = [binary, "--host", args.host, "--port", str(args.port)]
    if args.device:
        cmd += ["--device", args.device]
    if args.threads is not None:
        cmd += ["--threads", str(args.threads)]
    if args.cache:
        cmd.append("--cache")
    return cmd


def run(args: argparse.Namespace) -> int:
    from ..build.rpc_server import find_rpc_server
    from ..errors import BackendError, InvalidInputError
    from ..paths import resolve_cache_dir

    if not 1 <= args.port <= 65535:
        raise InvalidInputError(f"--port {args.port} is not a TCP port; use 1 to 65535")
    binary = find_rpc_server(resolve_cache_dir(args.cache_dir))
    if binary is None:
        raise BackendError(
            "no rpc-server binary ($RPC_SERVER, PATH, or the build cache); build it with: "
            "llm-inproc build --target rpc-server"
        )
    if not _loopback(args.host):
        sys.stderr.write(WARNING.format(host=args.host, port=args.port))
        sys.stderr.flush()
    cmd = rpc_server_command(args, str(binary))
    # rpc-server prints the devices it exposes and serves until killed; it replaces this
    # process, so signals and the exit status are its own.
    sys.stdout.flush()
    os.execv(cmd[0], cmd)
