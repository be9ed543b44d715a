"""Real builds: llama-server from the installed llama-cpp-python's sources, and ``info``.

The llama-server build goes to the suite's persistent cache (``$LLM_INPROC_CACHE``, set by
conftest), so only the first run on a machine compiles (about 8 minutes on 2 cores).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import stat
import subprocess
import tarfile
import time
from pathlib import Path
from typing import Any

import pytest

from cores import all_cores
from llm_inproc.build.presets import list_presets
from llm_inproc.build.python import installed_llama_cpp_version
from llm_inproc.build.servers import (
    ServerBuild,
    build_llama_server,
    cached_server_build,
    find_llama_server,
    list_server_builds,
)
from llm_inproc.errors import InvalidInputError, LLMError
from llm_inproc.host.hardware import physical_cores
from llm_inproc.paths import default_cache_dir
from subproc import child_env, run_cli

# The first build on a machine takes 8-16 minutes on 2 cores, more than the default timeout.
pytestmark = pytest.mark.timeout(3600)


@pytest.fixture(scope="module")
def cpu_build() -> ServerBuild:
    """The CPU llama-server build in the persistent cache (compiled on the first run only)."""
    lines: list[str] = []
    with all_cores():
        build = build_llama_server(default_cache_dir(), "cpu", on_output=lines.append)
    if lines:  # it really compiled: the progress went through the callback
        assert any(line.startswith("==> build:") for line in lines)
    return build


@pytest.mark.build
def test_cpu_build_answers_version_with_the_vendored_commit(cpu_build: ServerBuild) -> None:
    assert cpu_build.version == installed_llama_cpp_version()
    assert cpu_build.directory == default_cache_dir() / "llama-server" / cpu_build.version / "cpu"
    # The commit comes from the changelog entry of that version's sdist.
    assert re.fullmatch(r"[0-9a-f]{7,40}", cpu_build.commit), cpu_build.commit
    for binary in (cpu_build.llama_server, cpu_build.llama_bench):
        assert binary.stat().st_mode & stat.S_IXUSR, binary
        done = subprocess.run(
            [str(binary), "--version"], capture_output=True, text=True, timeout=60, check=False
        )
        assert done.returncode == 0, done.stderr
        text = done.stdout + done.stderr
        assert f"commit {cpu_build.commit}" in text, text
    manifest = json.loads((cpu_build.directory / "build.json").read_text())
    assert manifest["version"] == cpu_build.version
    assert manifest["preset"] == "cpu"
    assert "-DGGML_NATIVE=ON" in manifest["flags"]
    assert "-DBUILD_SHARED_LIBS=OFF" in manifest["flags"]


@pytest.mark.build
def test_second_call_is_instant(cpu_build: ServerBuild) -> None:
    started = time.perf_counter()
    again = build_llama_server(default_cache_dir(), "cpu")
    elapsed = time.perf_counter() - started
    assert again == cpu_build
    assert elapsed < 1.0, f"cached build took {elapsed:.2f} s"
    # The CLI too: it prints the cached binary's path and compiles nothing.
    started = time.perf_counter()
    done = run_cli("build", "--target", "llama-server", "--preset", "cpu")
    elapsed = time.perf_counter() - started
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == str(cpu_build.llama_server)
    assert "==> build" not in done.stderr
    assert elapsed < 10, f"cached CLI build took {elapsed:.1f} s"


@pytest.mark.build
def test_find_llama_server_order(
    cpu_build: ServerBuild, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("LLAMA_SERVER", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path))  # nothing called llama-server on PATH
    assert find_llama_server(default_cache_dir()) == cpu_build.llama_server
    assert find_llama_server(default_cache_dir(), "cuda") is None
    # PATH beats the cache.
    on_path = tmp_path / "llama-server"
    on_path.write_text("#!/bin/sh\n")
    on_path.chmod(0o755)
    assert find_llama_server(default_cache_dir()) == on_path
    # $LLAMA_SERVER beats both, and a wrong one is an error, not a silent fallback.
    monkeypatch.setenv("LLAMA_SERVER", str(cpu_build.llama_bench))
    assert find_llama_server(default_cache_dir()) == cpu_build.llama_bench
    monkeypatch.setenv("LLAMA_SERVER", str(tmp_path / "missing"))
    with pytest.raises(InvalidInputError, match="LLAMA_SERVER"):
        find_llama_server(default_cache_dir())


@pytest.mark.build
def test_cache_listing_and_half_builds(cpu_build: ServerBuild) -> None:
    assert cpu_build in list_server_builds(default_cache_dir())
    assert cached_server_build(default_cache_dir(), "cpu") == cpu_build
    # A directory without a manifest (an interrupted build) is never taken for a build.
    half = default_cache_dir() / "llama-server" / cpu_build.version / "vulkan"
    assert not half.exists()
    (half / "bin").mkdir(parents=True)
    try:
        (half / "bin" / "llama-server").write_bytes(b"")
        assert cached_server_build(default_cache_dir(), "vulkan") is None
        assert all(b.preset != "vulkan" for b in list_server_builds(default_cache_dir()))
    finally:
        (half / "bin" / "llama-server").unlink()
        (half / "bin").rmdir()
        half.rmdir()


@pytest.mark.build
def test_a_failed_build_names_the_step_and_the_log(cpu_build: ServerBuild, tmp_path: Path) -> None:
    # The sycl preset needs Intel's icx/icpx, which this machine lacks: configure fails fast.
    version_dir = tmp_path / "llama-server" / cpu_build.version
    version_dir.mkdir(parents=True)
    (version_dir / "src").symlink_to(cpu_build.directory.parent / "src")  # no re-download
    lines: list[str] = []
    with pytest.raises(LLMError, match=r"configure step failed .*full log: .*sycl\.log") as err:
        build_llama_server(tmp_path, "sycl", on_output=lines.append)
    log_path = Path(str(err.value).rsplit("full log: ", 1)[1])
    assert log_path == version_dir / "sycl.log"
    assert "icx" in log_path.read_text()
    assert any("icx" in line for line in lines), "cmake's output was streamed"
    assert not (version_dir / "sycl").exists(), "a failed build must not look like a build"
    assert cached_server_build(tmp_path, "sycl") is None


@pytest.mark.build
def test_every_preset_flag_exists_in_the_vendored_llama_cpp(cpu_build: ServerBuild) -> None:
    source = cpu_build.directory.parent / "src" / "vendor" / "llama.cpp"
    cmake_text = "\n".join(
        p.read_text(errors="replace")
        for p in [*source.rglob("CMakeLists.txt"), *source.rglob("*.cmake")]
    )
    keys = {
        flag[2:].split("=")[0].split(":")[0]
        for preset in list_presets()
        for flag in preset.cmake_args()
    }
    for key in sorted(keys):
        if key.startswith("CMAKE_"):
            continue  # CMake's own variables
        assert re.search(rf"(option|set)\(\s*{key}\b", cmake_text), (
            f"{key} is not a llama.cpp option"
        )


def test_jobs_below_one_are_refused_before_any_work(tmp_path: Path) -> None:
    with pytest.raises(InvalidInputError, match="jobs must be at least 1"):
        build_llama_server(tmp_path, "cpu", jobs=0)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.skipif(shutil.which("cmake") is None, reason="cmake is not installed")
def test_a_truncated_sdist_is_deleted_so_the_next_build_downloads_it(tmp_path: Path) -> None:
    version = installed_llama_cpp_version()
    version_dir = tmp_path / "llama-server" / version
    (version_dir / "sdist").mkdir(parents=True)
    tree = tmp_path / "tree" / "pkg" / "vendor" / "llama.cpp"
    tree.mkdir(parents=True)
    (tree / "CMakeLists.txt").write_bytes(os.urandom(200_000))  # incompressible
    archive = version_dir / "sdist" / f"llama_cpp_python-{version}.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(tree.parent.parent, "pkg")
    archive.write_bytes(archive.read_bytes()[: archive.stat().st_size // 2])
    with pytest.raises(LLMError, match=r"unpack step: .* damaged .* deleted, run the build again"):
        build_llama_server(tmp_path, "cpu")
    assert not archive.exists()
    assert sorted(p.name for p in version_dir.iterdir()) == [
        ".cpu.lock",
        ".src.lock",
        "cpu.log",
        "sdist",
    ]


# --- info ----------------------------------------------------------------------------------


PLANTED_COMMIT = "0123abc"


@pytest.fixture(scope="module")
def planted_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A cache dir holding one finished llama-server build (a manifest and both binaries),
    a half build (binaries, no manifest) and a manifest whose binaries are gone."""
    cache = tmp_path_factory.mktemp("cache")
    root = cache / "llama-server" / "9.9.9"
    manifest = {
        "version": "9.9.9",
        "preset": "cpu",
        "commit": PLANTED_COMMIT,
        "flags": ["-DGGML_NATIVE=ON"],
        "built_at": "2026-01-02T03:04:05+00:00",
        "seconds": 12.34,
    }
    for preset, write_manifest, binaries in (
        ("cpu", True, True),
        ("vulkan", False, True),
        ("cuda", True, False),
    ):
        (root / preset / "bin").mkdir(parents=True)
        if write_manifest:
            data = {**manifest, "preset": preset}
            (root / preset / "build.json").write_text(json.dumps(data))
        if binaries:
            for name in ("llama-server", "llama-bench"):
                (root / preset / "bin" / name).write_bytes(b"")
    return cache


