"""The atomic Redis scripts in ``ugro/live/lua/``, each listing its keys in its header."""

from __future__ import annotations

from importlib import resources


def lua_source(name: str) -> str:
    """The source of one of ``ugro/live/lua``'s scripts."""
    return resources.files("ugro.live").joinpath("lua", name).read_text(encoding="utf-8")
