"""Tools from Python functions: the schema of each type hint, docstring parsing, the errors
for what a model cannot be told, and ``call_tool`` running one with a model's arguments.

Every schema produced here must go through llama.cpp's JSON-Schema-to-grammar converter,
which is how a call is constrained."""

from __future__ import annotations

import functools
import inspect
import json
import typing
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from enum import Enum, IntEnum
from typing import Annotated, Any, Literal, NewType, Optional, TypedDict, Union

import pytest
from llama_cpp.llama_grammar import json_schema_to_gbnf

from llm_inproc import InvalidInputError, Message, Reply, Role, Sampling, Session
from llm_inproc.tools.functions import call_tool, tool_from_function
from llm_inproc.tools.types import Tool, as_tools


class Color(Enum):
    RED = "red"
    GREEN = "green"


class Priority(IntEnum):
    LOW = 1
    HIGH = 2


@dataclass
class Point:
    x: float
    y: Annotated[float, "the vertical one"] = 0.0
    tags: list[str] = field(default_factory=list)


class Filters(TypedDict, total=False):
    city: str
    max_price: int


@dataclass
class Node:
    child: Node | None


class Opaque:
    pass


UserId = NewType("UserId", int)


def grammar(schema: Mapping[str, Any]) -> str:
    """The GBNF llama.cpp would constrain a call with; fails the test if it cannot."""
    text = json_schema_to_gbnf(json.dumps(schema))
    assert isinstance(text, str) and "root ::=" in text
    return text


def with_hint(hint: Any, default: Any = None) -> Callable[..., Any]:
    """A function ``probe(x: hint)`` (with ``default`` unless it is None)."""

    def probe(x):  # type: ignore[no-untyped-def]
        return x

    probe.__annotations__ = {"x": hint}
    if default is not None:
        probe.__defaults__ = (default,)
    return probe


def schema_of(hint: Any) -> dict[str, Any]:
    tool = tool_from_function(with_hint(hint))
    grammar(tool.parameters)
    prop: dict[str, Any] = tool.parameters["properties"]["x"]
    return prop


# --- the schema of each type ----------------------------------------------------------


ANY = {"type": ["string", "number", "boolean", "object", "array", "null"]}

CASES: list[tuple[Any, dict[str, Any]]] = [
    (str, {"type": "string"}),
    (int, {"type": "integer"}),
    (float, {"type": "number"}),
    (bool, {"type": "boolean"}),
    (list[int], {"type": "array", "items": {"type": "integer"}}),
    (typing.List[str], {"type": "array", "items": {"type": "string"}}),  # noqa: UP006
    (list, {"type": "array"}),
    (list[Any], {"type": "array"}),
    (tuple[int, ...], {"type": "array", "items": {"type": "integer"}}),
    (
        tuple[int, str],
        {
            "type": "array",
            "prefixItems": [{"type": "integer"}, {"type": "string"}],
            "minItems": 2,
            "maxItems": 2,
        },
    ),
    (Sequence[float], {"type": "array", "items": {"type": "number"}}),
    (set[str], {"type": "array", "items": {"type": "string"}, "uniqueItems": True}),
    (dict[str, int], {"type": "object", "additionalProperties": {"type": "integer"}}),
    (dict[str, Any], {"type": "object"}),
    (
        Mapping[str, list[bool]],
        {"type": "object", "additionalProperties": {"type": "array", "items": {"type": "boolean"}}},
    ),
    (dict, {"type": "object"}),
    (Literal["a", "b"], {"type": "string", "enum": ["a", "b"]}),
    (Literal[1, 2], {"type": "integer", "enum": [1, 2]}),
    (Literal[True], {"type": "boolean", "enum": [True]}),
    (Literal["a", 1], {"enum": ["a", 1]}),  # no "type": a type list would hide the enum
    (Color, {"type": "string", "enum": ["red", "green"]}),
    (Priority, {"type": "integer", "enum": [1, 2]}),
    (Optional[int], {"anyOf": [{"type": "integer"}, {"type": "null"}]}),  # noqa: UP045
    (int | None, {"anyOf": [{"type": "integer"}, {"type": "null"}]}),
    (
        list[str] | None,
        {"anyOf": [{"type": "array", "items": {"type": "string"}}, {"type": "null"}]},
    ),
    (
        Literal["x", "y"] | None,
        {"anyOf": [{"type": "string", "enum": ["x", "y"]}, {"type": "null"}]},
    ),
    (Union[int, str], {"anyOf": [{"type": "integer"}, {"type": "string"}]}),  # noqa: UP007
    (Any, ANY),
    (Any | None, ANY),
    (Annotated[int, "how many"], {"type": "integer", "description": "how many"}),
    (
        Annotated[int | None, "how many"],
        {"anyOf": [{"type": "integer"}, {"type": "null"}], "description": "how many"},
    ),
    (
        Optional[Annotated[int, "how many"]],  # noqa: UP045
        {"anyOf": [{"type": "integer"}, {"type": "null"}], "description": "how many"},
    ),
    (UserId, {"type": "integer"}),
    (
        Point,
        {
            "type": "object",
            "properties": {
                "x": {"type": "number"},
                "y": {"type": "number", "description": "the vertical one", "default": 0.0},
                "tags": {"type": "array", "items": {"type": "string"}},
            },
            "required": ["x"],
        },
    ),
    (
        Filters,
        {
            "type": "object",
            "properties": {"city": {"type": "string"}, "max_price": {"type": "integer"}},
            "required": [],
        },
    ),
]


