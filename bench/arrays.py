"""`python -m bench.arrays [--tasks N] [--rounds R] [--starts S] [--passes P] [--json]`:
an array of N tasks (10,000 by default) submitted in under 2 s, and placing the next
task costing the same with 10 or N tasks waiting (issue 27, "Limits").

Two stacks run side by side, each `ugro up` on the embedded defaults with one fake
GPU in a data dir of its own (``bench.adapters.UgroAdapter``): on one an array
whose queue keeps about 10 tasks waiting ("few"), on the other an array of N
("many"). Each round, uncapped and then capped (``max_running=4``) or the other
way round:

1. The many array is submitted (``Client.submit_array``) and timed: the submit.
2. Each task of both arrays stamps bash's ``$EPOCHREALTIME`` as it starts, then
   blocks reading its own named pipe. The bench writes a line to the running
   task's pipe: it exits 0, and its worker records its end, hands on its array's
   slot (capped), takes the head of the queue and starts it. The next start is
   the time from that write to the next task's stamp: a task's end, the placement
   of the next and its process's start, as a user's job sees it. The two stacks
   alternate sample by sample (few, many, many, few...), so that the machine's
   drift hits both alike.
3. ``dispatch_pending`` is called in this process on each stack's runtime (its
   real Redis and registry), alternately: a whole pass (the lock taken with the
   snapshot of the GPUs and the head of the queue, the lock let go) that finds
   every GPU busy and places nothing.
4. Both arrays are cancelled (the many one timed) and their running tasks waited
   for.

Prints the tables (``--json``: one JSON object), with any start slower than a
second and any task that started before a lower index of its array. Both stacks
are brought down and their data dirs deleted however the run ends.
"""

from __future__ import annotations

import argparse
import errno
import json
import os
import shutil
import statistics
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.adapters import UgroAdapter, workdir
from bench.run import machine
from bench.workloads import percentile

TASKS = 10_000
ROUNDS = 3
#: Task starts timed a round on each stack, and dispatch passes.
STARTS = 20
PASSES = 100
#: Tasks the few array keeps waiting, at least.
FEW = 10
CAP = 4
SUBMIT_TARGET_S = 2.0
RATIO_TARGET = 1.3
MODES = ("uncapped", "capped")
#: Stamps the task's start in its first argument, then waits for a line on the
#: pipe named by its second. (No braces: ``{index}`` is the only placeholder.)
TASK = 'printf %s "$EPOCHREALTIME" > "$0"; read -r _ < "$1"'
#: How long (s) a next start may take before the bench gives up on it: longer than
#: beat's dispatch and the reconciler take to place a job no pass placed.
START_TIMEOUT = 120.0
#: A next start slower than this (ms) is counted as a stall, and reported.
STALL_MS = 1000.0
#: Pipes made past the tasks timed: a task started out of index order has one too.
SPARE_GATES = 8
#: Pause (s) after a start before the next sample: the worker's writes after the
#: start (its first heartbeat) are not the next sample's.
SETTLE = 0.05


@dataclass
class Side:
    """One of the two stacks, and the array running on it now."""

    label: str  # "few" | "many"
    stack: UgroAdapter
    root: Path
    array_id: str | None = None
    stamps: Path | None = None
    gates: Path | None = None
    running: int = 0  # the index of the task running now
    started: set[int] = field(default_factory=set)
    out_of_order: int = 0  # starts of a task other than the lowest index not started


def gated_array(side: Side, name: str, count: int, cap: int | None, gates: int) -> float:
    """Submit an array of ``count`` gated tasks on ``side``, with pipes for the first
    ``gates`` of them; the seconds ``submit_array`` took."""
    from ugro import JobSpec

    side.stamps = side.root / name / "stamps"
    side.gates = side.root / name / "gates"
    side.stamps.mkdir(parents=True)
    side.gates.mkdir()
    for index in range(gates):
        os.mkfifo(side.gates / str(index))
    command = ["bash", "-c", TASK, f"{side.stamps}/{{index}}", f"{side.gates}/{{index}}"]
    spec = JobSpec(name=f"bench-{side.label}", command=command)
    began = time.perf_counter()
    array = side.stack.client.submit_array(spec, list(range(count)), max_running=cap)
    took = time.perf_counter() - began
    side.array_id = array.id
    side.started, side.out_of_order = set(), 0
    side.running, _ = new_start(side)
    return took


