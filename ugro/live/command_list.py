"""Redis commands written down instead of sent, for a script to run them in order
(``ugro/live/lua/run_commands.lua``, ``lease_at_submit.lua``): a Lua script stops at the
first command that fails, where a MULTI runs the ones after it all the same."""

from __future__ import annotations

from typing import Any


class CommandList:
    """The commands ``queue_set_job`` and the like give a pipeline, written down as
    Redis receives them (each argument a string, as redis-py encodes it) for a
    script to run."""

    def __init__(self) -> None:
        self.commands: list[list[str]] = []

    def _add(self, *args: Any) -> None:
        self.commands.append([_argument(arg) for arg in args])

    def hset(self, key: str, mapping: dict[str, Any]) -> None:
        self._add("HSET", key, *(part for item in mapping.items() for part in item))

    def expire(self, key: str, seconds: int) -> None:
        self._add("EXPIRE", key, seconds)

    def delete(self, *keys: str) -> None:
        self._add("DEL", *keys)

    def zrem(self, key: str, *members: str) -> None:
        self._add("ZREM", key, *members)

    def publish(self, channel: str, message: str) -> None:
        self._add("PUBLISH", channel, message)

    def set(self, key: str, value: str) -> None:
        self._add("SET", key, value)

    def lpush(self, key: str, *values: str) -> None:
        self._add("LPUSH", key, *values)


def _argument(value: Any) -> str:
    # redis-py's own encoding: a float by its repr, which keeps every digit.
    if isinstance(value, str):
        return value
    if isinstance(value, bool | bytes | bytearray | memoryview):
        raise TypeError(f"not a Redis argument here: {value!r}")
    return repr(value) if isinstance(value, float) else str(value)