@pytest.mark.parametrize(("hint", "expected"), CASES, ids=[repr(c[0]) for c in CASES])
def test_each_type_hint_has_its_schema_and_llama_cpp_takes_it(
    hint: Any, expected: dict[str, Any]
) -> None:
    assert schema_of(hint) == expected


def test_nested_containers_of_records_and_enums() -> None:
    s = schema_of(list[dict[str, list[Color]]])
    assert s["items"]["additionalProperties"]["items"] == {
        "type": "string",
        "enum": ["red", "green"],
    }
    points = schema_of(list[Point] | None)
    assert points["anyOf"][0]["items"]["required"] == ["x"]


def test_any_is_a_fresh_value_each_time() -> None:
    schema_of(Any)["type"].append("junk")
    assert schema_of(Any) == ANY


# --- a whole function: name, description, required, defaults ------------------------------


def search_flights(
    origin: str,
    destination: str,
    passengers: int = 1,
    cabin: Literal["economy", "business"] = "economy",
    color: Color = Color.GREEN,
    stops: tuple[int, ...] = (0, 1),
    return_date: str | None = None,
    budget: int = None,  # type: ignore[assignment]  # noqa: RUF013 (implicit Optional)
    opaque_default: Any = Opaque(),  # noqa: B008
) -> list[str]:
    """Search flights
       between two   airports.

    Only direct flights are listed
    unless stops say otherwise.

    Args:
        origin: The IATA code
            of the departure airport.
        destination (str): Where to.
        passengers (int, optional): How many
            travel.

            Infants count.
        color: Unused here.

    Returns:
        The flight numbers.
    """
    return [origin, destination]


def test_name_description_required_and_defaults() -> None:
    tool = tool_from_function(search_flights)
    assert tool.name == "search_flights"
    assert tool.description == "Search flights between two airports."
    assert tool.function is search_flights
    p = tool.parameters
    assert p["type"] == "object"
    assert p["required"] == ["origin", "destination"]
    props = p["properties"]
    assert list(props) == [
        "origin",
        "destination",
        "passengers",
        "cabin",
        "color",
        "stops",
        "return_date",
        "budget",
        "opaque_default",
    ]
    assert props["origin"]["description"] == "The IATA code of the departure airport."
    assert props["destination"]["description"] == "Where to."
    assert props["passengers"] == {
        "type": "integer",
        "description": "How many travel. Infants count.",
        "default": 1,
    }
    assert props["cabin"]["default"] == "economy"
    assert props["color"]["default"] == "green"  # an Enum default as its value
    assert props["stops"]["default"] == [0, 1]  # a tuple default as the JSON it is sent as
    assert props["return_date"] == {
        "anyOf": [{"type": "string"}, {"type": "null"}],
        "default": None,
    }
    assert props["budget"] == {"anyOf": [{"type": "integer"}, {"type": "null"}], "default": None}
    assert "default" not in props["opaque_default"]  # not JSON: left out
    assert "description" not in props["return_date"]
    grammar(p)


