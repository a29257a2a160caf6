"""One process per GPU: ``python -m ugro.execution.per_gpu --logs TEMPLATE -- COMMAND...``.

ugro runs this in place of the command of a job submitted with ``--launch gpu``.
It starts one copy of the command per GPU of this node's share, as ``srun
--ntasks-per-node`` or torchrun's spawning would, with no rendezvous of its own:
the ranks find each other through ``MASTER_ADDR``/``MASTER_PORT`` as ugro set them.

Each rank gets the launcher's environment plus ``RANK``, ``LOCAL_RANK``,
``LOCAL_WORLD_SIZE``, ``WORLD_SIZE``, ``CUDA_VISIBLE_DEVICES`` (its one GPU) and
``UGRO_GPUS`` (the node's whole share). Its output goes to TEMPLATE with ``{rank}``
replaced by its global rank. The ranks stay in the launcher's process group, so
ugro's signal to the group reaches them all, and they keep ``UGRO_JOB_ID``.

The first rank to fail brings the others down (SIGTERM, then SIGKILL after
``UGRO_STOP_GRACE`` seconds) and its exit code becomes the launcher's; a line
naming it (and, if its log shows one, an out-of-memory line) is printed last, for
ugro's classifier, which reads the launcher's log. Exit codes: 0 when every rank
succeeded; the first failing rank's code (128+N for a rank killed by signal N, 127
for a rank that could not start); 128+N when the launcher was stopped by signal N
first; 2 for bad usage or a bad environment.
"""

from __future__ import annotations

import contextlib
import math
import os
import shlex
import signal
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

from ugro.execution.runner import _log_shows_oom, last_error_line

USAGE = "usage: python -m ugro.execution.per_gpu --logs TEMPLATE -- COMMAND [ARG...]"
_DEFAULT_GRACE = 30.0
_STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


class UsageError(Exception):
    """The command line or the environment ugro set is not one to start ranks from."""


@dataclass(frozen=True)
class Rank:
    """One process to start: its global and local rank, its GPU and its log."""

    rank: int
    local_rank: int
    gpu: str
    log_path: Path

    def __str__(self) -> str:
        return f"rank {self.rank} (GPU {self.gpu})"


@dataclass(frozen=True)
class Share:
    """This node's part of the job: its GPUs, its rank among nodes, the world size."""

    gpus: tuple[str, ...]
    node_rank: int
    world_size: int

    def ranks(self, log_template: str) -> list[Rank]:
        first = self.node_rank * len(self.gpus)
        return [
            Rank(first + i, i, gpu, Path(log_template.replace("{rank}", str(first + i))))
            for i, gpu in enumerate(self.gpus)
        ]

    def environment(self, base: Mapping[str, str], rank: Rank) -> dict[str, str]:
        env = dict(base)
        env.update(
            RANK=str(rank.rank),
            LOCAL_RANK=str(rank.local_rank),
            LOCAL_WORLD_SIZE=str(len(self.gpus)),
            WORLD_SIZE=str(self.world_size),
            CUDA_VISIBLE_DEVICES=rank.gpu,
            UGRO_GPUS=",".join(self.gpus),
        )
        return env


def parse_args(argv: Sequence[str]) -> tuple[str, list[str]]:
    """The log template and the command, from ``--logs TEMPLATE -- COMMAND...``.

    Everything after the first ``--`` is the command, verbatim.

    Raises:
        UsageError: no ``--``, no command, no ``--logs``, or a template without
            ``{rank}``.
    """
    if "--" not in argv:
        raise UsageError("no '--' before the command")
    split = list(argv).index("--")
    options, command = list(argv[:split]), list(argv[split + 1 :])
    template: str | None = None
    while options:
        option = options.pop(0)
        if option == "--logs" and options:
            template = options.pop(0)
        elif option.startswith("--logs="):
            template = option.removeprefix("--logs=")
        else:
            raise UsageError(f"unexpected argument {option!r} before '--'")
    if template is None:
        raise UsageError("--logs TEMPLATE is missing")
    if "{rank}" not in template:
        raise UsageError(
            f"the log template {template!r} has no '{{rank}}': each rank needs a log of its own"
        )
    if not command:
        raise UsageError("no command after '--'")
    return template, command


