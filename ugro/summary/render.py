"""The daily summary for people: a Markdown page and a PNG chart of GPU use.

The page reads as it is in a terminal or an editor; tables where there are rows
to compare. The chart (one line per node, the mean utilisation of its GPUs) is
linked from the page, which names it by file name: both sit in ``summaries/``.
"""

from __future__ import annotations

import io
from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta
from pathlib import Path

from ugro.health.samples import NodeSample
from ugro.jobs.paths import write_bytes_atomic
from ugro.summary.model import DaySummary
from ugro.summary.resources import Peak, node_gpu_util
from ugro.summary.usage import GpuHours

#: Table cells are cut to this many characters (the JSON has them whole).
_CELL = 200


def _cell(value: object) -> str:
    text = "-" if value is None or value == "" else str(value)
    text = " ".join(text.split()).replace("|", "\\|")
    return text if len(text) <= _CELL else text[: _CELL - 3] + "..."


def _table(header: Sequence[str], rows: Iterable[Sequence[object]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_cell(value) for value in row) + " |" for row in rows]
    return [*lines, ""]


def _clock(moment: datetime | None, day: datetime) -> str:
    """HH:MM on the summary's day, the date too on another."""
    if moment is None:
        return "-"
    if moment.date() == day.date():
        return moment.strftime("%H:%M")
    return moment.strftime("%Y-%m-%d %H:%M")


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f} %"


def _peak(peak: Peak | None, day: datetime, with_node: bool = False) -> str:
    if peak is None:
        return "-"
    where = f" on {peak.node}" if with_node and peak.node else ""
    return f"{peak.value:.1f} % at {_clock(peak.at, day)}{where}"


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds / size:.1f} {unit}"
    return f"{seconds:.0f} s"


