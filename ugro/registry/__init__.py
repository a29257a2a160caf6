"""The registry, the source of truth: jobs, attempts, events, health samples
and daily summaries in SQL (SQLite by default, PostgreSQL in a lab).

``models`` holds the tables, ``store`` the reads and writes (``Registry``),
``statements`` the hot statements built once, ``connections`` the kept
connections, ``columns`` the additive migrations. Imports ``ugro.jobs`` only.
"""
