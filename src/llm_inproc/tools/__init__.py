"""Tools the model can call: their description, the calls it makes, and the formats
chat templates write them in."""

from .types import Tool, ToolCall, ToolChoice

__all__ = ["Tool", "ToolCall", "ToolChoice"]
