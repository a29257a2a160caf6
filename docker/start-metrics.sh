#!/bin/bash
# The Prometheus exporter: jobs, queues, GPUs and nodes at :UGRO_METRICS_PORT/metrics.
set -euo pipefail
exec ugro exporter