def read_share(env: Mapping[str, str]) -> Share:
    """This node's share from the variables ugro sets.

    Raises:
        UsageError: no GPUs, a number that is not one, or ranks that would not
            fit the world size.
    """
    listed = env.get("CUDA_VISIBLE_DEVICES", "").strip()
    if not listed:
        raise UsageError("CUDA_VISIBLE_DEVICES is empty or unset: no GPUs to start ranks on")
    gpus = tuple(gpu.strip() for gpu in listed.split(","))
    if "" in gpus:
        raise UsageError(f"CUDA_VISIBLE_DEVICES={listed!r} has an empty entry")
    count = len(gpus)
    node_rank = _whole_number(env, "UGRO_NODE_RANK", 0)
    per_node = _whole_number(env, "UGRO_GPUS_PER_NODE", count)
    if per_node != count:
        # Ranks are numbered node_rank * count + i: a node whose share differs from
        # the others' would give ranks twice or leave gaps.
        raise UsageError(
            f"UGRO_GPUS_PER_NODE={per_node} but CUDA_VISIBLE_DEVICES={listed!r} lists {count} GPUs"
        )
    world_size = _whole_number(env, "WORLD_SIZE", _whole_number(env, "UGRO_NUM_NODES", 1) * count)
    if (node_rank + 1) * count > world_size:
        raise UsageError(
            f"node {node_rank} with {count} GPUs needs ranks up to "
            f"{(node_rank + 1) * count - 1}, beyond WORLD_SIZE={world_size}"
        )
    return Share(gpus, node_rank, world_size)


def read_grace(env: Mapping[str, str]) -> float:
    """Seconds ranks get between SIGTERM and SIGKILL (``UGRO_STOP_GRACE``)."""
    text = env.get("UGRO_STOP_GRACE", "").strip()
    if not text:
        return _DEFAULT_GRACE
    try:
        grace = float(text)
    except ValueError:
        grace = math.nan
    if not (math.isfinite(grace) and grace >= 0):
        raise UsageError(f"UGRO_STOP_GRACE={text!r} is not a number of seconds")
    return grace


def _whole_number(env: Mapping[str, str], name: str, default: int) -> int:
    text = env.get(name, "").strip()
    if not text:
        return default
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise UsageError(f"{name}={text!r} is not a whole number")
    return value


