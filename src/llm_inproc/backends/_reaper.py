"""Run a server command and end it when the process that started us goes away.

``python -m llm_inproc.backends._reaper CMD...`` starts CMD and watches its own
stdin, a pipe from the Session's process: when that process ends, even by SIGKILL,
the kernel closes the pipe and the server is terminated (then killed). This works
whichever thread started the Session, unlike ``PR_SET_PDEATHSIG``, which fires when
the starting *thread* exits; we set that too, relative to this process's main
thread, in case this process is killed outright.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import subprocess
import sys
import threading

_PR_SET_PDEATHSIG = 1
_GRACE = 5.0


def _die_with_parent() -> None:
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


def _stop(child: subprocess.Popen[bytes]) -> None:
    if child.poll() is None:
        child.terminate()
        try:
            child.wait(_GRACE)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()


def main(argv: list[str]) -> int:
    if not argv:
        sys.stderr.write("usage: python -m llm_inproc.backends._reaper CMD [ARGS...]\n")
        return 2
    child = subprocess.Popen(argv, stdin=subprocess.DEVNULL, preexec_fn=_die_with_parent)

    def watch_parent() -> None:
        with contextlib.suppress(OSError):
            while sys.stdin.buffer.read(1024):
                pass
        _stop(child)
        os._exit(0)

    def on_term(_signum: int, _frame: object) -> None:
        _stop(child)
        os._exit(0)

    threading.Thread(target=watch_parent, daemon=True).start()
    signal.signal(signal.SIGTERM, on_term)
    code = child.wait()
    # Leave at once: a normal shutdown would wait on the thread blocked reading stdin.
    sys.stdout.flush()
    os._exit(code if code >= 0 else 128 - code)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
