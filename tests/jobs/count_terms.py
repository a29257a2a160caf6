"""A job that counts the SIGTERMs it is sent: it and a child in its process group
each append their pid to $1 on every SIGTERM, and go on (until SIGKILL), as a job
that saves a checkpoint on SIGTERM would. Each writes its pid to $1.ready once
its handler is set."""

import os
import signal
import subprocess
import sys
import time

out = sys.argv[1]


def note(*_: object) -> None:
    with open(out, "a") as handle:
        handle.write(f"{os.getpid()}\n")


signal.signal(signal.SIGTERM, note)
if len(sys.argv) == 2:
    subprocess.Popen([sys.executable, __file__, out, "child"])
with open(out + ".ready", "a") as handle:
    handle.write(f"{os.getpid()}\n")
while True:
    time.sleep(0.05)
