#!/bin/bash
# The web dashboard: jobs, GPUs, nodes, the queue and the daily summaries.
set -euo pipefail
exec ugro web
