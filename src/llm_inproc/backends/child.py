"""A server in a child process: started on a free loopback port, watched until healthy,
logged to a file, and ended on close or when our process dies.

The one way this project starts a server: the spawned backends (``backend="llama-server"``
and ``model="python"``), the benchmark suite's server peers, ``benchmarks/`` and the tests.
"""

from __future__ import annotations

import collections
import http.client
import logging
import os
import socket
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

from ..errors import BackendError

__all__ = ["ChildServer", "free_port"]

logger = logging.getLogger(__name__)

_STOP_GRACE = 10.0


def free_port(host: str = "127.0.0.1") -> int:
    """A port nobody listens on right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


class ChildServer:
    """Runs ``command`` (which must listen on ``port``) until :meth:`close`.

    ``env`` adds to (or replaces entries of) this process's environment for the child;
    with ``inherit_env=False`` it is the whole environment. The log goes to ``log_path``,
    else ``log_dir/<name>-<port>.log``. ``reaped`` (the default) runs the server under a
    reaper that ends it when this process goes away, from whichever thread started it;
    without it, the server is this process's own child (its :attr:`pid` is the server's,
    for measuring it) and dies with this process's main thread (Linux).
    """

    def __init__(
        self,
        name: str,
        command: Sequence[str],
        port: int,
        log_dir: Path,
        *,
        host: str = "127.0.0.1",
        env: Mapping[str, str] | None = None,
        inherit_env: bool = True,
        reaped: bool = True,
        log_path: Path | None = None,
    ) -> None:
        from ._reaper import _die_with_parent

        self.name = name
        self.port = port
        self.url = f"http://{host}:{port}"
        self.log_path = log_path or log_dir / f"{name}-{port}.log"
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = self.log_path.open("wb")
        self.started = time.perf_counter()
        logger.info("starting %s on %s (log: %s)", name, self.url, self.log_path)
        environ = {**(os.environ if inherit_env else {}), **(env or {}), "PYTHONUNBUFFERED": "1"}
        if reaped:
            # The reaper ends the server when this process goes away, even by SIGKILL.
            self._proc = subprocess.Popen(
                [sys.executable, "-m", "llm_inproc.backends._reaper", *command],
                stdin=subprocess.PIPE,
                stdout=self._log,
                stderr=subprocess.STDOUT,
                env=environ,
            )
        else:
            self._proc = subprocess.Popen(
                list(command),
                stdin=subprocess.DEVNULL,
                stdout=self._log,
                stderr=subprocess.STDOUT,
                env=environ,
                preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None,
            )

    @property
    def pid(self) -> int:
        """The server's process id (the reaper's, for a reaped server)."""
        return self._proc.pid

    def output(self) -> str:
        """Everything the server wrote so far."""
        return self.log_path.read_text(errors="replace")

    def kill(self) -> None:
        """Kill the server outright (SIGKILL), as a crash would."""
        self._proc.kill()
        self._proc.wait()

    def wait_healthy(self, timeout: float) -> None:
        """Return once ``/health`` answers 200; raise :class:`BackendError` with the log's
        last lines if the child exits first or ``timeout`` seconds pass."""
        deadline = time.monotonic() + timeout
        while True:
            code = self._proc.poll()
            if code is not None:
                self.close()
                raise BackendError(
                    f"{self.name} exited with status {code} before it was ready: "
                    f"{self.log_tail()} (full log: {self.log_path})"
                )
            if self._healthy():
                return
            if time.monotonic() > deadline:
                self.close()
                raise BackendError(
                    f"{self.name} was not ready within {timeout:g} s: {self.log_tail()} "
                    f"(full log: {self.log_path})"
                )
            time.sleep(0.05)

    def _healthy(self) -> bool:
        # http.client, not urllib: a proxy from the environment must never see loopback.
        host, _, port = self.url.removeprefix("http://").rpartition(":")
        conn = http.client.HTTPConnection(host.strip("[]"), int(port), timeout=2)
        try:
            conn.request("GET", "/health")
            return conn.getresponse().status == 200
        except (OSError, http.client.HTTPException):
            return False
        finally:
            conn.close()

    def log_tail(self, lines: int = 5) -> str:
        """The last lines the child wrote, joined for an error message."""
        try:
            with self.log_path.open("rb") as f:
                tail = collections.deque(f, maxlen=lines)
        except OSError:
            return "(no log)"
        text = " | ".join(t.decode("utf-8", errors="replace").strip() for t in tail)
        return text.strip(" |") or "(it printed nothing)"

    @property
    def running(self) -> bool:
        return self._proc.poll() is None

    def close(self) -> None:
        """Terminate the server (the reaper forwards it), then kill it if it lingers."""
        proc = self._proc
        if proc.poll() is None:
            if proc.stdin is not None:
                proc.stdin.close()  # the reaper's signal to stop the server
            else:
                proc.terminate()  # our own child: ask it directly
            try:
                proc.wait(_STOP_GRACE)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        elif proc.stdin is not None:
            proc.stdin.close()
        self._log.close()