@pytest.fixture(scope="module")
def info(planted_cache: Path) -> dict[str, Any]:
    """``info --json`` with ``$LLM_INPROC_CACHE`` pointing at the planted cache."""
    done = run_cli("info", "--json", env=child_env(LLM_INPROC_CACHE=str(planted_cache)))
    assert done.returncode == 0, done.stderr
    data: dict[str, Any] = json.loads(done.stdout)
    return data


def test_info_json_is_truthful_on_this_cpu_build(info: dict[str, Any], planted_cache: Path) -> None:
    import llama_cpp

    assert info["llama_cpp_python_version"] == llama_cpp.__version__
    assert info["gpu_offload"] is False
    assert info["default_threads"] == physical_cores()
    assert info["cache_dir"] == str(planted_cache)  # $LLM_INPROC_CACHE is the default
    # llama.cpp's own feature line, e.g. "CPU : SSE3 = 1 | ... |"
    assert "CPU" in info["system_info"]
    types = [d["type"] for d in info["devices"]]
    assert "cpu" in types
    assert not {"gpu", "igpu"} & set(types)
    cpu = next(d for d in info["devices"] if d["type"] == "cpu")
    assert cpu["name"] and cpu["description"]
    # Exactly the finished build of the cache, as its manifest says: not the half build,
    # not the one whose binaries are gone.
    cpu_dir = planted_cache / "llama-server" / "9.9.9" / "cpu"
    assert info["llama_server_builds"] == [
        {
            "version": "9.9.9",
            "preset": "cpu",
            "commit": PLANTED_COMMIT,
            "flags": ["-DGGML_NATIVE=ON"],
            "built_at": "2026-01-02T03:04:05+00:00",
            "seconds": 12.3,
            "llama_server": str(cpu_dir / "bin" / "llama-server"),
            "llama_bench": str(cpu_dir / "bin" / "llama-bench"),
        }
    ]
    # The same models, in the same form, as `llm-inproc models --json` lists.
    models = run_cli("models", "--json", env=child_env(LLM_INPROC_CACHE=str(planted_cache)))
    assert models.returncode == 0, models.stderr
    assert info["cached_models"] == json.loads(models.stdout)


