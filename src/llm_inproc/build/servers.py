"""Build ``llama-server`` and ``llama-bench`` with a preset, and find cached builds.

The sources are the installed llama-cpp-python version's sdist (from the package
index), so both binaries speak the same llama.cpp commit as the in-process backend.
The binaries are cached under ``<cache_dir>/llama-server/<version>/<preset>/bin/``
with a ``build.json`` manifest; a second call is instant. They are assembled in a
temporary directory and renamed into place, so an interrupted build is never
mistaken for a good one. File locks keep two processes from building the same
preset, or unpacking the same sources, at once.

Layout of ``<cache_dir>/llama-server/<version>/``: ``sdist/`` (the download),
``src/`` (unpacked once, shared by every preset), ``<preset>/`` (finished builds),
``<preset>.log`` (the last build's log), ``.build-<preset>/`` (CMake's build tree,
kept after a failure so the next try is incremental).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import sys
import tarfile
import tempfile
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from ..errors import InvalidInputError, LLMError
from ..host.hardware import usable_cpus
from .presets import DEFAULT_PRESET, load_presets
from .python import DIST_NAME, BuildLog, OutputCallback, installed_llama_cpp_version

__all__ = [
    "ServerBuild",
    "build_llama_server",
    "cached_server_build",
    "find_llama_server",
    "list_server_builds",
    "server_build_dir",
    "server_cmake_args",
    "vendored_commit",
]


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


def server_build_dir(
    cache_dir: str | os.PathLike[str], preset: str = DEFAULT_PRESET, *, version: str | None = None
) -> Path:
    """Where the build of ``preset`` for the installed (or given) version lives, built or not."""
    return _root(cache_dir) / (version or installed_llama_cpp_version()) / preset


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
    return _read_manifest(server_build_dir(cache_dir, preset, version=version))


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

    def cached() -> Path | None:
        build = cached_server_build(cache_dir, preset)
        return build.llama_server if build else None

    return find_executable("LLAMA_SERVER", ("llama-server",), "a llama-server binary", cached)


def find_executable(
    variable: str, names: tuple[str, ...], what: str, cached: Callable[[], Path | None]
) -> Path | None:
    """A binary: ``$variable`` (which must name an executable), then ``names`` on
    ``PATH``, then what ``cached`` finds in the build cache (None: not built)."""
    explicit = os.environ.get(variable)
    if explicit:
        path = Path(explicit).expanduser()
        if not (path.is_file() and os.access(path, os.X_OK)):
            raise InvalidInputError(
                f"${variable}={explicit} is not an executable file; point it at {what}, "
                "or unset it to use PATH and the build cache"
            )
        return path
    for name in names:
        on_path = shutil.which(name)
        if on_path:
            return Path(on_path)
    try:
        return cached()
    except LLMError:
        return None


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
    if jobs is not None and jobs < 1:
        raise InvalidInputError(f"jobs must be at least 1, got {jobs}; omit it to use every CPU")
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
    version_dir: Path,
    version: str,
    preset: str,
    jobs: int | None,
    on_output: OutputCallback | None,
    *,
    name: str | None = None,
    binaries: tuple[str, ...] = _BINARIES,
    extra_flags: tuple[str, ...] = (),
) -> ServerBuild:
    """Configure, compile ``binaries`` and install them into ``<version_dir>/<name>``
    (``name`` defaults to the preset: llama-server's layout)."""
    name = name or preset
    started = time.monotonic()
    with BuildLog(version_dir / f"{name}.log", on_output) as blog:
        log_path = blog.path
        cmake = shutil.which("cmake")
        if cmake is None:
            raise LLMError(
                "cmake not found on PATH; install cmake >= 3.21 (e.g. pip install cmake)"
            )
        blog.step(f"llama-server {version}/{preset}: log in {log_path}")
        source = _sources(version_dir, version, blog)
        commit = _vendored_commit(source / "CHANGELOG.md", version)
        flags = [*server_cmake_args(preset, commit=commit), *extra_flags]
        build_dir = version_dir / f".build-{name}"
        generator = ["-G", "Ninja"] if shutil.which("ninja") else []
        if build_dir.exists() and not (build_dir / "CMakeCache.txt").exists():
            shutil.rmtree(build_dir)
        blog.step(f"configure: cmake {' '.join(flags)}")
        configure = [cmake, "-S", str(source / "vendor" / "llama.cpp"), "-B", str(build_dir)]
        blog.run("configure", [*configure, *generator, *flags])
        jobs = jobs or usable_cpus()
        blog.step(f"build: {', '.join(binaries)} with {jobs} jobs")
        compile_cmd = [cmake, "--build", str(build_dir), "--target", *binaries, "-j", str(jobs)]
        if not generator:
            compile_cmd += ["--config", "Release"]
        blog.run("build", compile_cmd)
        blog.step("install into the cache")
        final = version_dir / name
        tmp = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=version_dir))
        try:
            tmp.chmod(0o755)  # mkdtemp's 0700 would hide the build from other users
            (tmp / "bin").mkdir()
            for binary in binaries:
                built = _find_binary(build_dir, f"{binary}{_EXE}")
                if built is None:
                    raise LLMError(f"build step succeeded but {binary} is missing; see {log_path}")
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
                old = version_dir / f".old-{name}-{os.getpid()}"
                final.rename(old)
                shutil.rmtree(old, ignore_errors=True)
            tmp.rename(final)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        shutil.rmtree(build_dir, ignore_errors=True)
        blog.step(f"done in {build.seconds:.0f} s: {final / 'bin'}")
    return build


