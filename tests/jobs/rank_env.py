"""A test job for the per-GPU launcher: records what its rank was told, then ends.

Usage: rank_env.py OUT_DIR [FAILING_RANK [SECONDS]]. Writes OUT_DIR/rank_<RANK>.json
with the rank's variables and process group, and prints ``rank <RANK> done``. The
rank equal to FAILING_RANK prints a ValueError line and exits 3 at once; the others
sleep SECONDS first (a long-running rank, to be stopped).
"""

import json
import os
import sys
import time
from pathlib import Path

_NAMES = (
    "RANK",
    "LOCAL_RANK",
    "LOCAL_WORLD_SIZE",
    "WORLD_SIZE",
    "CUDA_VISIBLE_DEVICES",
    "UGRO_NODE_RANK",
    "UGRO_NUM_NODES",
    "UGRO_GPUS_PER_NODE",
    "UGRO_NODE_ADDRESSES",
    "MASTER_ADDR",
    "MASTER_PORT",
    "UGRO_GPUS",
    "UGRO_JOB_ID",
)

out_dir = Path(sys.argv[1])
failing_rank = sys.argv[2] if len(sys.argv) > 2 else None
seconds = float(sys.argv[3]) if len(sys.argv) > 3 else 0.0
rank = os.environ.get("RANK", "unset")

record: dict[str, object] = {name: os.environ.get(name) for name in _NAMES}
record["pid"] = os.getpid()
record["pgid"] = os.getpgid(0)
out_dir.mkdir(parents=True, exist_ok=True)
# Written whole, then renamed: a reader never sees half a file.
partial = out_dir / f".rank_{rank}.json.partial"
partial.write_text(json.dumps(record))
partial.replace(out_dir / f"rank_{rank}.json")

if rank == failing_rank:
    print(f"ValueError: rank {rank} failed on purpose", flush=True)
    sys.exit(3)
print(f"rank {rank} started", flush=True)
time.sleep(seconds)
print(f"rank {rank} done", flush=True)
