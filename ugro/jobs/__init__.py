"""A job as data: its spec, its lifecycle (statuses, exit reasons and the
transitions between them), its retry policy, secret redaction and its results
tree (``JobPaths``, the one owner of every file name under ``jobs/<id>/``).

Pure: imports only ``ugro.errors`` and ``ugro.settings``.
"""
