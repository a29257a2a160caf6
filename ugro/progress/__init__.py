"""How far a run got: ``ProgressInfo`` and the tracker interface (``base``), the
trainer and evaluator trackers and their detection (``trackers``), the scan of
directories (``scan``) and the progress of ugro's own jobs, kept by beat's scan
and at each job's end (``jobs``).

Imports the runtime, the registry and ``ugro.jobs``; never scheduling or
execution (a job's end asks for its final progress, not the other way round).
"""