def rest_style(city: str, days: int = 3, units: str = "metric") -> str:
    """Weather forecast for a city.

    :param city: The city's name,
        in English.
    :param int days: How many days ahead.
    :param units:
        metric or imperial
    :returns: the forecast
    """
    return city


def test_rest_param_fields_give_descriptions() -> None:
    tool = tool_from_function(rest_style)
    assert tool.description == "Weather forecast for a city."
    props = tool.parameters["properties"]
    assert props["city"]["description"] == "The city's name, in English."
    assert props["days"]["description"] == "How many days ahead."
    assert props["units"]["description"] == "metric or imperial"


def test_docstring_without_summary_or_without_args() -> None:
    def only_args(a: int, b: str = "") -> None:
        """Args:
        a: first
        b: second
        """

    def no_doc(a: int) -> None:
        pass

    def text_after_section(a: int) -> None:
        """Add one.
        Args:
            a: the number
        Raises:
            ValueError: never
        """

    t = tool_from_function(only_args)
    assert t.description == ""
    assert t.parameters["properties"]["a"]["description"] == "first"
    assert t.parameters["properties"]["b"]["description"] == "second"
    assert tool_from_function(no_doc).description == ""
    t = tool_from_function(text_after_section)
    assert t.description == "Add one."
    assert t.parameters["properties"] == {"a": {"type": "integer", "description": "the number"}}


def test_annotated_description_wins_over_the_docstring() -> None:
    def f(a: Annotated[int, "from the hint"]) -> None:
        """Do.

        Args:
            a: from the docstring
        """

    assert tool_from_function(f).parameters["properties"]["a"]["description"] == "from the hint"


def test_no_parameters_is_an_empty_object() -> None:
    def now() -> str:
        """The time."""
        return "noon"

    tool = tool_from_function(now)
    assert tool.parameters == {"type": "object", "properties": {}, "required": []}
    grammar(tool.parameters)


class Calculator:
    def add(self, a: int, b: int = 0) -> int:
        """Add two numbers."""
        return a + b

    @classmethod
    def negate(cls, a: int) -> int:
        return -a

    @staticmethod
    def double(a: int) -> int:
        return 2 * a


def test_bound_methods_skip_self_and_cls() -> None:
    for fn in (Calculator().add, Calculator.negate, Calculator.double):
        tool = tool_from_function(fn)
        assert "self" not in tool.parameters["properties"]
        assert "cls" not in tool.parameters["properties"]
        assert tool.parameters["required"] == ["a"]
    assert call_tool(tool_from_function(Calculator().add), {"a": 2, "b": 3}) == "5"


def test_partial_drops_its_bound_arguments() -> None:
    tool = tool_from_function(functools.partial(search_flights, "AMS", passengers=2))
    assert tool.name == "search_flights"
    assert tool.description == "Search flights between two airports."
    assert tool.parameters["required"] == ["destination"]
    assert "origin" not in tool.parameters["properties"]
    assert "passengers" not in tool.parameters["properties"]
    assert call_tool(tool, {"destination": "LIS"}) == '["AMS", "LIS"]'
    assert call_tool(tool, {"destination": "LIS", "passengers": 3}).startswith(
        "error: unknown argument 'passengers'"
    )


def test_tool_from_function_and_as_tools_use_it() -> None:
    assert Tool.from_function(rest_style) == tool_from_function(rest_style)
    (tool,) = as_tools([rest_style])
    assert tool.name == "rest_style" and tool.function is rest_style


# --- what cannot be a tool ----------------------------------------------------------------


