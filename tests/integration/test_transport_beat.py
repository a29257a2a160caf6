"""One beat schedules at a time: two real beat processes on one Redis, one killed,
then Redis wiped under the survivor."""

from __future__ import annotations

import contextlib
import glob
import itertools
import re
import signal
import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import redis

from beat_schedule import beat_schedule
from tests.conftest import ROOT, env_for, wait_until
from ugro.live.keys import Keys
from ugro.ops.redis_server import EmbeddedRedis
from ugro.settings import Settings

SENT = "Scheduler: Sending due task"
#: A beat's line once its schedule is in Redis, as it goes to take the lock.
WAITS_FOR_LOCK = "beat: schedule installed; taking the lock"
LOCK_TIMEOUT = 10.0
#: How long a beat sleeps at most between ticks (``beat_max_loop_interval``): a
#: standby polls for the lock that often.
TICK = 5.0
#: A log line of a send: when, and which entry.
SENT_LINE = re.compile(
    r"^\[(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}): \w+/\w+\] " + SENT + r" (\S+)", re.M
)
LIBFAKETIME = sorted(glob.glob("/usr/lib/*/faketime/libfaketimeMT.so.1"))


class Beat:
    """`python -m workers.beat` with its output in a file."""

    def __init__(self, settings: Settings, log: Path, clock: dict[str, str] | None = None) -> None:
        self.log = log
        env = env_for(settings) | (clock or {})
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
            lambda: WAITS_FOR_LOCK in started[1].text(), 30, "beat B's start", logs_of(started)
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


def _sends(beats: list[Beat]) -> dict[str, list[datetime]]:
    """Each entry's sends across the beats' logs, in order."""
    sent: dict[str, list[datetime]] = defaultdict(list)
    for beat in beats:
        for stamp, entry in SENT_LINE.findall(beat.text()):
            sent[entry].append(datetime.strptime(stamp, "%Y-%m-%d %H:%M:%S,%f"))
    return {entry: sorted(times) for entry, times in sent.items()}


def _clock_at_2359(lead: float) -> dict[str, str]:
    """libfaketime's environment for a clock that reads 23:59:00 UTC ``lead``
    seconds from now (RedBeat's crontab and the summary's day read it)."""
    if not LIBFAKETIME:
        pytest.fail("libfaketime is missing: `make system` installs Debian's faketime")
    due = time.time() + lead
    at_2359 = datetime.fromtimestamp(due, UTC).replace(hour=23, minute=59, second=0, microsecond=0)
    return {
        "LD_PRELOAD": LIBFAKETIME[0],
        "FAKETIME": f"{round(at_2359.timestamp() - due):+d}s",
        # (the monotonic clock is shifted alike, a constant: left true, libfaketime
        # fails beat's time.sleep between ticks)
    }


@pytest.mark.timeout(180)
def test_a_takeover_sends_nothing_twice_and_writes_the_daily_summary_once(
    embedded_settings: Settings, redis_server: EmbeddedRedis, tmp_path: Path
) -> None:
    # Given two beats whose clock (and the control worker's) reaches the summary's
    # 23:59 a few seconds after beat A is killed, inside the takeover window,
    lead = 40.0
    clock = _clock_at_2359(lead)
    kill_at = time.monotonic() + lead - 3.0
    started: list[Beat] = []
    agent: subprocess.Popen[bytes] | None = None
    agent_log = tmp_path / "agent.log"
    try:
        a = Beat(embedded_settings, tmp_path / "beat-a.log", clock)
        started.append(a)
        logs = logs_of(started)
        wait_until(lambda: "Acquired lock" in a.text(), 30, "beat A's lock", logs)
        b = Beat(embedded_settings, tmp_path / "beat-b.log", clock)
        started.append(b)
        wait_until(lambda: WAITS_FOR_LOCK in b.text(), 30, "beat B's start", logs)
        assert time.monotonic() < kill_at, "too slow a start to kill A before 23:59"
        wait_until(lambda: time.monotonic() >= kill_at, lead, "23:58:57 on the beats' clock")
        assert "Acquired lock" not in b.text() and b.count(SENT) == 0, logs()

        # when A dies without a word,
        a.proc.send_signal(signal.SIGKILL)
        a.proc.wait(5)
        killed = time.monotonic()
        # then B takes over within the lock's timeout and one tick of its polling,
        wait_until(lambda: "Acquired lock" in b.text(), LOCK_TIMEOUT + TICK + 10, "B", logs)
        takeover = time.monotonic() - killed
        wait_until(lambda: "daily-summary" in _sends(started), 30, "the 23:59 send", logs)
        # and the control worker, started now, runs every summary task sent (the
        # 23:59 entry's, and each beat's catch-up at its start):
        with agent_log.open("wb") as out:
            agent = subprocess.Popen(
                [sys.executable, "-m", "workers.node_agent"],
                cwd=ROOT,
                env=env_for(embedded_settings) | clock,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        ran = "Task ugro.daily_summary["
        wait_until(
            lambda: agent_log.read_text(errors="replace").count(ran) >= 2 * 3,  # received, done
            60,
            "three summary tasks run",
            lambda: agent_log.read_text(errors="replace")[-3000:],
        )
        wait_until(lambda: b.count(SENT) >= 8, 30, "more ticks from B", logs)
    finally:
        if agent is not None:
            agent.terminate()
            try:
                agent.wait(20)
            except subprocess.TimeoutExpired:
                agent.kill()
                agent.wait(5)
        for beat in started:
            beat.stop()

    print(f"takeover {takeover:.1f} s after the kill")
    assert takeover <= LOCK_TIMEOUT + TICK + 1.0, logs()
    # No entry was sent twice within its interval, across both beats.
    intervals = {
        name: float(entry["schedule"])
        for name, entry in beat_schedule(embedded_settings).items()
        if isinstance(entry["schedule"], float | int)
    }
    sends = _sends(started)
    for name, times in sends.items():
        gaps = [(later - earlier).total_seconds() for earlier, later in itertools.pairwise(times)]
        if name in intervals:
            assert all(gap >= intervals[name] - 0.25 for gap in gaps), (name, gaps, logs())
    # The 23:59 entry went once, from B, and the day's summary was written once.
    assert len(sends["daily-summary"]) == 1 and b.count("daily-summary") == 1, logs()
    day = sends["daily-summary"][0].date()
    assert sends["daily-summary"][0] - datetime.combine(day, datetime.min.time()) >= timedelta(
        hours=23, minutes=59
    )
    agent_text = agent_log.read_text(errors="replace")
    assert agent_text.count(f"daily summary of {day} written") == 1, agent_text[-3000:]
    assert (embedded_settings.summaries_dir / f"{day}_summary.md").exists()
