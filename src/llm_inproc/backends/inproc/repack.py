"""Whether llama.cpp may repack weights on this machine, decided once and remembered.

Weight repacking ("extra buffer types") is what routes a prompt batch through ggml's
AMX tile kernels on CPUs that report AMX. Some virtual machines report AMX yet kill the
first ``tilezero`` with SIGILL, and that signal would take the caller's whole process
with it. So, where the build has AMX kernels, a child process loads the model with
repacking on and evaluates a real prompt batch; if it dies by a signal, repacking stays
off here. The verdict is cached per CPU, kernel and llama.cpp build, so only the first
load on a machine pays for the probe. Builds without AMX kernels repack as llama.cpp
does by default, with no probe.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import platform
import signal
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

__all__ = ["PROBE_TIMEOUT", "RepackProbe", "Verdict", "build_has_amx", "resolve_repack"]

logger = logging.getLogger(__name__)

PROBE_TIMEOUT = 300.0
"""Seconds the probe child may take (a large model's load included)."""

_PROBE_TOKENS = 64  # above the row count where ggml's AMX kernels take over from VNNI
_VERSION = 1


@dataclass(frozen=True)
class Verdict:
    """What the probe found: whether repacking is safe, and why."""

    safe: bool
    reason: str
    conclusive: bool = True
    """False when the probe did not finish (not cached: the next load probes again)."""


def build_has_amx(system_info: str) -> bool:
    """Whether this llama.cpp build carries AMX kernels (``AMX_INT8 = 1`` in its info)."""
    return "AMX_INT8 = 1" in system_info


def _cpu_identity() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            lines = f.read().splitlines()
    except OSError:
        return platform.processor()
    keep = ("model name", "flags", "vendor_id", "Features", "CPU part")
    return "\n".join(sorted({ln for ln in lines if ln.split(":")[0].strip() in keep}))


def _library_identity() -> str:
    """The llama.cpp shared library this process runs, by path, size and time."""
    try:
        import llama_cpp
    except (ImportError, OSError):
        return "no llama_cpp"
    lib_dir = Path(llama_cpp.__file__).parent / "lib"
    parts = [getattr(llama_cpp, "__version__", "")]
    for p in sorted(lib_dir.glob("*")) if lib_dir.is_dir() else []:
        with contextlib.suppress(OSError):
            st = p.stat()
            parts.append(f"{p.name}:{st.st_size}:{int(st.st_mtime)}")
    return "\n".join(parts)


def fingerprint(system_info: str) -> str:
    """Names what the verdict depends on: CPU, kernel, and the llama.cpp build."""
    parts = [str(_VERSION), _cpu_identity(), platform.release(), _library_identity()]
    text = "\n--\n".join([*parts, system_info.strip()])
    return hashlib.sha256(text.encode()).hexdigest()[:20]


def _probe_command() -> list[str]:
    return [sys.executable, "-c", f"from {__name__} import probe_main; probe_main()"]


def _child_env() -> dict[str, str]:
    # The child imports this very package, wherever it was imported from here.
    root = str(Path(__file__).resolve().parents[3])
    path = os.environ.get("PYTHONPATH", "")
    return {**os.environ, "PYTHONPATH": root + (os.pathsep + path if path else "")}


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


class RepackProbe:
    """Runs the probe child once per fingerprint and caches its verdict under ``cache_dir``.

    ``command`` is the child's argv (the model is appended); the default loads the model
    with repacking on and evaluates a prompt batch.
    """

    def __init__(
        self,
        cache_dir: Path,
        key: str,
        *,
        command: Sequence[str] | None = None,
        timeout: float = PROBE_TIMEOUT,
    ) -> None:
        self.path = Path(cache_dir) / "probes" / f"repack-{key}.json"
        self._command = list(command) if command is not None else None
        self._timeout = timeout

    def cached(self) -> Verdict | None:
        """The remembered verdict, or None (a damaged file counts as none)."""
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
            return Verdict(safe=bool(data["safe"]), reason=str(data["reason"]))
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def verdict(self, model: Path) -> Verdict:
        """The cached verdict, or the probe's on ``model`` (cached when it is conclusive)."""
        known = self.cached()
        if known is not None:
            return known
        found = self._run(model)
        if found is not None:
            self._save(found)
            return found
        # Off meanwhile: a crash costs more than a slower prompt.
        return Verdict(False, "the repacking probe did not finish", conclusive=False)

    def _run(self, model: Path) -> Verdict | None:
        argv = [*(self._command or _probe_command()), str(model)]
        logger.info("probing whether weight repacking runs on this CPU (once per machine)")
        try:
            done = subprocess.run(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                timeout=self._timeout,
                check=False,
                env=_child_env(),
            )
        except subprocess.TimeoutExpired:
            logger.debug("the repacking probe took over %.0f s; not cached", self._timeout)
            return None
        except OSError as e:
            logger.debug("the repacking probe could not start: %s", e)
            return None
        if done.returncode == 0:
            return Verdict(True, "a prompt batch ran with repacking on")
        if done.returncode < 0:
            name = _signal_name(-done.returncode)
            return Verdict(False, f"a prompt batch with repacking on died with {name}")
        tail = done.stderr.decode("utf-8", "replace").strip().splitlines()[-3:]
        logger.debug("the repacking probe failed (exit %d): %s", done.returncode, tail)
        return None

    def _save(self, verdict: Verdict) -> None:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=".repack-", suffix=".tmp")
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                json.dump({"safe": verdict.safe, "reason": verdict.reason}, f)
            os.replace(tmp, self.path)
        except OSError as e:  # a read-only cache only costs a probe next time
            logger.debug("cannot save the repacking verdict to %s: %s", self.path, e)


