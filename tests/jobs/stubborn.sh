#!/bin/sh
# A job that ignores SIGTERM and leaves a grandchild in a session of its own
# (double fork + setsid) that ignores SIGTERM too. Writes both pids to $1.
trap '' TERM
setsid sh -c 'trap "" TERM; echo $$ >> "$0"; exec sleep 1000' "$1" &
echo $$ >> "$1"
while true; do sleep 1; done
