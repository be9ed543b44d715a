"""Backends run the model; the Session facade validates, encodes and measures for all of them."""

from .base import Backend, GenerationRequest

__all__ = ["Backend", "GenerationRequest"]
