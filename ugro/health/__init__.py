"""Node health: the node agent's readings (``readings``), SSH probes
(``netprobe``, ``cluster``), scoring (``score``), the circuit breaker
(``breaker``), the sweep that ties them together (``sweep``) and its stored
samples (``samples``).

Never imports ``ugro.scheduling``: a sweep reports the nodes that recovered and
its caller runs a dispatch pass.
"""
