"""Live state in Redis, rebuildable from the registry: the pending queue, GPU
leases, worker presence, the dispatch lock and its snapshots, status events,
the messages that start jobs, every key (``keys``) and the atomic scripts
(``lua/``).

Imports ``ugro.jobs``, ``ugro.gpus`` and ``ugro.settings``; never a part above.
"""