def render_markdown(summary: DaySummary, chart: str | None = None) -> str:
    """The page. ``chart`` is the PNG's file name, when there is one."""
    day = summary.since
    exp, res, events, progress = (
        summary.experiments,
        summary.resources,
        summary.events,
        summary.progress,
    )
    lines = [f"# ugro daily summary: {summary.date.isoformat()} ({summary.timezone})", ""]
    if exp.total == 0 and res.samples == 0 and not events.counts and not events.outdated:
        lines += [
            "A quiet day: no job ran or waited, no health sample was taken, nothing happened.",
            "",
        ]
        if events.outdated_total:
            lines += [f"Outdated runs: {events.outdated_total}.", ""]
        lines += [
            f"_Written {summary.generated_at.strftime('%Y-%m-%d %H:%M %Z')}._",
            "",
        ]
        return "\n".join(lines)
    gpus = "No health samples."
    if res.samples:
        gpus = (
            f"GPUs busy {_percent(res.gpu_util_avg)} on average"
            f" (peak {_peak(res.gpu_util_peak, day)});"
            f" {res.idle_gpu_hours_while_waiting:.2f} idle GPU-hours while jobs waited."
        )
    statuses = ", ".join(f"{n} {status}" for status, n in exp.by_status.items())
    lines += [
        f"**{exp.total} jobs** ({statuses}); {len(exp.started)} started,"
        f" {len(exp.finished)} finished, {len(exp.failed)} failed today."
        f" {gpus} {events.total} key events, {len(events.ooms)} out-of-memory ends.",
        "",
        "## Experiments",
        "",
    ]
    lines += _table(["status at the day's end", "jobs"], exp.by_status.items())
    lines += [f"### Started today ({len(exp.started)})", ""]
    lines += (
        _table(
            ["time", "job", "node", "GPUs", "attempt"],
            (
                (_clock(j.at, day), j.id, j.node, ",".join(map(str, j.gpus)), j.attempt)
                for j in exp.started
            ),
        )
        if exp.started
        else ["None.", ""]
    )
    lines += [f"### Finished today ({len(exp.finished)})", ""]
    lines += (
        _table(
            ["time", "job", "node", "ran for"],
            ((_clock(j.at, day), j.id, j.node, _duration(j.duration_s)) for j in exp.finished),
        )
        if exp.finished
        else ["None.", ""]
    )
    lines += [f"### Failed today ({len(exp.failed)})", ""]
    lines += (
        _table(
            ["time", "job", "node", "attempt", "end", "error"],
            (
                (_clock(j.at, day), j.id, j.node, j.attempt, j.exit_reason, f"`{_cell(j.error)}`")
                for j in exp.failed
            ),
        )
        if exp.failed
        else ["None.", ""]
    )
    if exp.failed_attempts_retried:
        lines += [f"{exp.failed_attempts_retried} failed attempts were retried.", ""]
    if exp.cancelled:
        lines += [f"### Cancelled today ({len(exp.cancelled)})", ""]
        lines += _table(["time", "job"], ((_clock(j.at, day), j.id) for j in exp.cancelled))

    lines += ["## Resources", ""]
    if res.samples == 0:
        lines += ["No health samples for this day.", ""]
    else:
        if chart:
            lines += [f"![GPU utilisation per node]({chart})", ""]
        rows: list[Sequence[object]] = [
            (
                n.node,
                n.gpus,
                f"{n.hours_covered:.1f}",
                _percent(n.gpu_util_avg),
                _peak(n.gpu_util_peak, day),
                _percent(n.cpu_avg),
                _peak(n.cpu_peak, day),
                ",".join(map(str, n.idle_gpus)) or "none",
                f"{n.idle_gpu_hours_while_waiting:.2f}",
            )
            for n in res.nodes
        ]
        rows.append(
            (
                "**all**",
                sum(n.gpus for n in res.nodes),
                "",
                _percent(res.gpu_util_avg),
                _peak(res.gpu_util_peak, day),
                _percent(res.cpu_avg),
                _peak(res.cpu_peak, day),
                "",
                f"{res.idle_gpu_hours_while_waiting:.2f}",
            )
        )
        lines += _table(
            [
                "node",
                "GPUs",
                "hours sampled",
                "GPU avg",
                "GPU peak",
                "CPU avg",
                "CPU peak",
                "never-used GPUs",
                "idle GPU-h while jobs waited",
            ],
            rows,
        )
    # Counted from the registry's jobs, not the samples: shown on a day without any.
    lines += [f"At most {res.max_pending} jobs waited at once.", ""]
    lines += [
        f"Idle held GPUs: {res.idle_held_gpus} flagged (a running job's GPU idle for"
        f" the idle window), {res.idle_held_gpu_hours:.2f} GPU-hours lost.",
        "",
    ]
    lines += _gpu_hours(summary.gpu_hours)

    lines += ["## Key events", ""]
    if events.counts:
        lines += [", ".join(f"{kind}: {n}" for kind, n in events.counts.items()), ""]
    if events.key:
        lines += _table(
            ["time", "event", "node", "job", "message"],
            ((_clock(e.at, day), e.kind, e.node, e.job_id, e.message) for e in events.key),
        )
        if events.key_not_listed:
            lines += [f"{events.key_not_listed} more not listed (see the JSON).", ""]
    elif not events.counts:
        lines += ["None.", ""]
    lines += [
        f"Stuck runs stopped: {events.stuck_runs_stopped}."
        f" Critical alerts: {events.critical_alerts}."
        f" Outdated runs: {events.outdated_total}"
        f" ({len(events.outdated)} became outdated today).",
        "",
    ]
    if events.ooms:
        lines += [f"### Out of memory ({len(events.ooms)})", ""]
        lines += _table(
            ["time", "job", "attempt", "node"],
            ((_clock(o.at, day), o.job_id, o.attempt, o.node) for o in events.ooms),
        )
    if events.outdated:
        lines += [f"### Became outdated ({len(events.outdated)})", ""]
        lines += _table(
            ["job", "finished"],
            ((o.job_id, o.finished_at.strftime("%Y-%m-%d %H:%M")) for o in events.outdated),
        )

    lines += ["## Progress", ""]
    if not progress.runs:
        lines += ["No active runs at the day's end.", ""]
    else:
        overall = (
            f"{progress.epochs_done}/{progress.epochs_planned} epochs"
            f" ({_percent(progress.overall_percent)})"
            if progress.epochs_planned
            else "no planned epochs known"
        )
        lines += [
            f"{progress.active} active runs; overall {overall}.",
            f"Above 90 %: {', '.join(progress.above_90) or 'none'}.",
            f"Running more than {progress.long_run_days:g} days:"
            f" {', '.join(progress.long_runs) or 'none'}.",
            "",
        ]
        lines += _table(
            ["job", "status", "node", "epochs", "progress", "running for", "ETA", "ends"],
            (
                (
                    r.id,
                    r.status,
                    r.node,
                    f"{r.completed_epochs}/{r.total_epochs or '?'}",
                    _percent(r.percent),
                    "-" if r.running_days is None else _duration(r.running_days * 86400),
                    _duration(r.eta_seconds),
                    _clock(r.ends_at, day),
                )
                for r in progress.runs
            ),
        )
    lines += [f"_Written {summary.generated_at.strftime('%Y-%m-%d %H:%M %Z')}._", ""]
    return "\n".join(lines)


