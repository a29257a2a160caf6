"""Running a placed job: the attempt on its GPU worker (``attempt``), the child
process group (``runner``, ``processes``), what follows an attempt's end
(``outcome``: finished, retried, failed), lost jobs (``reconcile``) and orphaned
processes (``orphans``).

Imports scheduling (the pass at a job's end), progress (its final progress) and
what lies below them.
"""
