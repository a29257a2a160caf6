#!/bin/bash
# Flower, behind the login in UGRO_FLOWER_BASIC_AUTH (user:password).
set -euo pipefail
exec ugro flower
