"""Running ugro's processes: the local stack (``stack``, ``supervisor``), the
embedded Redis server, Flower behind a login and the Prometheus exporter.
"""
