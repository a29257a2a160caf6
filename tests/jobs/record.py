"""A test job: records where and when it ran, then sleeps.

Usage: record.py OUT_FILE SECONDS [EXIT_CODE]. Appends one JSON line to OUT_FILE.
"""

import json
import os
import sys
import time

out, seconds = sys.argv[1], float(sys.argv[2])
code = int(sys.argv[3]) if len(sys.argv) > 3 else 0
start = time.time()
time.sleep(seconds)
record = {
    "job_id": os.environ["UGRO_JOB_ID"],
    "cuda_visible_devices": os.environ["CUDA_VISIBLE_DEVICES"],
    "device_order": os.environ.get("CUDA_DEVICE_ORDER"),
    "job_dir": os.environ["UGRO_JOB_DIR"],
    "checkpoint_dir": os.environ["UGRO_CHECKPOINT_DIR"],
    "tensorboard_dir": os.environ["UGRO_TENSORBOARD_DIR"],
    "secret": os.environ.get("MY_API_TOKEN"),
    "pid": os.getpid(),
    "start": start,
    "end": time.time(),
}
print(f"recording {record['job_id']} on GPU {record['cuda_visible_devices']}", flush=True)
with open(out, "a") as handle:
    handle.write(json.dumps(record) + "\n")
sys.exit(code)