def _gpu_hours(usage: GpuHours) -> list[str]:
    """The "GPU-hours by user" table, and by group when any job had one."""
    lines = ["### GPU-hours by user", ""]
    if not usage.by_user:
        return [*lines, "No job held a GPU.", ""]
    total = ("**all**", f"{usage.total:.2f}", sum(u.jobs for u in usage.by_user))
    lines += _table(
        ["user", "GPU-hours", "jobs"],
        [*((u.user, f"{u.gpu_hours:.2f}", u.jobs) for u in usage.by_user), total],
    )
    if usage.by_group:
        lines += ["### GPU-hours by group", ""]
        lines += _table(
            ["group", "GPU-hours", "jobs"],
            [*((g.group, f"{g.gpu_hours:.2f}", g.jobs) for g in usage.by_group), total],
        )
    return lines


def render_chart(found: Sequence[NodeSample], summary: DaySummary, path: Path) -> bool:
    """Draw each node's mean GPU utilisation over the day into ``path`` (PNG,
    written atomically). False, and no file, when there is nothing to draw."""
    # The x axis is hours since the day's start (23 or 25 of them on a DST change).
    per_node: dict[str, list[tuple[float, float]]] = {}
    for sample in found:
        util = node_gpu_util(sample)
        if util is not None:
            hour = (sample.at - summary.since).total_seconds() / 3600
            per_node.setdefault(sample.node, []).append((hour, util))
    if not per_node:
        return False
    import matplotlib

    matplotlib.use("Agg")  # no display: files only
    import matplotlib.pyplot as plt

    length = (summary.until - summary.since).total_seconds() / 3600
    ticks = list(range(0, int(length) + 1, 2))
    labels = [
        (summary.since + timedelta(hours=tick)).astimezone(summary.since.tzinfo).strftime("%H:%M")
        for tick in ticks
    ]
    figure, axes = plt.subplots(figsize=(10, 3.5), dpi=100)
    try:
        for node, points in sorted(per_node.items()):
            xs = [hour for hour, _ in points]
            axes.step(xs, [util for _, util in points], where="post", label=node)
        axes.set_xlim(0, length)
        axes.set_xticks(ticks, labels)
        axes.set_ylim(0, 100)
        axes.set_ylabel("GPU utilisation (%)")
        axes.set_title(f"GPU utilisation per node, {summary.date.isoformat()} ({summary.timezone})")
        axes.grid(alpha=0.3)
        axes.legend(loc="upper right", fontsize="small")
        figure.tight_layout()
        png = io.BytesIO()
        figure.savefig(png, format="png")
        write_bytes_atomic(path, png.getvalue())
    finally:
        plt.close(figure)
    return True
