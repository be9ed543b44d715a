"""Build llama.cpp with a preset: llama-cpp-python itself, or ``llama-server``.

Both targets take their flags from ``CMakePresets.json`` (see :mod:`.presets`)
and both use the llama.cpp commit the *installed* llama-cpp-python vendors, so
the in-process backend, ``llama-server`` and ``llama-bench`` compare like with like:

- ``python``: reinstall that llama-cpp-python version from source with
  ``CMAKE_ARGS`` set to the preset's flags.
- ``llama-server``: download that version's sdist, build ``llama-server`` and
  ``llama-bench`` from its ``vendor/llama.cpp``, and cache the binaries under
  ``<cache_dir>/llama-server/<version>/<preset>/bin/`` with a ``build.json``
  manifest. The binaries are assembled in a temporary directory and renamed into
  place, so an interrupted build is never mistaken for a good one; a file lock
  keeps two processes from building the same thing at once.

Each step's output goes to a log file (and to ``on_output`` if given); a failed
step raises :class:`~llm_inproc.errors.LLMError` naming the step and the log.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shlex
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import IO, Any

from .errors import InvalidInputError, LLMError
from .presets import DEFAULT_PRESET, load_presets

__all__ = [
    "DIST_NAME",
    "PythonBuildPlan",
    "ServerBuild",
    "build_llama_server",
    "build_python",
    "cached_server_build",
    "find_llama_server",
    "installed_llama_cpp_version",
    "list_server_builds",
    "python_build_plan",
    "server_cmake_args",
    "vendored_commit",
]

log = logging.getLogger(__name__)

OutputCallback = Callable[[str], None]

DIST_NAME = "llama-cpp-python"
"""The distribution rebuilt and whose sdist vendors llama.cpp."""
_BINARIES = ("llama-server", "llama-bench")
_EXE = ".exe" if sys.platform == "win32" else ""

_SERVER_FLAGS = (
    "-DBUILD_SHARED_LIBS=OFF",  # self-contained binaries, nothing to find at run time
    "-DLLAMA_BUILD_TOOLS=ON",  # llama-server and llama-bench live under tools/
    "-DLLAMA_BUILD_SERVER=ON",
    "-DLLAMA_BUILD_EXAMPLES=OFF",
    "-DLLAMA_BUILD_TESTS=OFF",
    "-DLLAMA_BUILD_APP=OFF",
    "-DLLAMA_BUILD_UI=OFF",  # the web UI needs npm ...
    "-DLLAMA_USE_PREBUILT_UI=OFF",  # ... or a download; the HTTP API does not need it
    "-DLLAMA_OPENSSL=OFF",  # no HTTPS model downloads from inside llama-server
)


def installed_llama_cpp_version() -> str:
    """The installed llama-cpp-python version (read from metadata, nothing imported)."""
    try:
        return metadata.version(DIST_NAME)
    except metadata.PackageNotFoundError as e:
        raise LLMError(f"{DIST_NAME} is not installed; pip install {DIST_NAME}") from e


# --- python target -------------------------------------------------------------------------


@dataclass(frozen=True)
class PythonBuildPlan:
    """The exact pip command that rebuilds llama-cpp-python with a preset."""

    preset: str
    """The preset the flags come from."""
    version: str
    """The llama-cpp-python version reinstalled (the installed one)."""
    command: list[str]
    """argv of the pip run."""
    env: dict[str, str]
    """Variables added to the current environment (``CMAKE_ARGS``, ``FORCE_CMAKE``)."""

    def shell(self) -> str:
        """The plan as one POSIX shell line, ready to paste."""
        assignments = [f"{k}={shlex.quote(v)}" for k, v in self.env.items()]
        return " ".join([*assignments, shlex.join(self.command)])


def python_build_plan(
    preset: str = DEFAULT_PRESET, *, version: str | None = None
) -> PythonBuildPlan:
    """What ``build --target python`` runs, without running it."""
    flags = load_presets().get(preset).cmake_args()
    version = version or installed_llama_cpp_version()
    command = [
        sys.executable, "-m", "pip", "install", "--force-reinstall", "--no-deps",
        "--no-binary", DIST_NAME, "--no-cache-dir", f"{DIST_NAME}=={version}",
    ]  # fmt: skip
    env = {"CMAKE_ARGS": " ".join(flags), "FORCE_CMAKE": "1"}
    return PythonBuildPlan(preset, version, command, env)


def build_python(
    preset: str = DEFAULT_PRESET,
    *,
    log_dir: str | os.PathLike[str] | None = None,
    on_output: OutputCallback | None = None,
) -> PythonBuildPlan:
    """Reinstall llama-cpp-python from source with ``preset``'s flags; returns the plan run."""
    plan = python_build_plan(preset)
    logs = Path(log_dir) if log_dir is not None else Path(tempfile.gettempdir())
    logs.mkdir(parents=True, exist_ok=True)
    log_path = logs / f"python-{plan.version}-{plan.preset}.log"
    with open(log_path, "w", encoding="utf-8") as logf:
        _run("pip install", plan.command, logf, log_path, on_output, env=plan.env)
    return plan


