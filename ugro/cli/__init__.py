"""The `ugro` command: a thin shell over ``ugro.Client`` and ``ugro.ops.stack``.

Tables and progress go to people (progress on stderr), ``--json`` to scripts. The
command modules load click alone when imported, and each command what it uses
(``ugro.cli.base`` says why).
"""

from ugro.cli import cluster, jobs, metrics, ops, progress, summary, workflows  # noqa: F401  (they add their commands to main)
from ugro.cli.base import main

__all__ = ["main"]