def untyped(query, limit: int = 3):  # type: ignore[no-untyped-def]
    return query


def star_args(*names: str) -> None:
    pass


def star_kwargs(**options: str) -> None:
    pass


def opaque(thing: Opaque) -> None:
    pass


def opaque_items(things: list[Opaque]) -> None:
    pass


def int_keys(table: dict[int, str]) -> None:
    pass


def recursive(node: Node) -> None:
    pass


def bytes_literal(tag: Literal[b"x"]) -> None:
    pass


@pytest.mark.parametrize(
    ("fn", "words"),
    [
        (untyped, ["'untyped'", "'query'", "type hint"]),
        (star_args, ["'star_args'", "*names", "typed parameters"]),
        (star_kwargs, ["'star_kwargs'", "**options", "typed parameters"]),
        (lambda x: x, ["lambda", "name"]),
        (lambda: 1, ["lambda", "name"]),
        (opaque, ["'opaque'", "'thing'", "Opaque", "JSON Schema", "dataclass"]),
        (opaque_items, ["'opaque_items'", "'things'", "Opaque"]),
        (int_keys, ["'int_keys'", "'table'", "dict[int, str]", "dict[str, ...]"]),
        (recursive, ["'recursive'", "'node'", "refers to itself"]),
        (bytes_literal, ["'bytes_literal'", "'tag'", "strings, numbers"]),
        (Calculator.add, ["'add'", "'self'", "bound method"]),
        (42, ["function", "int"]),
    ],
)
def test_what_a_model_cannot_be_told_is_refused(fn: Any, words: list[str]) -> None:
    with pytest.raises(InvalidInputError) as e:
        tool_from_function(fn)
    for word in words:
        assert word in str(e.value)


def test_unresolvable_hints_are_refused_with_the_function_named() -> None:
    def f(a: NoSuchType) -> None:  # type: ignore[name-defined]  # noqa: F821
        pass

    with pytest.raises(InvalidInputError, match=r"tool 'f'.*NoSuchType"):
        tool_from_function(f)


# --- call_tool --------------------------------------------------------------------------


def book(
    room: str,
    nights: int,
    color: Color = Color.RED,
    priority: Priority | None = None,
    where: Point | None = None,
    pair: tuple[int, str] = (0, ""),
) -> dict[str, Any]:
    """Book a room."""
    if nights < 1:
        raise ValueError("nights must be at least 1")
    assert isinstance(color, Color)
    assert priority is None or isinstance(priority, Priority)
    assert where is None or isinstance(where, Point)
    assert isinstance(pair, tuple)
    return {"room": room, "nights": nights, "color": color, "where": where, "pair": pair}


BOOK = tool_from_function(book)


def test_call_tool_coerces_enums_dataclasses_and_tuples() -> None:
    text = call_tool(
        BOOK,
        {
            "room": "Zürich",
            "nights": 2,
            "color": "green",
            "priority": 2,
            "where": {"x": 1.5, "tags": ["sea"]},
            "pair": [1, "a"],
        },
    )
    assert json.loads(text) == {
        "room": "Zürich",
        "nights": 2,
        "color": "green",
        "where": {"x": 1.5, "y": 0.0, "tags": ["sea"]},
        "pair": [1, "a"],
    }
    assert "Zürich" in text  # ensure_ascii=False


def test_call_tool_text_results() -> None:
    def greet(name: str) -> str:
        return f"hello {name}"

    def nothing() -> None:
        pass

    def odd() -> object:
        return {"when": Opaque, "set": {3}}

    assert call_tool(tool_from_function(greet), {"name": "Ana"}) == "hello Ana"
    assert call_tool(tool_from_function(nothing), {}) == "null"
    assert json.loads(call_tool(tool_from_function(odd), {}))["set"] == [3]


