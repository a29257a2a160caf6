#!/bin/bash
# Celery beat with ugro's schedule. Run exactly one in the whole lab.
set -euo pipefail
exec ugro beat
