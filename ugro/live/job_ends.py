"""When a running job is expected to end, from the progress the scan recorded."""

from __future__ import annotations

import json
from datetime import datetime


def progress_eta_end(progress: str | None) -> float | None:
    """The moment (unix s) a job's recorded progress expects it to end: its last
    update plus its ETA; None when it has no ETA, no last update, or is unreadable.
    (The ETA is reckoned from the last epoch's end, so that is where it starts.)"""
    if not progress:
        return None
    try:
        info = json.loads(progress)
        eta, updated = info.get("eta_seconds"), info.get("last_update")
        if eta is None or not updated:
            return None
        return datetime.fromisoformat(updated).timestamp() + float(eta)
    except (ValueError, TypeError, AttributeError):
        return None
