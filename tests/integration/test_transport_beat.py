"""One beat schedules at a time: two real beat processes on one Redis, one killed,
then Redis wiped under the survivor."""

from __future__ import annotations

import contextlib
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis

from beat_schedule import beat_schedule
from tests.conftest import ROOT, env_for, wait_until
from ugro.live.keys import Keys
from ugro.ops.redis_server import EmbeddedRedis
from ugro.settings import Settings

SENT = "Scheduler: Sending due task"
LOCK_TIMEOUT = 10.0


class Beat:
    """`python -m workers.beat` with its output in a file."""

    def __init__(self, settings: Settings, log: Path) -> None:
        self.log = log
        env = env_for(settings)
        env["UGRO_BEAT_LOCK_TIMEOUT"] = str(LOCK_TIMEOUT)
        with log.open("wb") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "workers.beat"],
                cwd=ROOT,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def count(self, line: str) -> int:
        return self.text().count(line)

    def tail(self) -> str:
        return f"--- {self.log.name}\n{self.text()[-3000:]}"

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


def logs_of(beats: list[Beat]) -> Callable[[], str]:
    return lambda: "\n".join(beat.tail() for beat in beats)


@pytest.fixture
def beats(
    embedded_settings: Settings, redis_server: EmbeddedRedis, tmp_path: Path
) -> Iterator[list[Beat]]:
    started: list[Beat] = []
    try:
        started.append(Beat(embedded_settings, tmp_path / "beat-a.log"))
        wait_until(
            lambda: "Acquired lock" in started[0].text(), 30, "beat A's lock", logs_of(started)
        )
        started.append(Beat(embedded_settings, tmp_path / "beat-b.log"))
        wait_until(
            lambda: "beat: Starting" in started[1].text(), 30, "beat B's start", logs_of(started)
        )
        yield started
    finally:
        for beat in started:
            beat.stop()


@pytest.mark.timeout(120)
def test_a_second_beat_waits_and_takes_over_when_the_first_dies(
    beats: list[Beat], embedded_settings: Settings
) -> None:
    a, b = beats
    # Given two beats on one Redis, while A lives it alone sends the schedule.
    sent_by_a = a.count(SENT)
    logs = logs_of(beats)
    wait_until(lambda: a.count(SENT) >= sent_by_a + 3, 30, "three more ticks from beat A", logs)
    assert "Acquired lock" not in b.text()
    assert b.count(SENT) == 0, b.text()

    # When A dies without a word, B takes the lock once it lapses, and schedules.
    a.proc.send_signal(signal.SIGKILL)
    a.proc.wait(5)
    wait_until(lambda: "Acquired lock" in b.text(), LOCK_TIMEOUT + 15, "beat B taking over", logs)
    wait_until(lambda: b.count(SENT) >= 1, 15, "a tick from beat B", logs)


@pytest.mark.timeout(120)
def test_the_beat_takes_its_lock_and_schedule_back_after_a_wipe(
    beats: list[Beat], embedded_settings: Settings
) -> None:
    a, b = beats
    logs = logs_of(beats)
    client = redis.Redis.from_url(embedded_settings.effective_redis_url, decode_responses=True)
    prefix = Keys(embedded_settings.redis_prefix).redbeat
    lock, schedule, statics = (f"{prefix}:{name}" for name in ("lock", "schedule", "statics"))
    entries = [prefix + name for name in beat_schedule(embedded_settings)]  # RedBeat's keys

    def schedule_whole() -> bool:
        scores = [client.zscore(schedule, entry) for entry in entries]
        return bool(client.exists(statics)) and None not in scores

    with contextlib.closing(client):
        assert client.exists(lock) and schedule_whole()
        # When Redis loses everything, lock and schedule included,
        client.flushall()
        before = {id(beat): beat.count(SENT) for beat in beats}
        # then one beat takes the lock again and installs the schedule again: A at
        # its next tick, or B, polling for the lock all along, if it got there first.
        wait_until(lambda: bool(client.exists(lock)), 20, "the beat lock taken again", logs)
        wait_until(schedule_whole, 30, "the whole schedule in Redis again", logs)
        assert "installing it again" in a.text() + b.text(), logs()
        # and ticks go on being sent, by one beat only: A took the lock back, or
        # B, waiting for it all along, got it first and A now waits.
        a_again, b_took = "holds the lock" in a.text(), "Acquired lock" in b.text()
        assert a_again != b_took, logs()
        active, standby = (a, b) if a_again else (b, a)
        wait_until(
            lambda: active.count(SENT) >= before[id(active)] + 2, 20, "ticks after the wipe", logs
        )
        assert standby.count(SENT) == before[id(standby)], logs()
