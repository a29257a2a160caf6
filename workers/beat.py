"""Celery beat with ugro's schedule: ``python -m workers.beat``."""

from __future__ import annotations

from ugro.celery_app import make_app
from ugro.settings import Settings


def main() -> None:
    settings = Settings()
    settings.run_dir.mkdir(parents=True, exist_ok=True)
    app = make_app(settings)
    app.start(
        [
            "beat",
            "--schedule",
            str(settings.run_dir / "celerybeat-schedule"),
            "--loglevel",
            "INFO",
        ]
    )


if __name__ == "__main__":
    main()
