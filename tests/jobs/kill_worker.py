"""A job that kills its own GPU worker with SIGKILL, then keeps running: the
worker dies on every attempt. Records its pid to OUT_FILE."""

import os
import signal
import sys
import time

with open(sys.argv[1], "a") as handle:
    handle.write(f"{os.getpid()}\n")
os.kill(os.getppid(), signal.SIGKILL)
time.sleep(600)
