"""Parameter sweeps and job arrays, as data: which points a sweep runs and the
argv of each. Pure apart from reading the sweep file; submitting is the client's.

A sweep is one command with ``{name}`` placeholders, run once per point of a
grid (the cartesian product of value lists), of random samples, or of both
(each grid point with every sample: seeds in the grid then replicate each
sampled configuration). Every parameter also reaches its job as the environment
variable ``UGRO_PARAM_<NAME>`` (built where the job is submitted, with the text
of ``format_value``, as in argv), so a parameter the command never names still
does something.
"""

from __future__ import annotations

import itertools
import math
import random
import re
import secrets
import shlex
import string
from collections.abc import Mapping, Sequence
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from ugro.errors import SpecError
from ugro.jobs.spec import JobSpec, _check_safe, _check_text

Scalar = bool | int | float | str
#: The most points one sweep or array may have: past it, a typo (an extra zero in
#: ``--array``, one list too many in a grid) would flood the queue.
MAX_POINTS = 10_000
#: Placeholders every sweep command may use besides its parameters.
BUILTINS = ("index", "sweep")
#: Random samples keep this many significant digits: finer steps make no
#: difference to a hyperparameter and the shorter text reads better in argv and logs.
SAMPLE_DIGITS = 6
#: The job fields a sweep (and its ``then`` job) passes to each of its jobs.
JOB_FIELDS = (
    "kind",
    "gpus",
    "priority",
    "timeout",
    "max_retries",
    "retry_on",
    "epochs",
    "env",
    "tags",
    "preemptible",
)

_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_INT = re.compile(r"^[+-]?[0-9]+$")
_FLOAT = re.compile(r"^[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?$")
_ARRAY_PIECE = re.compile(r"^(\d+)(?:-(\d+)(?::(\d+))?)?$")


def format_value(value: Scalar) -> str:
    """A parameter's text in argv and env.

    Booleans are ``true``/``false`` (as written in YAML and on the command line).
    A float is its ``%g`` form when that reads back as the same float
    (``1e-4`` -> ``0.0001``, ``3.0`` -> ``3``), else its ``repr``, the shortest
    text that does: the value the job parses is always exactly the one swept.
    """
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        short = format(value, "g")
        return short if float(short) == value else repr(value)
    return str(value)


def _fields(arg: str) -> list[tuple[str, str | None]]:
    """``arg`` as (literal text, placeholder name or None) pairs; ``{{``/``}}`` are braces."""
    try:
        parsed = list(string.Formatter().parse(arg))
    except ValueError as exc:
        raise ValueError(f"{arg!r}: {exc}; write {{{{ or }}}} for a literal brace") from None
    pieces: list[tuple[str, str | None]] = []
    for literal, name, spec, conversion in parsed:
        if name is not None and (spec or conversion or not _NAME.match(name)):
            raise ValueError(
                f"{arg!r}: a placeholder is {{name}} with a parameter's name;"
                " write {{ or }} for a literal brace"
            )
        pieces.append((literal, name))
    return pieces


def _unknown(name: str, known: Sequence[str], always: str = "") -> str:
    listed = ", ".join(known) or "none"
    return f"{{{name}}} is not a parameter (parameters: {listed}{always})"


def placeholders(command: Sequence[str]) -> set[str]:
    """The names of the ``{name}`` placeholders in ``command``.

    Raises:
        SpecError: an argument has a lone brace or a placeholder that is not a name.
    """
    try:
        return {name for arg in command for _, name in _fields(arg) if name is not None}
    except ValueError as exc:
        raise SpecError(f"command: {exc}") from None


def substitute(command: Sequence[str], params: Mapping[str, Scalar]) -> list[str]:
    """``command`` with each ``{name}`` replaced by ``format_value(params[name])``.
    Substituted text is not scanned again, so a value may hold braces.

    Raises:
        SpecError: a placeholder names no parameter, or is malformed.
    """
    unknown = placeholders(command) - set(params)
    if unknown:
        raise SpecError(f"command: {_unknown(min(unknown), sorted(params))}")
    return [
        "".join(
            text + ("" if name is None else format_value(params[name])) for text, name in pieces
        )
        for pieces in map(_fields, command)
    ]


def _scalar(text: str) -> Scalar:
    """A ``--grid`` value: an int, else a float, else true/false, else the text."""
    if _INT.match(text):
        return int(text)
    if _FLOAT.match(text):
        return float(text)
    return {"true": True, "false": False}.get(text, text)


