"""One request at a time on a llama.cpp context, first come first served, bounded queue."""

from __future__ import annotations

import collections
import threading
from types import TracebackType

from ..errors import BusyError, InvalidInputError, SessionClosedError

__all__ = ["Gate"]


class Gate:
    """A FIFO lock that counts who is waiting, refuses past ``max_pending`` and can be closed.

    A thread that still holds the gate (an unfinished streaming reply) and asks
    again gets an error instead of a deadlock.
    """

    def __init__(self, max_pending: int) -> None:
        self.max_pending = max_pending
        self.closed = False
        self._cond = threading.Condition()
        self._owner: int | None = None
        self._waiters: collections.deque[object] = collections.deque()

    @property
    def processing(self) -> int:
        return 0 if self._owner is None else 1

    @property
    def pending(self) -> int:
        return len(self._waiters)

    def __enter__(self) -> Gate:
        me = threading.get_ident()
        with self._cond:
            if self.closed:
                raise SessionClosedError("the session is closed; create a new Session")
            if self._owner == me:
                raise InvalidInputError(
                    "this thread is still reading a streaming reply from this session; "
                    "finish or close that iterator before sending another prompt"
                )
            if self._owner is not None or self._waiters:
                if len(self._waiters) >= self.max_pending:
                    raise BusyError(
                        f"the session is busy and {len(self._waiters)} requests already wait "
                        f"(max_pending={self.max_pending}); retry later or raise "
                        "Options.max_pending"
                    )
                ticket = object()
                self._waiters.append(ticket)
                try:
                    while self._owner is not None or self._waiters[0] is not ticket:
                        self._cond.wait()
                        if self.closed:
                            raise SessionClosedError(
                                "the session was closed while this request waited"
                            )
                finally:
                    self._waiters.remove(ticket)
                    self._cond.notify_all()
            self._owner = me
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        with self._cond:
            self._owner = None
            self._cond.notify_all()

    def close(self, wait: float = 5.0) -> bool:
        """Refuse new requests and give the running one up to ``wait`` seconds to stop.

        A running request notices ``closed`` within a token. Returns True when the
        caller may free resources now, False when the request still holds the gate
        (it runs in this thread, or its stream is left open) and must free them
        when it ends.
        """
        with self._cond:
            self.closed = True
            self._cond.notify_all()
            if self._owner == threading.get_ident():
                return False
            return self._cond.wait_for(lambda: self._owner is None, timeout=wait)
