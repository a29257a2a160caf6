#!/bin/sh
# Redis for ugro: keeps its data (append-only file), never evicts a key, and asks
# for a password. The password goes in a private config file, never on a command
# line (`ps` shows those to every user of the host). Arguments are more options.
set -euo pipefail
: "${REDIS_PASSWORD:?set REDIS_PASSWORD (docker/.env)}"
conf="$(mktemp)"
printf 'requirepass "%s"\n' "$REDIS_PASSWORD" > "$conf"
exec redis-server "$conf" \
  --appendonly yes \
  --appendfsync everysec \
  --maxmemory-policy noeviction \
  --dir "${REDIS_DATA_DIR:-/data}" \
  "$@"