def new_start(side: Side, timeout: float = START_TIMEOUT) -> tuple[int, float]:
    """The index of the next task of ``side``'s array to start, whichever it is, and
    the time it wrote in its stamp as it started; counted out of order when it is
    not the lowest index not started yet."""
    assert side.stamps is not None
    deadline = time.monotonic() + timeout
    while True:
        for index in sorted(int(n) for n in os.listdir(side.stamps)):
            if index in side.started:
                continue
            text = (side.stamps / str(index)).read_text()
            if text:  # (empty: the task's printf has not written yet)
                expected = min(set(range(len(side.started) + 1)) - side.started)
                side.out_of_order += index != expected
                side.started.add(index)
                return index, float(text)
        if time.monotonic() > deadline:
            raise TimeoutError(f"no task of {side.label} started in {timeout:g} s: {stalled(side)}")
        time.sleep(0.001)


def stalled(side: Side) -> str:
    """The tasks that may start next, and their statuses (for a start that never came)."""
    client, array_id = side.stack.client, side.array_id
    following = range(side.running, side.running + CAP + 2)
    jobs = client.get_many([f"{array_id}-{index}" for index in following])
    return ", ".join(f"{job.id} {job.status.value} (hold {job.hold})" for job in jobs)


def next_start_ms(side: Side) -> float:
    """End the running task (a line on its pipe) and time until the next one starts."""
    assert side.gates is not None and side.stamps is not None
    gate = side.gates / str(side.running)
    deadline = time.monotonic() + 10.0
    while True:
        try:
            fd = os.open(gate, os.O_WRONLY | os.O_NONBLOCK)
            break
        except OSError as exc:  # ENXIO: the task has stamped but not opened its pipe yet
            if exc.errno != errno.ENXIO or time.monotonic() > deadline:
                raise
            time.sleep(0.001)
    try:
        ended = time.time()
        os.write(fd, b"\n")
    finally:
        os.close(fd)
    side.running, start = new_start(side)
    time.sleep(SETTLE)
    return (start - ended) * 1000


def pass_ms(side: Side) -> float:
    """One dispatch pass in this process on ``side``'s stack (every GPU busy)."""
    from ugro.scheduling.dispatch import dispatch_pending

    began = time.perf_counter()
    placed = dispatch_pending(side.stack.client.rt)
    took = (time.perf_counter() - began) * 1000
    if placed:
        raise RuntimeError(f"a pass placed {placed} job(s) on {side.label}: a GPU was free")
    return took


def cancel(side: Side) -> float:
    """Cancel the side's array and wait for its tasks to end; the seconds the
    cancel itself took."""
    if side.array_id is None:
        return 0.0
    client, array_id = side.stack.client, side.array_id
    side.array_id = None
    began = time.perf_counter()
    client.cancel_array(array_id)
    took = time.perf_counter() - began
    client.wait(array_id, timeout=120)
    return took


def alternated(
    sides: tuple[Side, Side], count: int, measure: Callable[[Side], float]
) -> dict[str, list[float]]:
    """``count`` samples of ``measure`` on each side, in the order AB BA AB..."""
    found: dict[str, list[float]] = {side.label: [] for side in sides}
    for i in range(count):
        for side in sides if i % 2 == 0 else sides[::-1]:
            found[side.label].append(measure(side))
    return found


def make_side(root: Path, label: str) -> Side:
    stack = UgroAdapter(1, root / label)
    # A node name of its own: a simulated GPU reports every job process of its node
    # on its index, and the other stack's task would read as memory in use by
    # another program on a GPU of this one that no job holds (blocked).
    stack.env["UGRO_NODE_NAME"] = f"bench-{label}"
    return Side(label, stack, root / label)