# --- llama-server target -------------------------------------------------------------------


@dataclass(frozen=True)
class ServerBuild:
    """A cached llama-server build, as recorded in its ``build.json``."""

    version: str
    """llama-cpp-python version whose vendored llama.cpp was built."""
    preset: str
    """Preset name."""
    commit: str
    """llama.cpp commit named by that version's changelog ("unknown" if it names none)."""
    flags: list[str]
    """Every ``-D`` flag passed to CMake."""
    built_at: str
    """When the build finished (ISO 8601, UTC)."""
    seconds: float
    """How long configure plus build took."""
    directory: Path
    """``<cache_dir>/llama-server/<version>/<preset>``."""

    @property
    def llama_server(self) -> Path:
        """Path of the ``llama-server`` binary."""
        return self.directory / "bin" / f"llama-server{_EXE}"

    @property
    def llama_bench(self) -> Path:
        """Path of the ``llama-bench`` binary."""
        return self.directory / "bin" / f"llama-bench{_EXE}"

    def to_json(self) -> dict[str, Any]:
        """The manifest as written to ``build.json`` (plus the binaries' paths)."""
        return {
            "version": self.version,
            "preset": self.preset,
            "commit": self.commit,
            "flags": self.flags,
            "built_at": self.built_at,
            "seconds": round(self.seconds, 1),
            "llama_server": str(self.llama_server),
            "llama_bench": str(self.llama_bench),
        }


def _root(cache_dir: str | os.PathLike[str]) -> Path:
    return Path(cache_dir) / "llama-server"


def _read_manifest(directory: Path) -> ServerBuild | None:
    try:
        data = json.loads((directory / "build.json").read_text(encoding="utf-8"))
        build = ServerBuild(
            version=str(data["version"]),
            preset=str(data["preset"]),
            commit=str(data.get("commit", "unknown")),
            flags=[str(f) for f in data["flags"]],
            built_at=str(data["built_at"]),
            seconds=float(data.get("seconds", 0.0)),
            directory=directory,
        )
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if not (build.llama_server.is_file() and build.llama_bench.is_file()):
        return None
    return build


def cached_server_build(
    cache_dir: str | os.PathLike[str], preset: str = DEFAULT_PRESET, *, version: str | None = None
) -> ServerBuild | None:
    """The finished build for ``preset`` and the installed (or given) version, if cached."""
    version = version or installed_llama_cpp_version()
    return _read_manifest(_root(cache_dir) / version / preset)


def list_server_builds(cache_dir: str | os.PathLike[str]) -> list[ServerBuild]:
    """Every finished build in the cache, sorted by version then preset."""
    builds = []
    for directory in sorted(_root(cache_dir).glob("*/*")):
        if directory.is_dir() and not directory.name.startswith("."):
            build = _read_manifest(directory)
            if build is not None:
                builds.append(build)
    return builds


def find_llama_server(
    cache_dir: str | os.PathLike[str], preset: str = DEFAULT_PRESET
) -> Path | None:
    """A ``llama-server`` binary: ``$LLAMA_SERVER``, then ``PATH``, then the build cache."""
    explicit = os.environ.get("LLAMA_SERVER")
    if explicit:
        path = Path(explicit).expanduser()
        if not (path.is_file() and os.access(path, os.X_OK)):
            raise InvalidInputError(f"$LLAMA_SERVER={explicit} is not an executable file")
        return path
    on_path = shutil.which("llama-server")
    if on_path:
        return Path(on_path)
    try:
        build = cached_server_build(cache_dir, preset)
    except LLMError:
        return None
    return build.llama_server if build else None


