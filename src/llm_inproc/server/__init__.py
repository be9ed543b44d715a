"""``llm-inproc serve`` / ``python -m llm_inproc.server``: a drop-in for llama-server.

One Session served over llama-server's HTTP API on Starlette and uvicorn: its routes,
fields, status codes, error shapes and command-line flags, plus OpenAI's routes.

- :mod:`.flags` command-line flags and :class:`~.flags.ServerSettings`
- :mod:`.run` binding the port, running uvicorn, ``main``
- :mod:`.app` the ASGI app and its routes; :mod:`.gate` CORS, API key, loading check
- :mod:`.generation` completion and chat routes; :mod:`.info` everything else
- :mod:`.parse` request bodies; :mod:`.prompts` requests for the Session
- :mod:`.state` the Session's lifetime and latency histograms; :mod:`.errors` HTTP errors
- response bodies and SSE framing are in :mod:`llm_inproc.wire`, shared with the client

Importing this package imports neither Starlette nor uvicorn; :func:`serve` does.
"""

from __future__ import annotations

from .flags import API_KEY_ENV, ServerSettings
from .run import main, serve

__all__ = ["API_KEY_ENV", "ServerSettings", "main", "serve"]
