"""``python -m workers.gpu_lost --index N``: what the node supervisor runs when the
worker of GPU N died unexpectedly (``ugro.execution.worker_lost``)."""

from __future__ import annotations

import argparse
import logging

from ugro.execution.worker_lost import declare_worker_lost
from ugro.runtime import Runtime
from ugro.settings import Settings


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--index", type=int, required=True, help="the GPU index (nvidia-smi)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s gpu-lost: %(message)s")
    settings = Settings()
    rt = Runtime.open(settings)
    try:
        job_id = declare_worker_lost(rt, settings.node_name, args.index)
    finally:
        rt.close()
    if job_id is None:
        logging.info("GPU %s's worker died running no job", args.index)
    else:
        logging.info("GPU %s's worker died: %s declared lost", args.index, job_id)


if __name__ == "__main__":
    main()
