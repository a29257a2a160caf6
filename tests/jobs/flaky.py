"""A job that fails its first attempt after writing a checkpoint, and succeeds on
the next, recording what it was told to resume from.

Usage: flaky.py OUT_FILE [FIRST_ATTEMPT_SECONDS]
"""

import json
import os
import sys
import time

out = sys.argv[1]
first_seconds = float(sys.argv[2]) if len(sys.argv) > 2 else 0.0
attempt = int(os.environ["UGRO_ATTEMPT"])
checkpoint = os.path.join(os.environ["UGRO_CHECKPOINT_DIR"], f"ckpt_{attempt}.pt")
with open(checkpoint, "w") as handle:
    handle.write(f"weights of attempt {attempt}\n")
record = {"attempt": attempt, "pid": os.getpid(), "resume_from": os.environ.get("UGRO_RESUME_FROM")}
with open(out, "a") as handle:
    handle.write(json.dumps(record) + "\n")
if attempt == 1:
    print("attempt 1 failing", flush=True)
    time.sleep(first_seconds)
    sys.exit(1)
print(f"attempt {attempt} resuming from {record['resume_from']}", flush=True)
