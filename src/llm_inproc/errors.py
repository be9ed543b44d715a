"""The exceptions llm_inproc raises.

Every error derives from one root, and also from the built-in a caller would
naturally catch, so ``except FileNotFoundError`` keeps working::

    LLMError
    ├── InvalidInputError (ValueError)      bad reference, option, message list, argument
    │   └── ContextOverflowError            the prompt does not fit in the context window
    ├── ModelNotFoundError (FileNotFoundError)  no such file, repository, revision or quantization
    ├── MemoryFileNotFoundError (FileNotFoundError)  ``Memory.load_file`` of a missing file
    ├── ModelLoadError                      the file exists but llama.cpp cannot load it
    ├── BackendError (ConnectionError)      a server is unreachable or answered with an error
    ├── BusyError                           too many requests already wait for the session
    ├── RequestTimeoutError (TimeoutError)  a request ran past its ``timeout``
    └── SessionClosedError                  the session was closed

Messages say what was wrong and what to do about it.
"""

from __future__ import annotations

__all__ = [
    "BackendError",
    "BusyError",
    "ContextOverflowError",
    "InvalidInputError",
    "LLMError",
    "MemoryFileNotFoundError",
    "ModelLoadError",
    "ModelNotFoundError",
    "RequestTimeoutError",
    "SessionClosedError",
]


class LLMError(Exception):
    """Root of every error raised by llm_inproc."""


class InvalidInputError(LLMError, ValueError):
    """An argument, reference, option or message list is not acceptable."""


class ContextOverflowError(InvalidInputError):
    """The prompt (plus the reply budget) does not fit in the context window."""


class ModelNotFoundError(LLMError, FileNotFoundError):
    """The model file, repository, revision or quantization does not exist."""


class MemoryFileNotFoundError(LLMError, FileNotFoundError):
    """``Memory.load_file`` was given a path where there is no file (``filename`` is it)."""


class ModelLoadError(LLMError):
    """The model file exists but could not be loaded (corrupt, truncated, not GGUF, no memory)."""


class BackendError(LLMError, ConnectionError):
    """A server could not be reached or answered with an error."""


class BusyError(LLMError):
    """The session's request queue is full; retry later or raise ``Options.max_pending``."""


class RequestTimeoutError(LLMError, TimeoutError):
    """A request ran past the ``timeout`` it was given; it was stopped."""


class SessionClosedError(LLMError):
    """The session was closed; create a new one."""