def _check_name(name: str) -> str:
    if not _NAME.match(name):
        raise ValueError(
            f"{name[:80]!r} is not a parameter name: use letters, digits and '_',"
            " not starting with a digit"
        )
    if name in BUILTINS:
        raise ValueError(f"{name!r} is reserved: {{{name}}} is given to every command")
    return name


def _check_values(values: Any) -> list[Scalar]:
    """A non-empty list of scalars, no two with the same text (they would be the same job)."""
    if not isinstance(values, list):
        raise ValueError("must be a list of values")
    if not values:
        raise ValueError("the list is empty")
    seen: set[str] = set()
    for value in values:
        if not isinstance(value, Scalar):
            raise ValueError(f"{value!r} is not a number, a string, true or false")
        if isinstance(value, float) and not math.isfinite(value):
            raise ValueError(f"{value!r} is not a finite number")
        text = format_value(value)
        if text in seen:
            raise ValueError(f"{text} is listed twice")
        seen.add(text)
    return values


ParamName = Annotated[str, AfterValidator(_check_name)]
Values = Annotated[list[Scalar], BeforeValidator(_check_values)]


def parse_grid(values: Sequence[str]) -> dict[str, list[Scalar]]:
    """The grid of repeated ``--grid name=v1,v2,...`` options, in the order given.

    Raises:
        SpecError: naming ``--grid``, for a missing ``=``, a bad name, an empty
            list or value, or a name given twice.
    """
    grid: dict[str, list[Scalar]] = {}
    for option in values:
        name, sep, listed = option.partition("=")
        name = name.strip()
        try:
            if not sep:
                raise ValueError(f"{option[:80]!r} is not name=v1,v2,...")
            _check_name(name)
            if name in grid:
                raise ValueError(f"{name!r} is given twice")
            if not listed.strip():
                raise ValueError(f"{name!r} has no values")
            texts = [text.strip() for text in listed.split(",")]
            if "" in texts:
                raise ValueError(f"{name!r} has an empty value in {listed!r}")
            grid[name] = _check_values([_scalar(text) for text in texts])
        except ValueError as exc:
            message = str(exc) if str(exc).startswith("'") else f"{name!r}: {exc}"
            raise SpecError(f"--grid: {message}") from None
    return grid


def parse_array_range(text: str) -> list[int]:
    """The distinct task indices of ``--array``, sorted, SLURM style: ``0-99``,
    ``1,3,5``, ``0-15:4`` (a step) or a mix (``0-3,8,10-20:2``); ranges are inclusive.

    Raises:
        SpecError: naming ``--array``, for a malformed piece, a range that runs
            backwards, a zero step, or more than ``MAX_POINTS`` indices.
    """
    indices: set[int] = set()
    for piece in text.split(","):
        piece = piece.strip()
        if "%" in piece:
            raise SpecError(
                f"--array: {piece!r}: the number running at once is set by max_running, not with %"
            )
        match = _ARRAY_PIECE.match(piece)
        if match is None:
            raise SpecError(f"--array: {piece!r} is not N, N-M or N-M:STEP (indices are 0 or more)")
        first, last, step = int(match[1]), int(match[2] or match[1]), int(match[3] or 1)
        if last < first:
            raise SpecError(f"--array: {piece!r} runs backwards")
        if step == 0:
            raise SpecError(f"--array: {piece!r} has a step of 0")
        span = range(first, last + 1, step)
        if len(span) > MAX_POINTS or len(indices | set(span)) > MAX_POINTS:
            raise SpecError(f"--array: {text[:80]!r} has more than {MAX_POINTS:,} indices")
        indices.update(span)
    return sorted(indices)


def _check_command(value: Any) -> Any:
    """A command as a list, or as one string split the way a shell would."""
    if isinstance(value, str):
        try:
            value = shlex.split(value)
        except ValueError as exc:
            raise ValueError(f"cannot split {value[:80]!r}: {exc}") from None
    return value


def _check_argv(value: list[str]) -> list[str]:
    if not value[0].strip():
        raise ValueError("the program (first element) is empty")
    for n, arg in enumerate(value):
        _check_text(arg, f"argument {n}")
        _fields(arg)
    return value


Command = Annotated[
    list[str], BeforeValidator(_check_command), Field(min_length=1), AfterValidator(_check_argv)
]