class _Supervisor:
    """Starts the ranks, waits for them and stops them all once one fails or the
    launcher is told to stop.

    Signal handlers do the stopping themselves (SIGTERM now, SIGKILL when the
    grace timer's SIGALRM comes), so the main loop only ever blocks in a wait for
    the next child to exit.
    """

    def __init__(self, share: Share, ranks: list[Rank], grace: float) -> None:
        self.share = share
        self.ranks = ranks
        self.grace = grace
        self.running: dict[int, tuple[Rank, subprocess.Popen[bytes]]] = {}
        self.stopping = False
        self.stop_signal: int | None = None
        self.failure: tuple[Rank, int] | None = None
        self.start_error: str | None = None
        self.killed: list[Rank] = []

    def run(self, command: list[str]) -> int:
        handled = (*_STOP_SIGNALS, signal.SIGALRM)
        previous = {sig: signal.signal(sig, self._on_signal) for sig in handled}
        try:
            self._start_all(command)
            self._reap_all()
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        self._report()
        if self.failure is not None:
            return self.failure[1]
        if self.stop_signal is not None:
            return 128 + self.stop_signal
        return 0

    def _start_all(self, command: list[str]) -> None:
        for rank in self.ranks:
            if self.stopping:
                return
            try:
                rank.log_path.parent.mkdir(parents=True, exist_ok=True)
                log = rank.log_path.open("ab")
            except OSError as exc:
                self.start_error = f"{rank} has no log: {rank.log_path}: {exc.strerror or exc}"
                self._fail(rank, 127)
                return
            with log:
                try:
                    proc = subprocess.Popen(
                        command,
                        env=self.share.environment(os.environ, rank),
                        stdin=subprocess.DEVNULL,
                        stdout=log,
                        stderr=subprocess.STDOUT,
                        close_fds=True,
                    )
                except OSError as exc:
                    self.start_error = (
                        f"{rank} could not start {command[0]!r}: {exc.strerror or exc}"
                    )
                    self._fail(rank, 127)
                    return
            self.running[proc.pid] = (rank, proc)
            if self.stopping:
                # Told to stop while this one was starting: it missed the SIGTERM.
                os.kill(proc.pid, signal.SIGTERM if self.grace > 0 else signal.SIGKILL)
        first, last = self.ranks[0].rank, self.ranks[-1].rank
        which = f"rank {first}" if first == last else f"ranks {first}-{last}"
        print(
            f"started {which} on GPUs {','.join(self.share.gpus)}: {shlex.join(command)}",
            flush=True,
        )

    def _reap_all(self) -> None:
        while self.running:
            try:
                # WNOWAIT: the exited child stays a zombie, its pid taken, until it
                # has left the table, so a signal handler never signals a reused pid.
                found = os.waitid(os.P_ALL, 0, os.WEXITED | os.WNOWAIT)
            except ChildProcessError:
                return
            if found is None:
                continue
            entry = self.running.pop(found.si_pid, None)
            _, status = os.waitpid(found.si_pid, 0)
            if entry is None:
                continue
            rank, proc = entry
            proc.returncode = os.waitstatus_to_exitcode(status)
            code = proc.returncode if proc.returncode >= 0 else 128 - proc.returncode
            if code != 0:
                self._fail(rank, code)

    def _fail(self, rank: Rank, code: int) -> None:
        # Only the first failure counts, and not those of ranks being stopped.
        if self.failure is None and self.stop_signal is None:
            self.failure = (rank, code)
        self._stop()

    def _stop(self) -> None:
        if self.stopping:
            return
        self.stopping = True
        if self.grace > 0:
            self._send(signal.SIGTERM)
            signal.setitimer(signal.ITIMER_REAL, self.grace)
        else:
            self._send(signal.SIGKILL)

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        if signum == signal.SIGALRM:
            self.killed = [rank for rank, _ in self.running.values()]
            self._send(signal.SIGKILL)
            return
        if self.stop_signal is None and self.failure is None:
            self.stop_signal = signum
        self._stop()

    def _send(self, sig: int) -> None:
        for pid in list(self.running):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)

    def _report(self) -> None:
        """The launcher's last words: what ended the job, and which ranks had to be
        killed."""
        if self.killed:
            names = ", ".join(str(rank.rank) for rank in self.killed)
            print(f"killed ranks {names}: still running {self.grace:g} s after SIGTERM")
        if self.stop_signal is not None:
            print(f"stopped by {signal.Signals(self.stop_signal).name}", flush=True)
        if self.failure is None:
            return
        rank, code = self.failure
        if self.start_error is not None:
            print(self.start_error, flush=True)
            return
        line = f"{rank} exited with code {code}"
        error = last_error_line(rank.log_path)
        print(f"{line}: {error}" if error else line, flush=True)
        if _log_shows_oom(rank.log_path):
            print(f"rank {rank.rank}: CUDA out of memory", flush=True)


def main(argv: list[str] | None = None) -> int:
    """Start one rank per GPU and supervise them; the exit code as the module
    docstring describes."""
    try:
        template, command = parse_args(sys.argv[1:] if argv is None else argv)
        share = read_share(os.environ)
        grace = read_grace(os.environ)
    except UsageError as exc:
        print(f"per_gpu: {exc}\n{USAGE}", file=sys.stderr)
        return 2
    return _Supervisor(share, share.ranks(template), grace).run(command)


if __name__ == "__main__":
    sys.exit(main())
