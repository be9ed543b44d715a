"""What a tool is, what a call to one is, and what a request asks of them.

Kept free of the backends and of llama.cpp: the messages, the Memory file format, the
server and the HTTP client all speak these values.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from ..errors import InvalidInputError

__all__ = [
    "Constraint",
    "Tool",
    "ToolCall",
    "ToolChoice",
    "ToolRequest",
    "as_tools",
    "tool_request",
]

ToolChoice = Literal["auto", "none", "required"] | str
"""``"auto"`` (the model decides), ``"none"`` (no call), ``"required"`` (at least one call),
or the name of the one tool the model must call."""

_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")


@dataclass(frozen=True)
class ToolCall:
    """One call the model asked for."""

    id: str
    """The call's id; a tool result names it (``Message.tool_call_id``)."""
    name: str
    """The tool's name."""
    arguments: Mapping[str, Any]
    """The arguments, parsed from the model's JSON."""
    raw: str = ""
    """The arguments' JSON text as the model wrote it (``json.dumps(arguments)`` if none)."""

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise InvalidInputError("a tool call needs a name (a non-empty string)")
        if not isinstance(self.id, str):
            raise InvalidInputError(f"tool call {self.name!r}: id must be a string")
        if not isinstance(self.arguments, Mapping):
            raise InvalidInputError(
                f"tool call {self.name!r}: arguments must be a JSON object (a dict), "
                f"not {type(self.arguments).__name__}"
            )
        if not self.raw:
            object.__setattr__(self, "raw", json.dumps(dict(self.arguments), ensure_ascii=False))

    def to_dict(self) -> dict[str, Any]:
        """The call as a model writes it in JSON (name, arguments as an object, id)."""
        return {"name": self.name, "arguments": dict(self.arguments), "id": self.id}

    def to_openai(self) -> dict[str, Any]:
        """The call as OpenAI's ``tool_calls`` entries are written (arguments as JSON text)."""
        return {
            "id": self.id,
            "type": "function",
            "function": {"name": self.name, "arguments": self.raw},
        }

    @classmethod
    def from_openai(cls, data: Any, where: str = "tool call") -> ToolCall:
        """Read an OpenAI ``tool_calls`` entry; malformed ``arguments`` raise
        :class:`InvalidInputError` naming ``where``."""
        if not isinstance(data, Mapping):
            raise InvalidInputError(f"{where} must be an object with 'function'")
        fn = data.get("function", data)
        if not isinstance(fn, Mapping) or not isinstance(fn.get("name"), str):
            raise InvalidInputError(f"{where} needs function.name (a string)")
        args = fn.get("arguments", {})
        raw = ""
        if isinstance(args, str):
            raw = args
            try:
                args = json.loads(args) if args.strip() else {}
            except json.JSONDecodeError as e:
                raise InvalidInputError(
                    f"{where}: function.arguments is not valid JSON ({e.msg} at {e.pos}); "
                    "send the arguments as a JSON object text"
                ) from None
        if not isinstance(args, Mapping):
            raise InvalidInputError(f"{where}: function.arguments must be a JSON object")
        call_id = data.get("id") or ""
        return cls(id=str(call_id), name=fn["name"], arguments=dict(args), raw=raw)


@dataclass(frozen=True)
class Tool:
    """A function the model may call: a name, what it does, and a JSON Schema of its
    parameters (an ``object`` schema). ``function`` is the Python callable, when the tool
    was made from one; :meth:`Session.run_tools` calls it."""

    name: str
    description: str = ""
    parameters: Mapping[str, Any] = field(
        default_factory=lambda: {"type": "object", "properties": {}}
    )
    function: Callable[..., Any] | None = field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not _NAME.match(self.name):
            raise InvalidInputError(
                f"tool name {self.name!r} is not valid: use 1-64 letters, digits, '_', '.' or '-'"
            )
        if not isinstance(self.description, str):
            raise InvalidInputError(f"tool {self.name!r}: description must be a string")
        params = self.parameters
        if not isinstance(params, Mapping):
            raise InvalidInputError(
                f"tool {self.name!r}: parameters must be a JSON Schema object (a dict), "
                f"not {type(params).__name__}"
            )
        if params.get("type", "object") != "object":
            raise InvalidInputError(
                f"tool {self.name!r}: the parameters schema must have type 'object' "
                f"(got {params.get('type')!r}); put the values under 'properties'"
            )
        props = params.get("properties", {})
        if not isinstance(props, Mapping):
            raise InvalidInputError(f"tool {self.name!r}: parameters.properties must be an object")
        required = params.get("required", [])
        if not isinstance(required, list) or not all(isinstance(r, str) for r in required):
            raise InvalidInputError(
                f"tool {self.name!r}: parameters.required must be a list of names"
            )
        missing = [r for r in required if props and r not in props]
        if missing:
            raise InvalidInputError(
                f"tool {self.name!r}: required parameter {missing[0]!r} is not in properties"
            )
        try:
            json.dumps(dict(params))
        except (TypeError, ValueError) as e:
            raise InvalidInputError(f"tool {self.name!r}: parameters are not JSON ({e})") from None
        if "type" not in params:
            object.__setattr__(self, "parameters", {"type": "object", **params})

    @classmethod
    def from_function(cls, fn: Callable[..., Any]) -> Tool:
        """A tool from a Python function: parameters from its type hints, the description
        from its docstring's first paragraph, each parameter's from its ``Args:`` section."""
        from .functions import tool_from_function

        return tool_from_function(fn)

    def to_openai(self) -> dict[str, Any]:
        """The tool as OpenAI's ``tools`` entries (and Jinja chat templates) expect it."""
        fn: dict[str, Any] = {"name": self.name}
        if self.description:
            fn["description"] = self.description
        fn["parameters"] = dict(self.parameters)
        return {"type": "function", "function": fn}

    @classmethod
    def from_openai(cls, data: Any, where: str = "tool") -> Tool:
        """Read ``{"type": "function", "function": {...}}`` (or the bare function object)."""
        if not isinstance(data, Mapping):
            raise InvalidInputError(f"{where} must be an object, not {type(data).__name__}")
        if "function" in data:
            if data.get("type", "function") != "function":
                raise InvalidInputError(f"{where}: only type 'function' tools are supported")
            fn = data["function"]
        else:
            fn = data
        if not isinstance(fn, Mapping):
            raise InvalidInputError(f"{where}: 'function' must be an object")
        unknown = set(fn) - {"name", "description", "parameters", "strict"}
        if unknown:
            raise InvalidInputError(f"{where}: unknown key {sorted(unknown)[0]!r} in the function")
        if "name" not in fn:
            raise InvalidInputError(f"{where}: the function needs a 'name'")
        params = fn.get("parameters")
        return cls(
            name=fn["name"],
            description=fn.get("description") or "",
            parameters=params if params is not None else {"type": "object", "properties": {}},
        )


