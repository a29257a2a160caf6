"""This node's supervisor: ``python -m workers.supervisor [--gpus 0,1] [--beat]``.

Runs one worker per GPU, the node agent and (with ``--beat``) beat as its
children; ``--log-dir`` sends each one's output to ``<dir>/<name>.log``.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from ugro.ops.stack import beat_service, node_services
from ugro.ops.supervisor import Supervisor


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--gpus", required=True, help="GPU indices, e.g. 0,1,2,3")
    parser.add_argument("--beat", action="store_true", help="run beat too")
    parser.add_argument("--log-dir", type=Path, default=None)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s supervisor: %(message)s")
    gpus = [int(part) for part in args.gpus.split(",") if part]
    services = node_services(gpus) + ([beat_service()] if args.beat else [])
    sys.exit(Supervisor(services, dict(os.environ), args.log_dir).run())


if __name__ == "__main__":
    main()
