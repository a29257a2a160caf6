"""JobSpec: what a researcher asks for, validated before anything is created."""

from __future__ import annotations

import re
import secrets
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from ugro.errors import SpecError
from ugro.jobs.dependencies import DependencyKind

#: A safe path component: no separators, no leading dot, no control characters.
SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
JOB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,79}$")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*$")
_UNIT_SECONDS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}
#: The most GPUs one job may ask for on one node: more than any single server holds.
MAX_GPUS = 64
#: The most nodes one job may span.
MAX_NODES = 64

SafeName = Annotated[str, Field(min_length=1, max_length=64)]


def parse_duration(value: str | float | int) -> float:
    """``"90"``, ``"90s"``, ``"15m"``, ``"2h"``, ``"1.5d"`` -> seconds."""
    if isinstance(value, int | float):
        seconds = float(value)
    else:
        match = _DURATION.match(value)
        if match is None:
            raise ValueError(f"{value!r} is not a duration: use a number with s, m, h or d")
        seconds = float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
    if seconds <= 0:
        raise ValueError(f"must be positive, got {value!r}")
    return seconds


def _check_text(value: str, what: str) -> str:
    """Refuse text that is not valid Unicode (bytes that were not UTF-8 reach
    Python as lone surrogates): it could be neither stored as JSON nor shown; and
    a NUL byte, which no argument, environment value or path can carry."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError(f"{what} is not valid UTF-8 text") from None
    if "\x00" in value:
        raise ValueError(f"{what} contains a NUL byte")
    return value


def _check_safe(value: str, what: str) -> str:
    if not SAFE_NAME.match(value):
        raise ValueError(
            f"{value[:80]!r} is not a safe {what}: use 1-64 letters, digits, '.', '_' or '-',"
            " starting with a letter or digit"
        )
    return value


class ArrayPlace(BaseModel):
    """Where a task sits in its array (set by ugro as it submits the array)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = Field(pattern=JOB_ID.pattern)
    index: int = Field(ge=0)
    count: int = Field(ge=1)