def as_tools(tools: Iterable[Any] | None) -> tuple[Tool, ...]:
    """``tools`` as :class:`Tool` values: each a Tool, an OpenAI-style dict, or a function.
    Duplicate names are refused."""
    if tools is None:
        return ()
    if isinstance(tools, (str, bytes, Mapping)) or callable(tools):
        raise InvalidInputError("tools must be a list (of Tool, OpenAI tool dicts or functions)")
    out: list[Tool] = []
    for i, item in enumerate(tools):
        if isinstance(item, Tool):
            out.append(item)
        elif isinstance(item, Mapping):
            out.append(Tool.from_openai(item, where=f"tools[{i}]"))
        elif callable(item):
            out.append(Tool.from_function(item))
        else:
            raise InvalidInputError(
                f"tools[{i}] is a {type(item).__name__}; give a Tool, an OpenAI tool dict "
                "or a Python function"
            )
    seen: set[str] = set()
    for t in out:
        if t.name in seen:
            raise InvalidInputError(f"two tools are named {t.name!r}; tool names must be unique")
        seen.add(t.name)
    return tuple(out)


@dataclass(frozen=True)
class ToolRequest:
    """The tools of one request and what is asked of them."""

    tools: tuple[Tool, ...]
    choice: Literal["auto", "required", "none"] = "auto"
    name: str | None = None
    """The one tool the model must call (``choice`` is then ``"required"``)."""
    parallel: bool = False
    """Whether the model may answer with several calls at once."""

    @property
    def offered(self) -> tuple[Tool, ...]:
        """The tools the model may call: the named one, or all."""
        if self.name is None:
            return self.tools
        return tuple(t for t in self.tools if t.name == self.name)


def tool_request(
    tools: Iterable[Any] | None, choice: Any = None, parallel: bool | None = None
) -> ToolRequest | None:
    """Validate ``tools``, ``tool_choice`` and ``parallel_tool_calls`` together; None
    when no tools are given (a ``tool_choice`` then is refused unless ``"none"``/``"auto"``)."""
    found = as_tools(tools)
    if parallel is not None and not isinstance(parallel, bool):
        raise InvalidInputError("parallel_tool_calls must be True or False")
    name: str | None = None
    if choice is None:
        mode = "auto"
    elif isinstance(choice, Mapping):  # OpenAI's {"type": "function", "function": {"name": ...}}
        fn = choice.get("function")
        if not isinstance(fn, Mapping) or not isinstance(fn.get("name"), str):
            raise InvalidInputError(
                "tool_choice as an object must be {'type': 'function', 'function': {'name': ...}}"
            )
        mode, name = "required", fn["name"]
    elif choice in ("auto", "none", "required"):
        mode = choice
    elif isinstance(choice, str) and choice:
        mode, name = "required", choice
    else:
        raise InvalidInputError(
            f"tool_choice {choice!r} is not valid: use 'auto', 'none', 'required' or a tool's name"
        )
    if not found:
        if mode == "required":
            raise InvalidInputError(f"tool_choice {choice!r} needs tools; pass tools=[...]")
        return None
    if name is not None and name not in {t.name for t in found}:
        names = ", ".join(t.name for t in found)
        raise InvalidInputError(
            f"tool_choice names {name!r}, which is not among the tools ({names})"
        )
    return ToolRequest(found, mode, name, bool(parallel))  # type: ignore[arg-type]


@dataclass(frozen=True)
class Constraint:
    """What the sampler must enforce for a tool request: a GBNF grammar (root rule
    ``root``), applied from the first token, or lazily once a trigger matches."""

    grammar: str
    triggers: tuple[str, ...] = ()
    """Regexes as llama.cpp's lazy grammar takes them: searched in the text generated so
    far (anchored ``^...$`` for a whole-text match); the grammar then applies from the
    first non-empty capture group (else the match) on. Empty: not lazy."""

    @property
    def lazy(self) -> bool:
        return bool(self.triggers)
