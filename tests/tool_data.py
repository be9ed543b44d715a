"""Tools the tests offer in OpenAI's shape (the command line and the HTTP routes read the
same one)."""

from __future__ import annotations

__all__ = ["WEATHER"]

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Get the current weather in a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string", "description": "The city's name"}},
            "required": ["city"],
        },
    },
}
