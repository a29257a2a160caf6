#!/bin/bash
# This node's GPU workers and node agent, in the foreground. GPUS=0,1 serves only
# those GPUs (indices as the container sees them); unset, all of them.
set -euo pipefail
if [[ -n "${GPUS:-}" ]]; then
  exec ugro worker --gpus "$GPUS"
fi
exec ugro worker