def run(tasks: int, rounds: int, starts: int, passes: int) -> dict[str, Any]:
    root = workdir()
    few, many = make_side(root, "few"), make_side(root, "many")
    sides = (few, many)
    submit: dict[str, list[float]] = {mode: [] for mode in MODES}
    cancels: dict[str, list[float]] = {mode: [] for mode in MODES}
    starts_ms: dict[str, dict[str, list[float]]] = {m: {"few": [], "many": []} for m in MODES}
    passes_ms: dict[str, dict[str, list[float]]] = {m: {"few": [], "many": []} for m in MODES}
    out_of_order: dict[str, dict[str, int]] = {m: {"few": 0, "many": 0} for m in MODES}
    try:
        for side in sides:
            side.root.mkdir()
        with ThreadPoolExecutor(2) as pool:
            list(pool.map(lambda side: side.stack.start(), sides))
        for round_ in range(rounds):
            for mode in MODES if round_ % 2 == 0 else MODES[::-1]:
                cap = CAP if mode == "capped" else None
                name = f"{mode}-{round_}"
                # The many array exactly ``tasks`` long, the few one ``FEW`` waiting
                # still when its last start is timed; pipes for the tasks that start.
                gates = starts + 1 + SPARE_GATES
                took = gated_array(many, name, tasks, cap, gates)
                submit[mode].append(took)
                gated_array(few, name, FEW + starts, cap, gates)
                for label, values in alternated(sides, starts, next_start_ms).items():
                    starts_ms[mode][label] += values
                for side in sides:
                    out_of_order[mode][side.label] += side.out_of_order
                for label, values in alternated(sides, passes, pass_ms).items():
                    passes_ms[mode][label] += values
                cancel(few)
                cancels[mode].append(cancel(many))
                print(
                    f"  round {round_} {mode:<8}: submit {took:.2f} s, next start p50"
                    f" {statistics.median(starts_ms[mode]['few'][-starts:]):.2f} ms (few)"
                    f" / {statistics.median(starts_ms[mode]['many'][-starts:]):.2f} ms (many)",
                    file=sys.stderr,
                    flush=True,
                )
    finally:
        for side in sides:
            try:
                cancel(side)
            except Exception as exc:  # (the stack goes down all the same)
                print(f"cancelling {side.label}'s array: {exc}", file=sys.stderr)
        for side in sides:
            side.stack.stop()
        shutil.rmtree(root, ignore_errors=True)
    return report(tasks, rounds, starts, submit, cancels, starts_ms, passes_ms, out_of_order)


def figures(values: list[float]) -> dict[str, float]:
    return {
        "p50": statistics.median(values),
        "p90": percentile(values, 90),
        "min": min(values),
        "max": max(values),
    }


def report(
    tasks: int,
    rounds: int,
    starts: int,
    submit: dict[str, list[float]],
    cancels: dict[str, list[float]],
    starts_ms: dict[str, dict[str, list[float]]],
    passes_ms: dict[str, dict[str, list[float]]],
    out_of_order: dict[str, dict[str, int]],
) -> dict[str, Any]:
    result: dict[str, Any] = {
        "machine": machine(),
        "tasks": tasks,
        "rounds": rounds,
        "waiting": {"few": [FEW, FEW + starts - 1], "many": [tasks - starts, tasks - 1]},
        "submit_s": {},
        "next_start_ms": {},
        "pass_ms": {},
    }
    for mode in MODES:
        median = statistics.median(submit[mode])
        result["submit_s"][mode] = {
            "median": median,
            "min": min(submit[mode]),
            "max": max(submit[mode]),
            "runs": submit[mode],
            "cancel_median": statistics.median(cancels[mode]),
            "met": median < SUBMIT_TARGET_S,
        }
        for key, samples in (("next_start_ms", starts_ms), ("pass_ms", passes_ms)):
            few, many = figures(samples[mode]["few"]), figures(samples[mode]["many"])
            ratio = many["p50"] / few["p50"]
            result[key][mode] = {
                "few": few,
                "many": many,
                "samples": len(samples[mode]["few"]),
                "ratio_p50": ratio,
                "ratio_p90": many["p90"] / few["p90"],
                "met": ratio <= RATIO_TARGET,
            }
        row = result["next_start_ms"][mode]
        for label in ("few", "many"):
            row[label]["stalls"] = sum(ms > STALL_MS for ms in starts_ms[mode][label])
            row[label]["out_of_order"] = out_of_order[mode][label]
    return result