def test_call_tool_reports_errors_as_text() -> None:
    assert call_tool(BOOK, {"room": "a", "nights": 0}) == (
        "error: ValueError: nights must be at least 1"
    )
    missing = call_tool(BOOK, {"room": "a"})
    assert missing.startswith("error: missing required argument 'nights'")
    assert "room, nights" in missing  # what the tool takes
    extra = call_tool(BOOK, {"room": "a", "nights": 1, "floor": 3})
    assert extra.startswith("error: unknown argument 'floor'")
    bad_enum = call_tool(BOOK, {"room": "a", "nights": 1, "color": "blue"})
    assert bad_enum == "error: argument 'color': 'blue' is not one of 'red', 'green'"
    bad_point = call_tool(BOOK, {"room": "a", "nights": 1, "where": {"z": 1}})
    assert bad_point.startswith("error: argument 'where': ")
    not_object = call_tool(BOOK, ["a", 1])  # type: ignore[arg-type]
    assert not_object == "error: the arguments must be a JSON object, not list"
    wrong_type = call_tool(BOOK, {"room": "a", "nights": "two"})
    assert wrong_type.startswith("error: TypeError: ")


def test_call_tool_passes_positional_only_and_extra_keyword_arguments() -> None:
    def pos(a: int, /, b: int = 0) -> int:
        return a - b

    def free(**kw: Any) -> Any:
        return kw

    assert call_tool(tool_from_function(pos), {"a": 5, "b": 2}) == "3"
    hand_made = Tool(name="free", function=free)
    assert json.loads(call_tool(hand_made, {"anything": 1})) == {"anything": 1}


def test_call_tool_without_a_function_is_refused() -> None:
    with pytest.raises(InvalidInputError, match="no Python function"):
        call_tool(Tool(name="remote_only"), {})


# --- on the model: llama.cpp's grammar from the schema, and a call that runs ----------


def plan_trip(
    city: str,
    days: int,
    budget: float | None = None,
    mode: Literal["train", "car"] = "train",
    color: Color = Color.RED,
    stops: list[str] | None = None,
    prefs: Filters | None = None,
) -> str:
    """Plan a trip."""
    return f"{city}:{days}:{mode}:{color.value}"


@pytest.mark.model
@pytest.mark.parametrize("fn", [plan_trip, book])
def test_model_calls_constrained_by_the_schema_run(chat_session: Session, fn: Any) -> None:
    tool = tool_from_function(fn)
    finished = 0

    def ask(seed: int) -> Reply:
        return chat_session.complete(
            [Message(Role.USER, f"Call {tool.name} with JSON arguments.")],
            temperature=1.0,
            seed=seed,
            max_tokens=120,  # the calls that close took 15 to 93 tokens here
            sampling=Sampling(json_schema=tool.parameters),
        )

    with ThreadPoolExecutor(5) as pool:  # generated together, on the session's slots
        replies = list(pool.map(ask, (1, 2, 3, 4, 5)))
    for r in replies:
        # At temperature 1 a string may run past the budget (not guaranteed to close, and
        # CPU batches are not bit-reproducible); every call that finished must run.
        if r.finish_reason != "stop":
            continue
        finished += 1
        result = call_tool(tool, json.loads(r.text))
        # The arguments fit the function (the schema has no minimum: book's own check may
        # still refuse nights=0, which is the function running, not bad arguments).
        ran = not result.startswith("error:") or "nights must be at least 1" in result
        assert ran, (r.text, result)
    assert finished >= 2


@pytest.mark.model
def test_llama_cpp_parses_the_grammar_of_every_type(chat_session: Session) -> None:
    def every_type(**kw: Any) -> str:
        return "ok"

    hints = {f"x{i}": hint for i, (hint, _) in enumerate(CASES)}
    every_type.__annotations__ = hints
    every_type.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
        [inspect.Parameter(n, inspect.Parameter.KEYWORD_ONLY) for n in hints]
    )
    tool = tool_from_function(every_type)
    assert len(tool.parameters["required"]) == len(CASES)
    r = chat_session.complete(
        [Message(Role.USER, "JSON please.")],
        max_tokens=8,
        sampling=Sampling(json_schema=tool.parameters),
    )
    assert r.text.startswith("{")
