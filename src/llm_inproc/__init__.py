"""Run a local LLM inside your Python process.

>>> from llm_inproc import Message, Role, Session
>>> with Session() as s:
...     print(s.prompt([Message(Role.USER, "Why is the sky blue?")], max_tokens=64))

``import llm_inproc`` is cheap: llama.cpp is only loaded when a Session starts.
"""

from __future__ import annotations

from .config import DEFAULT_MODEL, Config, KnownLLM, Options, default_config, load_config
from .embeddings import RankedDocument
from .errors import (
    BackendError,
    BusyError,
    ContextOverflowError,
    InvalidInputError,
    LLMError,
    MemoryFileNotFoundError,
    ModelLoadError,
    ModelNotFoundError,
    RequestTimeoutError,
    SessionClosedError,
)
from .memory import Conversation, Memory
from .metrics import Metrics, TokenPerformance
from .models.references import ModelRef, PackedFileRef, PackedRepoRef, make_packed_file_ref
from .prompting.encoding import PromptEncoding
from .prompting.messages import Message, Role
from .reply import Reply
from .sampling import Sampling, TokenProb
from .session import Session
from .tools.types import Tool, ToolCall

__version__ = "0.1.0"

__all__ = [
    "DEFAULT_MODEL",
    "BackendError",
    "BusyError",
    "Config",
    "ContextOverflowError",
    "Conversation",
    "InvalidInputError",
    "KnownLLM",
    "LLMError",
    "Memory",
    "MemoryFileNotFoundError",
    "Message",
    "Metrics",
    "ModelLoadError",
    "ModelNotFoundError",
    "ModelRef",
    "Options",
    "PackedFileRef",
    "PackedRepoRef",
    "PromptEncoding",
    "RankedDocument",
    "Reply",
    "RequestTimeoutError",
    "Role",
    "Sampling",
    "Session",
    "SessionClosedError",
    "TokenPerformance",
    "TokenProb",
    "Tool",
    "ToolCall",
    "default_config",
    "load_config",
    "make_packed_file_ref",
]
