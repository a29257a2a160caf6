"""The `ugro` command: a thin shell over ``ugro.Client`` and ``ugro.ops.stack``.

Tables and progress go to people (progress on stderr), ``--json`` to scripts. The
command modules load click alone when imported, and each command what it uses
(``ugro.cli.base`` says why).
"""

# (each command module adds its commands to main as it is imported)
from ugro.cli import (  # noqa: F401
    cleanup,
    cluster,
    compare,
    control,
    exporter,
    jobs,
    metrics,
    ops,
    progress,
    share,
    summary,
    top,
    web,
    workflows,
)
from ugro.cli.base import main

__all__ = ["main"]
