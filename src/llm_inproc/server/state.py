"""The served Session's lifetime: loaded in a thread behind a listening server, then
shared by every request; and the latency histograms the server adds to ``/metrics``."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from ..metrics import Metrics
from ..reply import Reply
from ..session import Session
from .errors import ApiError
from .flags import ServerSettings

if TYPE_CHECKING:
    from starlette.requests import Request

__all__ = ["Histogram", "ServerState", "state_of"]

logger = logging.getLogger(__name__)


class Histogram:
    """A Prometheus histogram with fixed buckets (seconds).

    Kept by hand rather than ``prometheus_client.Histogram``: importing prometheus-client
    0.26 costs 64-147 ms at server start (it pulls ``http.server`` and ``wsgiref`` for
    exporters we do not use), it cannot observe one value ``times`` times (a batch of
    tokens' inter-token latency, one lock instead of n), and this is 35 lines.
    """

    def __init__(self, name: str, help_: str, buckets: tuple[float, ...]) -> None:
        self.name, self.help, self.buckets = name, help_, buckets
        self._counts = [0] * len(buckets)
        self._sum = 0.0
        self._count = 0
        self._lock = threading.Lock()

    def observe(self, value: float, times: int = 1) -> None:
        if times <= 0:
            return
        with self._lock:
            for i, bound in enumerate(self.buckets):
                if value <= bound:
                    self._counts[i] += times
            self._sum += value * times
            self._count += times

    def to_prometheus(self) -> str:
        with self._lock:
            counts, total, count = list(self._counts), self._sum, self._count
        lines = [f"# HELP {self.name} {self.help}", f"# TYPE {self.name} histogram"]
        lines += [
            f'{self.name}_bucket{{le="{b:g}"}} {c}'
            for b, c in zip(self.buckets, counts, strict=True)
        ]
        lines += [
            f'{self.name}_bucket{{le="+Inf"}} {count}',
            f"{self.name}_sum {total:.6f}",
            f"{self.name}_count {count}",
        ]
        return "\n".join(lines) + "\n"


class ServerState:
    """The settings, the Session once loaded (or why it failed), and what was measured."""

    def __init__(self, settings: ServerSettings, load: Callable[[], Session]) -> None:
        self.settings = settings
        self._load = load
        self.session: Session | None = None
        self.error: BaseException | None = None
        self.loaded = threading.Event()
        """Set once loading ended, well or not."""
        self.created = int(time.time())
        self.on_failure: Callable[[BaseException], None] = lambda e: None
        self._closed = False
        self._lock = threading.Lock()
        self.ttft = Histogram(
            "llminproc:time_to_first_token_seconds",
            "Time from a request's arrival to its first generated token",
            (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0),
        )
        self.itl = Histogram(
            "llminproc:inter_token_latency_seconds",
            "Time between two generated tokens of a request",
            (0.001, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0),
        )

    @property
    def model_name(self) -> str:
        """``--alias``, else the ``-m`` value, else the default model."""
        if self.settings.alias:
            return self.settings.alias
        if self.settings.options.model:
            return self.settings.options.model
        return str(self.session.model) if self.session is not None else ""

    @property
    def model_path(self) -> str:
        path: Path | None = getattr(self.session, "model_path", None)
        return str(path) if path is not None else self.model_name

    def start_loading(self) -> None:
        threading.Thread(target=self._run_load, name="llm-inproc-load", daemon=True).start()

    def _run_load(self) -> None:
        try:
            session = self._load()
        except BaseException as e:
            self.error = e
            self.loaded.set()
            self.on_failure(e)
            return
        with self._lock:
            if self._closed:
                session.close()
            else:
                self.session = session
        if self.session is not None:  # the template is read here, not at the first chat
            self.session.thinking_markers(self.settings.chat_template)
        self.loaded.set()

    def not_ready(self) -> ApiError:
        """The 503 llama-server answers while the model loads (or after it failed to)."""
        if self.error is not None:
            return ApiError(503, f"the model failed to load: {self.error}", "unavailable_error")
        return ApiError(503, "Loading model", "unavailable_error")

    def ready(self) -> Session:
        """The Session, or :meth:`not_ready`'s error."""
        session = self.session
        if session is None:
            raise self.not_ready()
        return session

    def record(self, reply: Reply) -> None:
        if reply.generated.count:
            self.ttft.observe(reply.time_to_first_token.total_seconds())
        if reply.generated.count > 1:
            gap = reply.generated.duration.total_seconds() / (reply.generated.count - 1)
            self.itl.observe(gap, reply.generated.count - 1)

    def metrics_page(self) -> str:
        metrics: Metrics = self.ready().get_metrics()
        extra = [
            (
                "llamacpp:prompt_tokens_seconds",
                "Average prompt throughput in tokens/s",
                metrics.prompt.rate(),
            ),
            (
                "llamacpp:predicted_tokens_seconds",
                "Average generation throughput in tokens/s",
                metrics.generated.rate(),
            ),
        ]
        lines = [metrics.to_prometheus()]
        for name, help_, value in extra:
            lines.append(f"# HELP {name} {help_}\n# TYPE {name} gauge\n{name} {value:.3f}\n")
        lines += [self.ttft.to_prometheus(), self.itl.to_prometheus()]
        return "".join(lines)

    def close(self) -> None:
        with self._lock:
            self._closed = True
            session, self.session = self.session, None
        if session is not None:
            session.close()


def state_of(request: Request) -> ServerState:
    """The server's state, from a request to its app."""
    state: ServerState = request.app.state.llm
    return state
