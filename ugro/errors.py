"""The one exception tree of ugro.

::

    UgroError
    ├── SpecError            a job spec or a user argument is invalid (CLI exit 2)
    ├── JobNotFound          no job with that id (CLI exit 2)
    ├── StateError           the job's status does not allow that (CLI exit 2)
    ├── NotRunningError      the stack (Redis, workers) is not up (CLI exit 3)
    │   └── RegistryUnreachable  the registry's database server does not answer
    ├── InventoryError       the GPU backend could not be read (CLI exit 3)
    ├── DataDirError         the data dir cannot be written: full, read-only (CLI exit 3)
    ├── TransitionError      a status write the lifecycle table does not allow
    └── StackError           starting or stopping processes failed (CLI exit 3)

The library raises these and never prints; the CLI maps them to exit codes.
"""

from __future__ import annotations


class UgroError(Exception):
    """Root of every error ugro raises on purpose."""

    exit_code = 1


class SpecError(UgroError, ValueError):
    """A job spec or an argument is invalid; the message names the field."""

    exit_code = 2


class JobNotFound(UgroError, LookupError):
    """No job has that id."""

    exit_code = 2


class StateError(UgroError):
    """The job's status does not allow what was asked (cancel a finished job...)."""

    exit_code = 2


class NotRunningError(UgroError):
    """The Redis server or the workers that a command needs are not running."""

    exit_code = 3


class RegistryUnreachable(NotRunningError):
    """The registry's database server does not answer (stopped, restarting, cut
    off): a command fails at once; a worker with a job in hand waits it out
    (``ugro.registry.outage``)."""


class InventoryError(UgroError):
    """The GPU inventory backend or the cluster file is misconfigured or failed."""

    exit_code = 3


class DataDirError(UgroError):
    """The data dir cannot be written (its filesystem full, read-only or gone): a
    problem of the machine, not of the request, so nothing is accepted."""

    exit_code = 3


class TransitionError(UgroError):
    """A status write that the lifecycle table does not allow (``ugro.jobs.lifecycle``):
    raised before anything is written. The code asked for a move it must not make;
    a move that lost a race to another writer is no error (the write returns False)."""


class StackError(UgroError):
    """Starting or stopping the local stack failed."""

    exit_code = 3