def _sources(version_dir: Path, version: str, blog: BuildLog) -> Path:
    """The unpacked sdist of ``version`` (downloaded and unpacked once per version).

    Every preset of a version shares these sources, so a version-wide lock keeps a
    second build from replacing them while a first one is reading them.
    """
    from filelock import FileLock

    source = version_dir / "src"
    if (source / "vendor" / "llama.cpp" / "CMakeLists.txt").is_file():
        return source
    with FileLock(str(version_dir / ".src.lock")):
        if (source / "vendor" / "llama.cpp" / "CMakeLists.txt").is_file():
            return source  # unpacked by another build while we waited
        archive = _sdist(version_dir, version, blog)
        blog.step(f"unpack: {archive.name}")
        tmp = Path(tempfile.mkdtemp(prefix=".src-", dir=version_dir))
        try:
            with tarfile.open(archive) as tar:
                if hasattr(tarfile, "data_filter"):
                    tar.extractall(tmp, filter="data")
                else:  # pragma: no cover - Python without PEP 706 backports
                    tar.extractall(tmp)  # an sdist just downloaded from the index
            roots = [p for p in tmp.iterdir() if p.is_dir()]
            if len(roots) != 1 or not (roots[0] / "vendor" / "llama.cpp").is_dir():
                archive.unlink(missing_ok=True)
                raise LLMError(
                    f"unpack step: {archive.name} has no vendor/llama.cpp; it was deleted, "
                    "run the build again to download it afresh"
                )
            if source.exists():
                shutil.rmtree(source)
            roots[0].rename(source)
        except (tarfile.TarError, EOFError, zlib.error) as e:  # EOFError: a truncated .gz
            archive.unlink(missing_ok=True)
            raise LLMError(
                f"unpack step: {archive.name} is damaged ({e}); it was deleted, "
                "run the build again to download it afresh"
            ) from e
        except OSError as e:
            raise LLMError(f"unpack step failed for {archive} in {version_dir}: {e}") from e
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return source


def _sdist(version_dir: Path, version: str, blog: BuildLog) -> Path:
    """The sdist archive of ``version``, downloaded into ``<version_dir>/sdist`` once."""
    download_dir = version_dir / "sdist"
    archives = sorted(download_dir.glob("*.tar.gz"))
    if not archives:
        blog.step(f"download: {DIST_NAME}=={version} sdist from the package index")
        command = [
            sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:",
            "--dest", str(download_dir), f"{DIST_NAME}=={version}",
        ]  # fmt: skip
        blog.run("download", command)
        archives = sorted(download_dir.glob("*.tar.gz"))
        if not archives:
            raise LLMError(f"download step left no .tar.gz in {download_dir}; see {blog.path}")
    return archives[-1]


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
