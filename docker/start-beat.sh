#!/bin/bash
# Celery beat with ugro's schedule. One schedules at a time (a lock in Redis);
# a second one waits as a standby and takes over when the first dies.
set -euo pipefail
exec ugro beat
