"""Several jobs' metrics together: `ugro compare` (each metric's final and best
values side by side) and `ugro tensorboard` (the command that shows their
TensorBoard runs in one view)."""

from __future__ import annotations

import json
import shlex
from typing import Any

import click

from ugro.cli.base import client_from_env, complete_job_ids, err, fail, main, short_lived
from ugro.cli.plain import TextTable

_BETTER = {"max": "higher", "min": "lower", None: "-"}


@main.command()
@click.argument(
    "job_ids", nargs=-1, required=True, metavar="JOB...", shell_complete=complete_job_ids
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
def compare(job_ids: tuple[str, ...], as_json: bool) -> None:
    """Print each metric's final and best values of these jobs (an array or sweep:
    its tasks) side by side, a column a job: FINAL (best BEST @STEP), or FINAL
    (best) when the last value is the best.

    Best is the lowest value of a loss (a name with a word starting loss, err,
    perplexity, ppl, mse, mae, mape, rmse, nll, wer or cer), the highest of a score (a
    word starting acc, score, f1, auc, precision, recall, bleu, rouge, map, iou,
    dice, r2, top1, top5 or reward; else the score the job's progress reports);
    other metrics have no best. Works while the stack is down."""
    short_lived()
    from ugro.job_metrics import summarise

    with client_from_env(connect=False) as client:
        jobs = _jobs(client, job_ids)
        found = {}
        for job in jobs:
            score_name = job.progress.score_name if job.progress is not None else None
            found[job.id] = summarise(client.metrics(job.id), score_name)
    if as_json:
        data = {
            job_id: {name: vars(summary) for name, summary in summaries.items()}
            for job_id, summaries in found.items()
        }
        click.echo(json.dumps(data, indent=2, default=str))
        return
    names = list(dict.fromkeys(name for summaries in found.values() for name in summaries))
    if not names:
        fail("none of these jobs has logged metrics yet (ugro.log_metrics)", 1)
    table = TextTable("METRIC", "BETTER", *found)
    for name in names:
        ways = {s[name].direction for s in found.values() if name in s}
        better = _BETTER[ways.pop()] if len(ways) == 1 else "mixed"
        cells = [_cell(summaries.get(name)) for summaries in found.values()]
        table.add_row(name, better, *cells)
    table.print()


def _cell(summary: Any) -> str:
    """``0.213 (best 0.198 @8)``: the final value, and the best when it has one
    (``0.198 (best)``: the final value is the best)."""
    if summary is None:
        return "-"
    text = f"{summary.final:.6g}"
    if summary.best is None:
        return text
    if summary.best_step == summary.final_step and summary.best == summary.final:
        return f"{text} (best)"
    step = "" if summary.best_step is None else f" @{summary.best_step}"
    return f"{text} (best {summary.best:.6g}{step})"


@main.command()
@click.argument("job_ids", nargs=-1, metavar="[JOB]...", shell_complete=complete_job_ids)
def tensorboard(job_ids: tuple[str, ...]) -> None:
    """Print the TensorBoard command that shows these jobs' runs together (an array
    or sweep: its tasks), each named by its job id:

        tensorboard --logdir_spec=ID:DIR,ID:DIR

    With no JOB: every job whose TensorBoard dir ($UGRO_TENSORBOARD_DIR) has files.
    Works while the stack is down."""
    short_lived()
    with client_from_env(connect=False) as client:
        if job_ids:
            jobs = _jobs(client, job_ids)
            for job in jobs:
                if not _has_files(job.paths.tensorboard):
                    err().print(f"warning: job {job.id} has no TensorBoard files yet")
        else:
            jobs = [job for job in client.list() if _has_files(job.paths.tensorboard)]
    if not jobs:
        fail("no job has TensorBoard files yet: a job writes them to $UGRO_TENSORBOARD_DIR", 1)
    pairs = []
    for job in jobs:
        folder = str(job.paths.tensorboard)
        if "," in folder:  # (--logdir_spec has no way to quote one)
            fail(f"job {job.id}: its TensorBoard dir {folder} holds a ',': use --logdir", 1)
        pairs.append(f"{job.id}:{folder}")
    click.echo(f"tensorboard {shlex.quote('--logdir_spec=' + ','.join(pairs))}")


def _jobs(client: Any, job_ids: tuple[str, ...]) -> list[Any]:
    """The jobs of these ids (or unique prefixes), an array's or sweep's tasks in its
    place, each once, in the order given."""
    jobs: dict[str, Any] = {}
    for job_id in job_ids:
        found = client.get_array(job_id).tasks if client.is_array(job_id) else [client.get(job_id)]
        jobs.update((job.id, job) for job in found)
    return list(jobs.values())


def _has_files(folder: Any) -> bool:
    try:
        return any(path.is_file() for path in folder.rglob("*"))
    except OSError:
        return False