def _probe_model(model: Path) -> Path:
    """The small embedded model when it is installed (its Q4_1 weights take the AMX
    kernels, and it loads in a moment), else the model about to be loaded."""
    from ...models.embedded import SMOLLM2_INSTRUCT, installed_file

    return installed_file(SMOLLM2_INSTRUCT) or model


def resolve_repack(
    option: bool | None,
    model: Path,
    cache_dir: Path,
    system_info: str,
    *,
    probe_command: Sequence[str] | None = None,
) -> tuple[bool, str]:
    """Whether to repack, and why: the option when set, else the cached probe's verdict
    (``probe_command``: the probe child's argv, the model appended; default: the real one)."""
    if option is not None:
        return option, "set by Options.repack"
    if not build_has_amx(system_info):
        return True, "this llama.cpp build has no AMX kernels"
    key = fingerprint(system_info)
    probe = RepackProbe(cache_dir, key, command=probe_command)
    known = probe.cached()
    verdict = known or probe.verdict(_probe_model(model))
    if not verdict.conclusive:
        logger.warning(
            "weight repacking is off for this load: %s (run with debug logs to see why); "
            "force it with Options(repack=True) or --repack",
            verdict.reason,
        )
    elif not verdict.safe:
        # Said once, when the probe finds it; later loads read the verdict (see `info`).
        logger.log(
            logging.INFO if known is not None else logging.WARNING,
            "weight repacking is off: %s, so this CPU reports AMX but cannot run it "
            "(llama.cpp issue 28756); prompts are evaluated more slowly. Force it with "
            "Options(repack=True) or --repack; the verdict is cached in %s",
            verdict.reason,
            cache_dir / "probes",
        )
    return verdict.safe, verdict.reason


def probe_main() -> None:
    """The probe child: load the model named by ``argv[1]`` with repacking on and
    evaluate one prompt batch; exit 0 when it ran."""
    model = Path(sys.argv[1])
    from ._llama import lib
    from .model import Context, Model

    loaded = Model(model, gpu_layers=0, repack=True)
    ctx = Context(loaded, 256, 2, 1, flash_attention=False)
    ll = loaded.ll
    text = " ".join(["The quick brown fox jumps over the lazy dog."] * 16)
    tokens = loaded.tokenize(text)[:_PROBE_TOKENS]
    ids = (ll.llama_token * len(tokens))(*tokens)  # the batch only points at it: keep it
    rc = lib().llama_decode(ctx.ptr, ll.llama_batch_get_one(ids, len(tokens)))
    ctx.free()
    loaded.free()
    sys.exit(0 if rc == 0 else 3)