def test_physical_cores_matches_proc_cpuinfo() -> None:
    pairs = set()
    phys = ""
    with open("/proc/cpuinfo") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key.strip() == "physical id":
                phys = value.strip()
            elif key.strip() == "core id":
                pairs.add((phys, value.strip()))
    expected = min(len(pairs), len(os.sched_getaffinity(0))) if pairs else os.cpu_count()
    assert physical_cores() == expected


def test_info_human_readable(info: dict[str, Any], planted_cache: Path) -> None:
    done = run_cli("info", "--cache-dir", str(planted_cache))
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert f"llama-cpp-python  {info['llama_cpp_python_version']}" in out
    assert "gpu offload       no" in out
    assert f"default threads   {info['default_threads']} (physical cores)" in out
    assert f"cache dir         {planted_cache}\n" in out
    server = planted_cache / "llama-server" / "9.9.9" / "cpu" / "bin" / "llama-server"
    assert "llama-server      1 cached build(s)\n" in out
    assert f"  9.9.9/cpu  llama.cpp {PLANTED_COMMIT}  {server}\n" in out


@pytest.mark.build
def test_info_lists_the_cached_build(cpu_build: ServerBuild) -> None:
    done = run_cli("info", "--json")
    assert done.returncode == 0, done.stderr
    builds = json.loads(done.stdout)["llama_server_builds"]
    mine = [b for b in builds if b["version"] == cpu_build.version and b["preset"] == "cpu"]
    assert len(mine) == 1
    assert mine[0]["llama_server"] == str(cpu_build.llama_server)
    assert mine[0]["commit"] == cpu_build.commit
