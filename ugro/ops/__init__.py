"""Running ugro's processes: the local stack (``stack``, ``supervisor``), the
embedded Redis server, Flower behind a login and the Prometheus exporter.

May import every part below it (transport, live, registry, execution for process
control, health); nothing but the CLI imports it.
"""