class _JobTemplate(BaseModel):
    """A name and the fields passed to every job, each checked by ``JobSpec``'s
    own rules so a sweep refuses at once what its jobs would refuse one by one."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    kind: Literal["train", "eval"] = "train"
    gpus: int = 1
    priority: int = 0
    timeout: float | None = None
    max_retries: int = 0
    retry_on: list[str] = Field(default_factory=list)
    epochs: int | None = None
    env: dict[str, str] = Field(default_factory=dict)
    tags: list[str] = Field(default_factory=list)
    preemptible: bool = False

    @field_validator(*JOB_FIELDS, mode="before")
    @classmethod
    def _as_job(cls, value: Any, info: ValidationInfo) -> Any:
        field = info.field_name or ""
        try:
            job = JobSpec.model_validate({"name": "x", "command": ["x"], field: value})
        except ValidationError as exc:
            err = exc.errors()[0]
            inner = ".".join(str(part) for part in err["loc"][1:])
            message = err["msg"].removeprefix("Value error, ")
            raise ValueError(f"{inner}: {message}" if inner else message) from None
        return getattr(job, field)

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        return _check_safe(value, "name")

    def job_fields(self) -> dict[str, Any]:
        """The ``JobSpec`` fields shared by the jobs, as keyword arguments."""
        return self.model_dump(include=set(JOB_FIELDS))


class FollowUpJob(_JobTemplate):
    """The ``then:`` job, submitted with the sweep to run once all its jobs have
    ended. Its command may use ``{sweep}`` (the sweep's id) and nothing else."""

    command: Command

    @field_validator("command")
    @classmethod
    def _only_sweep(cls, value: list[str]) -> list[str]:
        for name in placeholders(value) - {"sweep"}:
            raise ValueError(f"{{{name}}} is not available here: only {{sweep}} is")
        return value

    def argv(self, sweep_id: str) -> list[str]:
        """The command with ``{sweep}`` filled in."""
        return substitute(self.command, {"sweep": sweep_id})


class Distribution(BaseModel):
    """One randomly sampled parameter: a range ``{low, high, log}`` (log: uniform
    in log space, for scales such as learning rates), or, written as a list, the
    values to choose from uniformly."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    low: float | None = None
    high: float | None = None
    log: bool = False
    choices: Values | None = None

    @model_validator(mode="before")
    @classmethod
    def _from_list(cls, data: Any) -> Any:
        if isinstance(data, list):
            return {"choices": _check_values(data)}
        if not isinstance(data, dict | Distribution):
            raise ValueError("must be a range {low, high, log} or a list of values")
        return data

    @model_validator(mode="after")
    def _check_range(self) -> Distribution:
        if self.choices is not None:
            if self.low is not None or self.high is not None or self.log:
                raise ValueError("give either a list of values or low and high, not both")
            return self
        if self.low is None or self.high is None:
            raise ValueError("a range needs low and high (or give a list of values)")
        if not (math.isfinite(self.low) and math.isfinite(self.high) and self.low < self.high):
            raise ValueError(f"low ({self.low}) must be below high ({self.high})")
        if self.log and self.low <= 0:
            raise ValueError(f"a log range needs low above 0, got {self.low}")
        return self

    def sample(self, rng: random.Random) -> Scalar:
        """One value, drawn with ``rng``, within the bounds."""
        if self.choices is not None:
            return rng.choice(self.choices)
        assert self.low is not None and self.high is not None  # checked when built
        if self.log:
            value = math.exp(rng.uniform(math.log(self.low), math.log(self.high)))
        else:
            value = rng.uniform(self.low, self.high)
        value = float(f"{value:.{SAMPLE_DIGITS}g}")
        return min(max(value, self.low), self.high)


class RandomSearch(BaseModel):
    """``count`` samples of ``params``. Without ``seed``, one is drawn when the
    spec is built and kept in it, so its points are the same every time they are
    asked for, and can be drawn again from the recorded spec."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    count: int = Field(ge=1, le=MAX_POINTS)
    seed: int = Field(default_factory=lambda: secrets.randbits(32))
    params: dict[ParamName, Distribution] = Field(min_length=1)

    def samples(self) -> list[dict[str, Scalar]]:
        """The ``count`` samples, each drawing the parameters in written order."""
        rng = random.Random(self.seed)
        return [
            {name: dist.sample(rng) for name, dist in self.params.items()}
            for _ in range(self.count)
        ]


class SweepSpec(_JobTemplate):
    """A sweep: ``command`` run at every point of ``grid`` and/or ``random``.

    ``max_running`` caps how many of its jobs run at once; ``then`` is one job
    that runs after all of them.
    """

    # grid and random come before command: command's check reads them (info.data).
    grid: dict[ParamName, Values] | None = None
    random: RandomSearch | None = None
    command: Command
    max_running: int | None = Field(default=None, ge=1)
    then: FollowUpJob | None = None

    @field_validator("random")
    @classmethod
    def _distinct_names(
        cls, value: RandomSearch | None, info: ValidationInfo
    ) -> RandomSearch | None:
        both = set(info.data.get("grid") or {}) & set(value.params if value else {})
        if both:
            raise ValueError(f"{', '.join(sorted(both))}: in both grid and random")
        return value

    @field_validator("command")
    @classmethod
    def _known_placeholders(cls, value: list[str], info: ValidationInfo) -> list[str]:
        if "grid" not in info.data or "random" not in info.data:
            return value  # refused already: the names are unknown
        names = [
            *(info.data["grid"] or {}),
            *(info.data["random"].params if info.data["random"] else {}),
        ]
        for name in sorted(placeholders(value) - {*names, *BUILTINS}):
            raise ValueError(_unknown(name, names, "; always there: index, sweep"))
        return value

    @model_validator(mode="after")
    def _check_points(self) -> SweepSpec:
        if self.grid is None and self.random is None:
            raise ValueError("give grid, random or both: the sweep has no points")
        count = math.prod(len(values) for values in (self.grid or {}).values())
        count *= self.random.count if self.random else 1
        if count > MAX_POINTS:
            raise ValueError(f"the sweep has {count:,} points: at most {MAX_POINTS:,}")
        env_names: dict[str, str] = {}
        for name in self.parameters():
            other = env_names.setdefault(name.upper(), name)
            if other != name:
                raise ValueError(f"{other!r} and {name!r} would both be UGRO_PARAM_{name.upper()}")
        return self

    def parameters(self) -> list[str]:
        """The parameter names: the grid's, then the random ones, as written."""
        return [*(self.grid or {}), *(self.random.params if self.random else {})]

    def points(self) -> list[dict[str, Scalar]]:
        """Every point, in order: the grid's product in the order its keys are
        written, the last varying fastest, each grid point with every sample."""
        grid = self.grid or {}
        cells = [dict(zip(grid, combo, strict=True)) for combo in itertools.product(*grid.values())]
        if self.random is None:
            return cells
        samples = self.random.samples()
        return [{**cell, **sample} for cell in cells for sample in samples]

    def commands(self, sweep_id: str) -> list[tuple[dict[str, Scalar], list[str]]]:
        """Each point's parameters and argv, with ``{index}`` its place (0..N-1)
        and ``{sweep}`` the id the caller gives the sweep."""
        return [
            (point, substitute(self.command, {**point, "index": n, "sweep": sweep_id}))
            for n, point in enumerate(self.points())
        ]


def describe_error(err: Mapping[str, Any]) -> str:
    """One pydantic error as ``key.path: what is wrong``."""
    loc = [str(part) for part in err["loc"] if part != "[key]"]
    where = ".".join(loc[:-1])
    if err["type"] in ("extra_forbidden", "missing"):
        what = "unknown" if err["type"] == "extra_forbidden" else "missing"
        return f"{where}: {what} key {loc[-1]!r}" if where else f"{what} key {loc[-1]!r}"
    message = err["msg"].removeprefix("Value error, ")
    return f"{'.'.join(loc)}: {message}" if loc else message


def sweep_from_grid(
    name: str, command: Sequence[str], grid: Mapping[str, Sequence[Scalar]], **job_fields: Any
) -> SweepSpec:
    """A grid sweep from command-line parts (``parse_grid``'s result for ``grid``);
    ``job_fields`` are ``SweepSpec``'s other fields (gpus, max_running, then...).

    Raises:
        SpecError: naming each bad field.
    """
    data = {"name": name, "command": list(command), "grid": {k: list(v) for k, v in grid.items()}}
    try:
        return SweepSpec.model_validate({**data, **job_fields})
    except ValidationError as exc:
        raise SpecError("invalid sweep: " + "; ".join(map(describe_error, exc.errors()))) from None