def server_cmake_args(preset: str = DEFAULT_PRESET, *, commit: str = "unknown") -> list[str]:
    """All ``-D`` flags of a llama-server build: the preset's, then the server's own."""
    flags = load_presets().get(preset).cmake_args()
    return [*flags, *_SERVER_FLAGS, "-DLLAMA_BUILD_NUMBER=0", f"-DLLAMA_BUILD_COMMIT={commit}"]


def build_llama_server(
    cache_dir: str | os.PathLike[str],
    preset: str = DEFAULT_PRESET,
    *,
    jobs: int | None = None,
    force: bool = False,
    on_output: OutputCallback | None = None,
) -> ServerBuild:
    """Build (or find cached) ``llama-server`` and ``llama-bench`` for ``preset``."""
    load_presets().get(preset)  # unknown or hidden preset: fail before any download
    version = installed_llama_cpp_version()
    if not force and (build := cached_server_build(cache_dir, preset, version=version)):
        return build
    from filelock import FileLock

    version_dir = _root(cache_dir) / version
    version_dir.mkdir(parents=True, exist_ok=True)
    with FileLock(str(version_dir / f".{preset}.lock")):
        # Another process may have finished the same build while we waited.
        if not force and (build := cached_server_build(cache_dir, preset, version=version)):
            return build
        return _build_locked(version_dir, version, preset, jobs, on_output)


def _build_locked(
    version_dir: Path, version: str, preset: str, jobs: int | None, on_output: OutputCallback | None
) -> ServerBuild:
    log_path = version_dir / f"{preset}.log"
    say = on_output or (lambda line: None)
    started = time.monotonic()
    with open(log_path, "w", encoding="utf-8") as logf:

        def step(text: str) -> None:
            line = f"==> {text}"
            log.info("%s", text)
            logf.write(line + "\n")
            logf.flush()
            say(line)

        cmake = shutil.which("cmake")
        if cmake is None:
            raise LLMError(
                "cmake not found on PATH; install cmake >= 3.21 (e.g. pip install cmake)"
            )
        step(f"llama-server {version}/{preset}: log in {log_path}")
        source = _sources(version_dir, version, logf, log_path, on_output, step)
        commit = _vendored_commit(source / "CHANGELOG.md", version)
        flags = server_cmake_args(preset, commit=commit)
        build_dir = version_dir / f".build-{preset}"
        generator = ["-G", "Ninja"] if shutil.which("ninja") else []
        if build_dir.exists() and not (build_dir / "CMakeCache.txt").exists():
            shutil.rmtree(build_dir)
        step(f"configure: cmake {' '.join(flags)}")
        configure = [cmake, "-S", str(source / "vendor" / "llama.cpp"), "-B", str(build_dir)]
        _run("configure", [*configure, *generator, *flags], logf, log_path, on_output)
        jobs = jobs or _cpus()
        step(f"build: {', '.join(_BINARIES)} with {jobs} jobs")
        compile_cmd = [cmake, "--build", str(build_dir), "--target", *_BINARIES, "-j", str(jobs)]
        if not generator:
            compile_cmd += ["--config", "Release"]
        _run("build", compile_cmd, logf, log_path, on_output)
        step("install into the cache")
        final = version_dir / preset
        tmp = Path(tempfile.mkdtemp(prefix=f".{preset}-", dir=version_dir))
        try:
            tmp.chmod(0o755)  # mkdtemp's 0700 would hide the build from other users
            (tmp / "bin").mkdir()
            for name in _BINARIES:
                built = _find_binary(build_dir, f"{name}{_EXE}")
                if built is None:
                    raise LLMError(f"build step succeeded but {name} is missing; see {log_path}")
                shutil.copy2(built, tmp / "bin" / built.name)
            build = ServerBuild(
                version=version,
                preset=preset,
                commit=commit,
                flags=flags,
                built_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
                seconds=round(time.monotonic() - started, 1),
                directory=final,
            )
            manifest = {k: v for k, v in build.to_json().items() if not k.startswith("llama_")}
            (tmp / "build.json").write_text(json.dumps(manifest, indent=2) + "\n", "utf-8")
            if final.exists():
                old = version_dir / f".old-{preset}-{os.getpid()}"
                final.rename(old)
                shutil.rmtree(old, ignore_errors=True)
            tmp.rename(final)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        shutil.rmtree(build_dir, ignore_errors=True)
        step(f"done in {build.seconds:.0f} s: {build.llama_server}")
    return build