def render(result: dict[str, Any]) -> str:
    tasks = result["tasks"]
    few_waiting, many_waiting = result["waiting"]["few"], result["waiting"]["many"]
    lines = [
        f"ugro arrays bench on {result['machine']}",
        "",
        f"Submit of an array of {tasks:,} tasks (s), {result['rounds']} round(s);"
        f" target < {SUBMIT_TARGET_S:g} s",
        "",
        "| array | median | min-max | cancel median | met |",
        "| --- | --- | --- | --- | --- |",
    ]
    for mode, row in result["submit_s"].items():
        label = f"{mode} (max_running={CAP})" if mode == "capped" else mode
        lines.append(
            f"| {label} | {row['median']:.2f} | {row['min']:.2f}-{row['max']:.2f}"
            f" | {row['cancel_median']:.2f} | {'PASS' if row['met'] else 'FAIL'} |"
        )
    titles = {
        "next_start_ms": "Next start: a task's end to the next task's process start (ms), one GPU",
        "pass_ms": "A dispatch pass in-process, every GPU busy (ms)",
    }
    for key, title in titles.items():
        lines += [
            "",
            f"{title}; few: {few_waiting[0]}-{few_waiting[1]} waiting,"
            f" many: {many_waiting[0]:,}-{many_waiting[1]:,} waiting;"
            f" target many/few p50 <= {RATIO_TARGET:g}x",
            "",
            "| array | samples | few p50 | few p90 | few max | many p50 | many p90 | many max"
            " | many/few p50 | many/few p90 | met |",
            "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
        ]
        notes = []
        for mode, row in result[key].items():
            few, many = row["few"], row["many"]
            lines.append(
                f"| {mode} | {row['samples']} | {few['p50']:.2f} | {few['p90']:.2f}"
                f" | {few['max']:.2f} | {many['p50']:.2f} | {many['p90']:.2f} | {many['max']:.2f}"
                f" | {row['ratio_p50']:.2f}x | {row['ratio_p90']:.2f}x"
                f" | {'PASS' if row['met'] else 'FAIL'} |"
            )
            for label in ("few", "many"):
                stalls, swapped = row[label].get("stalls"), row[label].get("out_of_order")
                if stalls or swapped:
                    notes.append(
                        f"{mode}, {label}: {stalls} start(s) slower than {STALL_MS:g} ms,"
                        f" {swapped} task(s) started before a lower index"
                    )
        lines += ["", *notes] if notes else []
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", type=int, default=TASKS, help=f"default {TASKS}")
    parser.add_argument("--rounds", type=int, default=ROUNDS, help=f"default {ROUNDS}")
    parser.add_argument(
        "--starts", type=int, default=STARTS, help=f"next starts timed a round (default {STARTS})"
    )
    parser.add_argument(
        "--passes", type=int, default=PASSES, help=f"passes timed a round (default {PASSES})"
    )
    parser.add_argument("--json", action="store_true", help="the report as one JSON object")
    args = parser.parse_args(argv)
    if args.tasks <= args.starts + FEW or args.rounds < 1 or args.starts < 1 or args.passes < 1:
        parser.error(f"--tasks must exceed --starts + {FEW}; --rounds, --starts, --passes >= 1")
    began = time.monotonic()
    print(
        f"arrays bench: {args.tasks:,} tasks, {args.rounds} round(s)", file=sys.stderr, flush=True
    )
    result = run(args.tasks, args.rounds, args.starts, args.passes)
    result["seconds"] = round(time.monotonic() - began, 1)
    if args.json:
        print(json.dumps(result, indent=2), flush=True)
    else:
        print(render(result) + f"\n\n{result['seconds']:.0f} s in all", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
