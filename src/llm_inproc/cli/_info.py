"""``llm-inproc info``: what this installation of llama.cpp can do, and what is cached."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from . import add_cache_dir_flag
from ._models import format_size, mark_default
from ._rpc import rpc_server_list

__all__ = ["add_parser", "format_info", "run"]


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = subparsers.add_parser(
        "info",
        help="show the llama.cpp build, devices, threads and caches",
        description="Show the installed llama-cpp-python, its llama.cpp features and devices, "
        "the default thread count, and the cached models and llama-server builds.",
    )
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument(
        "--rpc",
        metavar="SERVERS",
        dest="rpc_servers",
        type=rpc_server_list,
        default=None,
        help="also connect to these llama.cpp rpc-server instances (comma-separated "
        "host:port) and list their devices and memory (needs llama.cpp built with RPC: "
        "llm-inproc build --preset rpc) (default: none)",
    )
    add_cache_dir_flag(p)
    p.set_defaults(func=run)


def format_info(info: dict[str, Any]) -> str:
    """The report as aligned human-readable lines."""
    lines = [
        f"llama-cpp-python  {info.get('llama_cpp_python_version') or 'not installed'}",
        f"gpu offload       {'yes' if info.get('gpu_offload') else 'no'}",
        f"default threads   {info.get('default_threads')} (physical cores)",
        f"cache dir         {info.get('cache_dir')}",
        f"default model     {info.get('default_model')}",
    ]
    if info.get("llama_cpp_error"):
        lines.append(f"llama_cpp error   {info['llama_cpp_error']}")
    if info.get("system_info"):
        lines.append(f"llama.cpp         {info['system_info']}")
    repack = info.get("repack")
    if repack:
        state = {True: "on", False: "off", None: "auto"}[repack.get("auto")]
        lines.append(f"weight repacking  {state}: {repack.get('reason')}")
    devices = info.get("devices") or []
    lines.append(f"devices           {len(devices) or 'none reported'}")
    for d in devices:
        memory = f", {format_size(d['memory_total'])}" if d.get("memory_total") else ""
        lines.append(f"  {d['name']} ({d['type']}{memory}): {d['description']}")
    builds = info.get("llama_server_builds") or []
    lines.append(f"llama-server      {len(builds)} cached build(s)")
    for b in builds:
        lines.append(
            f"  {b['version']}/{b['preset']}  llama.cpp {b['commit']}  {b['llama_server']}"
        )
    models = info.get("cached_models")
    if models is None:
        lines.append("models            (listing unavailable)")
    else:
        lines.append(f"models            {len(models)} cached")
        for m in models:
            mark = "* " if m.get("default") else "  "
            purpose = f": {m['purpose']}" if m.get("purpose") else ""
            lines.append(f"{mark}{m['ref']}  {format_size(m['size'])}  ({m['source']}){purpose}")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    from ..config import DEFAULT_MODEL
    from ..host.sysinfo import system_info
    from ..paths import resolve_cache_dir
    from ._common import chosen_model

    cache_dir = resolve_cache_dir(args.cache_dir)
    if args.rpc_servers:
        from ..backends.inproc.rpc import register_servers

        # Their devices join ggml's registry, listed below; a build without RPC, or a
        # server that is down, is named in the error.
        register_servers(args.rpc_servers)
    info = system_info(cache_dir)
    # The model prompt and chat run without --model, marked as `models` marks it.
    default = chosen_model(args)[0] or DEFAULT_MODEL
    info["default_model"] = default
    if info.get("cached_models") is not None:
        info["cached_models"] = mark_default(info["cached_models"], default)
    sys.stdout.write((json.dumps(info, indent=2) if args.json else format_info(info)) + "\n")
    return 0