def _sources(
    version_dir: Path,
    version: str,
    logf: IO[str],
    log_path: Path,
    on_output: OutputCallback | None,
    step: Callable[[str], None],
) -> Path:
    """The unpacked sdist of ``version`` (downloaded and unpacked once per version)."""
    source = version_dir / "src"
    if (source / "vendor" / "llama.cpp" / "CMakeLists.txt").is_file():
        return source
    download_dir = version_dir / "sdist"
    archives = sorted(download_dir.glob("*.tar.gz"))
    if not archives:
        step(f"download: {DIST_NAME}=={version} sdist from the package index")
        command = [
            sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:",
            "--dest", str(download_dir), f"{DIST_NAME}=={version}",
        ]  # fmt: skip
        _run("download", command, logf, log_path, on_output)
        archives = sorted(download_dir.glob("*.tar.gz"))
        if not archives:
            raise LLMError(f"download step left no .tar.gz in {download_dir}; see {log_path}")
    step(f"unpack: {archives[-1].name}")
    tmp = Path(tempfile.mkdtemp(prefix=".src-", dir=version_dir))
    try:
        with tarfile.open(archives[-1]) as tar:
            if hasattr(tarfile, "data_filter"):
                tar.extractall(tmp, filter="data")
            else:  # pragma: no cover - Python without PEP 706 backports
                tar.extractall(tmp)  # an sdist just downloaded from the index
        roots = [p for p in tmp.iterdir() if p.is_dir()]
        if len(roots) != 1 or not (roots[0] / "vendor" / "llama.cpp").is_dir():
            raise LLMError(f"unpack step: {archives[-1]} has no vendor/llama.cpp; see {log_path}")
        if source.exists():
            shutil.rmtree(source)
        roots[0].rename(source)
    except (OSError, tarfile.TarError) as e:
        raise LLMError(f"unpack step failed for {archives[-1]}: {e}") from e
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return source


def vendored_commit(cache_dir: str | os.PathLike[str], version: str | None = None) -> str | None:
    """The llama.cpp commit of ``version``'s sources, if they are unpacked in the cache."""
    version = version or installed_llama_cpp_version()
    changelog = _root(cache_dir) / version / "src" / "CHANGELOG.md"
    commit = _vendored_commit(changelog, version) if changelog.is_file() else "unknown"
    return None if commit == "unknown" else commit


def _vendored_commit(changelog: Path, version: str) -> str:
    """The llama.cpp commit the changelog entry of ``version`` names, or "unknown"."""
    try:
        text = changelog.read_text(encoding="utf-8")
    except OSError:
        return "unknown"
    section = re.search(rf"^## \[{re.escape(version)}\](.*?)(?=^## \[|\Z)", text, re.M | re.S)
    found = re.search(r"llama\.cpp@([0-9a-f]{7,40})", section.group(1)) if section else None
    return found.group(1) if found else "unknown"


def _find_binary(build_dir: Path, name: str) -> Path | None:
    for candidate in (build_dir / "bin" / name, build_dir / "bin" / "Release" / name):
        if candidate.is_file():
            return candidate
    return next((p for p in build_dir.rglob(name) if p.is_file()), None)


def _cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def _run(
    step: str,
    command: Sequence[str],
    logf: IO[str],
    log_path: Path,
    on_output: OutputCallback | None,
    *,
    env: dict[str, str] | None = None,
) -> None:
    """Run one step, copying its output line by line to the log and ``on_output``."""
    logf.write(f"$ {shlex.join(command)}\n")
    logf.flush()
    try:
        proc = subprocess.Popen(
            list(command),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env={**os.environ, **env} if env else None,
            text=True,
            errors="replace",
            bufsize=1,
        )
    except OSError as e:
        raise LLMError(f"{step} step could not start {command[0]}: {e}; see {log_path}") from e
    assert proc.stdout is not None
    with proc:
        try:
            for line in proc.stdout:
                logf.write(line)
                if on_output is not None:
                    on_output(line.rstrip("\n"))
        except BaseException:
            proc.kill()
            raise
        code = proc.wait()
    logf.flush()
    if code != 0:
        raise LLMError(f"{step} step failed (exit status {code}); full log: {log_path}")
