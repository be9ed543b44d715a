"""``llm-inproc build``: rebuild llama-cpp-python or build llama-server with a preset."""

from __future__ import annotations

import argparse
import sys

from ..build.presets import DEFAULT_PRESET
from . import add_cache_dir_flag

__all__ = ["add_parser", "run"]


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = subparsers.add_parser(
        "build",
        help="rebuild llama.cpp for your hardware from a CMakePresets.json preset",
        description=(
            "Rebuild llama-cpp-python (target 'python') or build llama-server and llama-bench "
            "(target 'llama-server') with the flags of a preset from CMakePresets.json."
        ),
    )
    p.add_argument(
        "--preset",
        default=DEFAULT_PRESET,
        help=f"preset name (default: {DEFAULT_PRESET}); see --list",
    )
    p.add_argument(
        "--target",
        choices=("python", "llama-server", "rpc-server"),
        default="python",
        help="what to build (default: python); rpc-server: llama.cpp's RPC worker, for "
        "spreading a model over machines (see llm-inproc rpc-server)",
    )
    p.add_argument("--list", action="store_true", help="list the presets and exit")
    p.add_argument("--dry-run", action="store_true", help="print what would run, run nothing")
    p.add_argument("--force", action="store_true", help="llama-server: rebuild even if cached")
    p.add_argument(
        "-j",
        "--jobs",
        type=int,
        default=None,
        help="llama-server: parallel compile jobs (default: every usable CPU)",
    )
    add_cache_dir_flag(p)
    p.set_defaults(func=run)


def _out(text: str) -> None:
    sys.stdout.write(text + "\n")


def _progress(line: str) -> None:
    sys.stderr.write(line + "\n")
    sys.stderr.flush()


def run(args: argparse.Namespace) -> int:
    from ..build import presets, rpc_server
    from ..build import python as build
    from ..build import servers as server_build
    from ..paths import resolve_cache_dir

    if args.list:
        entries = presets.list_presets()
        width = max(len(p.name) for p in entries)
        for p in entries:
            _out(f"{p.name:<{width}}  {p.description}")
            _out(f"{'':<{width}}  {' '.join(p.cmake_args())}")
        return 0
    if args.target == "python":
        if args.dry_run:
            _out(build.python_build_plan(args.preset).shell())
            return 0
        logs = resolve_cache_dir(args.cache_dir) / "logs"
        plan = build.build_python(args.preset, log_dir=logs, on_output=_progress)
        _out(f"llama-cpp-python {plan.version} rebuilt with preset {plan.preset}")
        return 0
    cache_dir = resolve_cache_dir(args.cache_dir)
    if args.dry_run:
        version = build.installed_llama_cpp_version()
        cached = bool(server_build.cached_server_build(cache_dir, args.preset, version=version))
        commit = (
            server_build.vendored_commit(cache_dir, version) or "<commit named by its changelog>"
        )
        flags = server_build.server_cmake_args(args.preset, commit=commit)
        target = server_build.server_build_dir(cache_dir, args.preset, version=version)
        _out(f"# sources: {build.DIST_NAME}=={version} sdist, vendor/llama.cpp")
        if args.target == "rpc-server":
            target = rpc_server.rpc_server_dir(cache_dir, args.preset, version=version)
            cached = bool(rpc_server.cached_rpc_server(cache_dir, args.preset, version=version))
            _out(f"cmake -S vendor/llama.cpp -B build {' '.join(flags)} -DGGML_RPC=ON")
            _out(f"cmake --build build --target {rpc_server.RPC_SERVER_TARGET}")
        else:
            _out(f"cmake -S vendor/llama.cpp -B build {' '.join(flags)}")
            _out("cmake --build build --target llama-server llama-bench")
        _out(f"# binaries: {target / 'bin'}" + (" (already cached)" if cached else ""))
        return 0
    if args.target == "rpc-server":
        path = rpc_server.build_rpc_server(
            cache_dir, args.preset, jobs=args.jobs, force=args.force, on_output=_progress
        )
        _out(str(path))
        return 0
    result = server_build.build_llama_server(
        cache_dir, args.preset, jobs=args.jobs, force=args.force, on_output=_progress
    )
    _out(str(result.llama_server))
    return 0
