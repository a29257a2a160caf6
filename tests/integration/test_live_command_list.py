"""Commands written down for a script run as a pipeline would send them."""

from __future__ import annotations

import json

import pytest
import redis

from ugro.live.command_list import CommandList
from ugro.live.scripts import lua_source
from ugro.live.state import LiveState
from ugro.settings import Settings


def test_a_written_down_set_job_leaves_what_a_pipeline_leaves(
    settings: Settings, live_redis: redis.Redis
) -> None:
    live = LiveState.open(settings)
    fields = {"status": "placed", "node": "n", "gpus_held": [0, 1], "started": 1764700000.123456,
              "priority": -3, "timeout": None}  # fmt: skip
    pipe = live.redis.pipeline(transaction=True)
    live.queue_set_job(pipe, "by-pipe", fields)
    pipe.execute()
    written = CommandList()
    live.queue_set_job(written, "by-script", fields)
    live.redis.eval(lua_source("run_commands.lua"), 0, json.dumps(written.commands))
    assert live.job("by-script") == live.job("by-pipe")
    assert live.job("by-script")["started"] == "1764700000.123456"  # every digit kept
    with pytest.raises(TypeError, match="not a Redis argument"):
        CommandList().set("key", True)  # type: ignore[arg-type]
