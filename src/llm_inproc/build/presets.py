"""Build presets: ``CMakePresets.json`` turned into ``-D`` flags.

One file drives every llama.cpp build the project makes: rebuilding
llama-cpp-python (``CMAKE_ARGS``) and building ``llama-server``. The file is a
real CMake presets file (``cmake --list-presets`` reads it), so this module
implements the part of the CMake presets spec those builds need: configure
presets, ``inherits`` (single or multiple, CMake's precedence), hidden presets
and the three forms a cache variable may take.

The file lives at the top of the repository; wheels carry a copy inside the
package (hatch ``force-include``), which is looked for first.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import InvalidInputError

__all__ = [
    "DEFAULT_PRESET",
    "Preset",
    "PresetFile",
    "cmake_args",
    "find_presets_file",
    "list_presets",
    "load_presets",
]

DEFAULT_PRESET = "cpu"
"""The preset used when none is named."""

_FILENAME = "CMakePresets.json"
_MACRO = re.compile(r"\$(env|penv)?\{([^}]*)\}")


@dataclass(frozen=True)
class Preset:
    """One configure preset with its inheritance resolved."""

    name: str
    """The name ``--preset`` takes."""
    description: str
    """What the preset is for (``description``, else ``displayName``)."""
    hidden: bool
    """Hidden presets are building blocks; they cannot be built directly."""
    cache_variables: dict[str, str] = field(default_factory=dict)
    """Resolved cache variables, as ``-D`` would spell them (``KEY`` or ``KEY:TYPE`` → value)."""

    def cmake_args(self) -> list[str]:
        """The ``-DKEY=VALUE`` flags, sorted by key so they are stable."""
        return [f"-D{key}={value}" for key, value in sorted(self.cache_variables.items())]


class PresetFile:
    """A parsed presets file: look presets up by name, inheritance resolved."""

    def __init__(self, data: Mapping[str, Any], *, source: str = _FILENAME) -> None:
        self.source = source
        if not isinstance(data, Mapping):
            raise InvalidInputError(f"{source}: the top level must be a JSON object")
        version = data.get("version")
        if not isinstance(version, int) or version < 3:
            raise InvalidInputError(f"{source}: 'version' must be an integer >= 3, got {version!r}")
        raw = data.get("configurePresets", [])
        if not isinstance(raw, list):
            raise InvalidInputError(f"{source}: 'configurePresets' must be a list")
        self._raw: dict[str, Mapping[str, Any]] = {}
        for i, entry in enumerate(raw):
            name = entry.get("name") if isinstance(entry, Mapping) else None
            if not isinstance(name, str) or not name:
                raise InvalidInputError(f"{source}: configurePresets[{i}] has no 'name'")
            if name in self._raw:
                raise InvalidInputError(f"{source}: preset {name!r} is defined twice")
            self._raw[name] = entry
        self._resolved: dict[str, dict[str, str | None]] = {}

    def names(self, *, include_hidden: bool = False) -> list[str]:
        """Preset names in file order."""
        return [n for n, e in self._raw.items() if include_hidden or not e.get("hidden", False)]

    def get(self, name: str, *, allow_hidden: bool = False) -> Preset:
        """The preset called ``name``, its ``inherits`` chain resolved."""
        entry = self._raw.get(name)
        if entry is None:
            known = ", ".join(self.names()) or "none"
            raise InvalidInputError(f"unknown preset {name!r}; known presets: {known}")
        hidden = bool(entry.get("hidden", False))
        if hidden and not allow_hidden:
            raise InvalidInputError(
                f"preset {name!r} is hidden (a building block for other presets); "
                f"pick one of: {', '.join(self.names())}"
            )
        variables = {k: v for k, v in self._resolve(name, ()).items() if v is not None}
        description = entry.get("description") or entry.get("displayName") or ""
        return Preset(name, str(description), hidden, variables)

    def _resolve(self, name: str, chain: tuple[str, ...]) -> dict[str, str | None]:
        if name in self._resolved:
            return self._resolved[name]
        if name in chain:
            cycle = " -> ".join((*chain[chain.index(name) :], name))
            raise InvalidInputError(f"{self.source}: presets inherit in a cycle: {cycle}")
        entry = self._raw[name]
        parents = entry.get("inherits", [])
        if isinstance(parents, str):
            parents = [parents]
        if not isinstance(parents, list) or not all(isinstance(p, str) for p in parents):
            raise InvalidInputError(f"{self.source}: preset {name!r}: 'inherits' must be a list")
        merged: dict[str, str | None] = {}
        # CMake: the preset's own values win, then its parents in the order listed.
        for parent in reversed(parents):
            if parent not in self._raw:
                raise InvalidInputError(
                    f"{self.source}: preset {name!r} inherits unknown preset {parent!r}"
                )
            merged.update(self._resolve(parent, (*chain, name)))
        own = entry.get("cacheVariables", {})
        if not isinstance(own, Mapping):
            raise InvalidInputError(f"{self.source}: preset {name!r}: 'cacheVariables' must map")
        for key, value in own.items():
            # Drop any inherited spelling of the key (``KEY`` vs ``KEY:TYPE``).
            for existing in [k for k in merged if k.split(":")[0] == key]:
                del merged[existing]
            spelled, text = _cache_value(name, key, value, self.source)
            merged[spelled] = text
        self._resolved[name] = merged
        return merged


def _cache_value(preset: str, key: str, value: object, source: str) -> tuple[str, str | None]:
    """``(KEY or KEY:TYPE, text)`` for one cacheVariables entry; text None unsets."""
    where = f"{source}: preset {preset!r}, cache variable {key!r}"
    if value is None:
        return key, None
    if isinstance(value, bool):
        return f"{key}:BOOL", "TRUE" if value else "FALSE"
    if isinstance(value, str):
        return key, _expand(value, preset, where)
    if isinstance(value, Mapping):
        inner = value.get("value")
        kind = value.get("type")
        if isinstance(inner, bool):
            inner = "TRUE" if inner else "FALSE"
        if not isinstance(inner, str):
            raise InvalidInputError(f"{where}: 'value' must be a string or a boolean")
        if kind is not None and not isinstance(kind, str):
            raise InvalidInputError(f"{where}: 'type' must be a string")
        spelled = f"{key}:{kind}" if kind else key
        return spelled, _expand(inner, preset, where)
    raise InvalidInputError(f"{where}: expected a string, a boolean, null or {{type, value}}")


def _expand(text: str, preset: str, where: str) -> str:
    """Expand the macros that mean the same outside CMake: presetName and environment."""

    def one(m: re.Match[str]) -> str:
        kind, name = m.group(1), m.group(2)
        if kind in ("env", "penv"):
            return os.environ.get(name, "")
        if name == "presetName":
            return preset
        raise InvalidInputError(
            f"{where}: macro {m.group(0)!r} only means something inside a CMake project; "
            "use $env{NAME} or a plain value"
        )

    return _MACRO.sub(one, text)


def find_presets_file() -> Path:
    """The presets file: the copy inside the package, else the checkout's top level."""
    here = Path(__file__).resolve().parent.parent  # the llm_inproc package
    for candidate in (here / _FILENAME, here.parent.parent / _FILENAME):
        if candidate.is_file():
            return candidate
    raise InvalidInputError(
        f"{_FILENAME} not found next to the package ({here}) or at the checkout top level; "
        "reinstall llm-inproc"
    )


def load_presets(path: str | os.PathLike[str] | None = None) -> PresetFile:
    """Parse a presets file (default: :func:`find_presets_file`)."""
    file = Path(path) if path is not None else find_presets_file()
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise InvalidInputError(f"{file}: not valid JSON: {e}") from e
    return PresetFile(data, source=str(file))


def cmake_args(
    name: str = DEFAULT_PRESET, *, path: str | os.PathLike[str] | None = None
) -> list[str]:
    """The ``-DKEY=VALUE`` flags of preset ``name``, inheritance resolved."""
    return load_presets(path).get(name).cmake_args()


def list_presets(path: str | os.PathLike[str] | None = None) -> list[Preset]:
    """The presets a user can build (hidden ones left out), in file order."""
    presets = load_presets(path)
    return [presets.get(n) for n in presets.names()]