class JobSpec(BaseModel):
    """One training or evaluation run.

    ``command`` is an argv list run without a shell unless ``shell`` is true, in
    which case it must be one string given to ``/bin/sh -c``.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    command: list[str] = Field(min_length=1)
    kind: Literal["train", "eval"] = "train"
    gpus: int = Field(default=1, ge=1, le=MAX_GPUS)  # on each of its nodes
    # A gang job: ``gpus`` on each of ``nodes`` distinct nodes, all at once or not at all.
    nodes: int = Field(default=1, ge=1, le=MAX_NODES)
    # "node": one process a node (torchrun's launch); "gpu": one a GPU, each with
    # its RANK, LOCAL_RANK and one GPU (``ugro.execution.per_gpu``).
    launch: Literal["node", "gpu"] = "node"
    node: str | None = None
    priority: int = Field(default=0, ge=-1000, le=1000)
    max_retries: int = Field(default=0, ge=0, le=100)
    retry_on: list[
        Literal["oom", "disk_full", "error", "killed", "timeout", "lost", "stuck", "idle"]
    ] = Field(default_factory=list)
    timeout: float | None = None
    epochs: int | None = Field(default=None, ge=1)
    # The files a trainer's epoch_<n>/ holds once that epoch is complete.
    epoch_files: list[str] | None = Field(default=None, min_length=1)
    env: dict[str, str] = Field(default_factory=dict)
    working_dir: str | None = None
    # Labels to find it by (``ugro list --tag``), each once.
    tags: list[str] = Field(default_factory=list, max_length=32)
    shell: bool = False
    # Jobs (or arrays, as a whole) this one waits on (``ugro.jobs.dependencies``):
    # their ids, or in one batch of ``submit_many`` another spec's name.
    after: list[str] = Field(default_factory=list)
    after_any: list[str] = Field(default_factory=list)
    after_failed: list[str] = Field(default_factory=list)
    # A sweep point's parameters: in config.json, and in the job's environment as
    # UGRO_PARAM_<NAME>.
    params: dict[str, str | int | float | bool] = Field(default_factory=dict)
    # The group or project the job counts for (``ugro list --group``).
    group: str | None = None
    # Whom the job's end is told (``UGRO_NOTIFY_URLS``): "failed" (a failure
    # only), "ended" (any end) or "never"; None: as ``UGRO_NOTIFY_ON`` says. An
    # array's or sweep's tasks are told once, when the last of them ends.
    notify: Literal["never", "failed", "ended"] | None = None
    # What a GPU of the job held idle for ``UGRO_IDLE_GPU_AFTER`` brings: a
    # warning ("warn"), or the job stopped with reason ``idle`` ("stop").
    on_idle: Literal["warn", "stop"] = "warn"
    # Whether a short job kept waiting may stop it (``[sharing.preemption]``): it
    # saves a checkpoint on SIGTERM and resumes from ``UGRO_RESUME_FROM``.
    preemptible: bool = False
    # A task of an array or sweep: set by ugro (``Client.submit_array``, ``sweep``).
    array: ArrayPlace | None = None

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        return _check_safe(value, "name")

    @field_validator("node")
    @classmethod
    def _node(cls, value: str | None) -> str | None:
        return None if value is None else _check_safe(value, "node name")

    @field_validator("command")
    @classmethod
    def _command(cls, value: list[str]) -> list[str]:
        if not value[0].strip():
            raise ValueError("the program (first element) is empty")
        for n, arg in enumerate(value):
            _check_text(arg, f"argument {n}")
        return value

    @field_validator("timeout", mode="before")
    @classmethod
    def _timeout(cls, value: Any) -> float | None:
        return None if value is None else parse_duration(value)

    @field_validator("env")
    @classmethod
    def _env(cls, value: dict[str, str]) -> dict[str, str]:
        for key, item in value.items():
            if not _ENV_NAME.match(key):
                raise ValueError(f"{key!r} is not a valid environment variable name")
            if key.startswith("UGRO_"):
                raise ValueError(f"{key!r}: UGRO_* variables are set by ugro itself")
            _check_text(item, f"the value of {key!r}")
        return value

    @field_validator("working_dir")
    @classmethod
    def _working_dir(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith("/"):
            raise ValueError(f"{value!r} must be an absolute path")
        return None if value is None else _check_text(value, "the path")

    @field_validator("epoch_files")
    @classmethod
    def _epoch_files(cls, value: list[str] | None) -> list[str] | None:
        for name in value or []:
            if not name or "/" in name or name.startswith("."):
                raise ValueError(f"{name!r} must be a plain file name")
        return value

    @field_validator("group")
    @classmethod
    def _group(cls, value: str | None) -> str | None:
        return None if value is None else _check_safe(value, "group")

    @field_validator("tags")
    @classmethod
    def _tags(cls, value: list[str]) -> list[str]:
        return list(dict.fromkeys(_check_safe(tag, "tag") for tag in value))

    @field_validator("after", "after_any", "after_failed")
    @classmethod
    def _after(cls, value: list[str]) -> list[str]:
        for job in value:
            if not JOB_ID.match(job):
                raise ValueError(f"{job[:80]!r} is not a job id")
        return list(dict.fromkeys(value))

    @field_validator("params")
    @classmethod
    def _params(cls, value: dict[str, Any]) -> dict[str, Any]:
        for key, item in value.items():
            if not _ENV_NAME.match(key):
                raise ValueError(f"{key!r} is not a parameter name (letters, digits, '_')")
            if isinstance(item, str):
                _check_text(item, f"the value of {key!r}")
        return value

    @property
    def dependencies(self) -> list[tuple[str, DependencyKind]]:
        """Every job this one waits on, with how."""
        kinds: list[tuple[DependencyKind, list[str]]] = [
            ("after", self.after),
            ("after_any", self.after_any),
            ("after_failed", self.after_failed),
        ]
        return [(job, kind) for kind, jobs in kinds for job in jobs]

    @model_validator(mode="after")
    def _gang_not_pinned(self) -> JobSpec:
        if self.nodes > 1 and self.node is not None:
            raise ValueError(
                f"node: a job across {self.nodes} nodes cannot be pinned to node {self.node!r}"
            )
        return self

    @property
    def distributed(self) -> bool:
        """Whether the job spans nodes (a gang job)."""
        return self.nodes > 1

    def argv(self) -> list[str]:
        """The argv to execute."""
        if self.shell:
            return ["/bin/sh", "-c", " ".join(self.command)]
        return list(self.command)


def parse_spec(data: dict[str, Any]) -> JobSpec:
    """Validate a spec from plain data, raising SpecError that names the field."""
    try:
        return JobSpec.model_validate(data)
    except ValidationError as exc:
        raise spec_error(exc) from None


def spec_error(exc: ValidationError) -> SpecError:
    """A SpecError whose message names each bad field and what was wrong with it."""
    lines = []
    for err in exc.errors():
        field = ".".join(str(part) for part in err["loc"]) or "spec"
        message = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            message = "unknown field"
        lines.append(f"{field}: {message}")
    return SpecError("invalid job spec: " + "; ".join(lines))


def new_job_id(name: str) -> str:
    """A fresh job id: the name and a random suffix, a safe path component."""
    return f"{name}-{secrets.token_hex(4)}"


def check_node_name(node: str) -> str:
    """Refuse a node name that is not a safe path component."""
    if not SAFE_NAME.match(node):
        raise SpecError(f"{node[:100]!r} is not a valid node name")
    return node


def check_job_id(job_id: str) -> str:
    """Refuse a job id that is not a safe path component."""
    if not JOB_ID.match(job_id):
        raise SpecError(f"{job_id[:100]!r} is not a valid job id")
    return job_id
