"""How this process was given its preset, so that a hint prints a command that works: the preset
as it was named (a path stays a path: its stem is no preset name) with the same ``--set``
values. The CLI layer records it (:func:`remember`); stages read it (:func:`preset_args`)."""

from __future__ import annotations

import json
import shlex
from typing import Any

_GIVEN: dict[str, tuple[str, dict[str, Any]]] = {}  # preset name -> (as given, dotted overrides)


def remember(preset: dict, name_or_path: str, overrides: dict[str, Any]) -> None:
    _GIVEN[preset["name"]] = (str(name_or_path), dict(overrides))


def _shown(value: Any) -> str:
    # JSON is YAML: what --set parses back to the same value ([96, 96], null, true, 0.5)
    return value if isinstance(value, str) else json.dumps(value)


def set_options(values: dict[str, Any]) -> str:
    """``--set k=v ...`` giving each dotted key its value, shell-quoted, as a command line takes
    it back (``None`` is ``null``, a list ``[96, 96]``)."""
    return " ".join("--set " + shlex.quote(f"{key}={_shown(value)}") for key, value in values.items())


def preset_args(preset: dict) -> str:
    """``--preset X --set k=v ...`` for ``preset``, shell-quoted (``--preset NAME`` when this
    process did not record how it was given, e.g. a library call)."""
    source, overrides = _GIVEN.get(preset["name"], (preset["name"], {}))
    parts = ["--preset", source]
    for key, value in overrides.items():
        parts += ["--set", f"{key}={_shown(value)}"]
    return " ".join(shlex.quote(p) for p in parts)
