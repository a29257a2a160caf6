"""Which job runs on which GPUs: the pure placement decision (``placement``),
the single-flight dispatch pass that applies it (``dispatch``), submission
(``submit``, ``submit_lease``) and why a queued job waits (``explain``).

Imports the runtime, live state and registry below it; never ``ugro.health``
(the breaker reaches dispatch through its keys in Redis).
"""
