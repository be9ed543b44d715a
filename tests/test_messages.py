"""Messages, roles and the system-prompt template."""

from __future__ import annotations

import datetime as dt
import logging

import pytest

from llm_inproc import InvalidInputError, Message, Role
from llm_inproc.prompting.messages import render_system_prompt

WHEN = dt.datetime(2006, 1, 2, 15, 4, 5, tzinfo=dt.timezone(dt.timedelta(hours=-7), "MST"))
MODEL = "hf:a/b/HEAD/c-Q4_K_M"


def test_role_from_string_and_errors() -> None:
    assert Message("user", "hi").role is Role.USER  # type: ignore[arg-type]
    assert Message(Role.TOOL_CALL, "x").role.value == "tool_call"
    assert str(Role.SYSTEM) == "system"
    with pytest.raises(InvalidInputError, match="unknown message role 'robot'"):
        Message("robot", "hi")  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError, match="content must be a string"):
        Message(Role.USER, 42)  # type: ignore[arg-type]
    assert Message("user", "a") == Message(Role.USER, "a")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("template", "expected"),
    [
        ("It is {{.Now}}.", "It is Monday 2006-01-02T15:04:05 MST."),
        ("You are {{ .Model }}", f"You are {MODEL}"),
        ("A {{- .Model -}} B", f"A{MODEL}B"),
        ("A {{- .Model}} B", f"A{MODEL} B"),
        ("no template here", "no template here"),
        ("{{.Model}}{{.Model}}", MODEL * 2),
    ],
)
def test_system_prompt_template(template: str, expected: str) -> None:
    assert render_system_prompt(template, MODEL, now=WHEN) == expected


@pytest.mark.parametrize("bad", ["{{.Now", "{{.Unknown}} and {{.Now}}", "{{ if .X }}y{{ end }}"])
def test_invalid_template_is_used_as_is_and_logged(
    bad: str, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="llm_inproc.prompting.messages"):
        assert render_system_prompt(bad, MODEL, now=WHEN) == bad
    assert "used as is" in caplog.text


def test_now_defaults_to_local_time() -> None:
    out = render_system_prompt("{{.Now}}", MODEL)
    assert out.split()[0] in {
        "Monday",
        "Tuesday",
        "Wednesday",
        "Thursday",
        "Friday",
        "Saturday",
        "Sunday",
    }
    assert str(dt.date.today().year) in out
