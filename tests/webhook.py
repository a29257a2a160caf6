"""A webhook on loopback for the tests of what ugro tells (apprise's ``json://``)."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, NamedTuple


class Post(NamedTuple):
    status: int  # what the webhook answered
    body: dict[str, Any]
    seen: Any  # what ``look`` said as it came


class Webhook:
    """Keeps each POST's JSON body with the status it answered: 200, save that the
    first POST whose title starts with a prefix given to ``refuse`` gets that
    refusal's status (the refusal is then spent). ``look``, called as each POST
    comes, records what else was so at that moment."""

    def __init__(self, look: Callable[[], Any] = lambda: None) -> None:
        self.refusals: list[tuple[str, int]] = []
        self.posts: list[Post] = []
        self.changed = threading.Condition()
        hook = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                title = str(body.get("title", ""))
                with hook.changed:
                    status = 200
                    for refusal in hook.refusals:
                        if title.startswith(refusal[0]):
                            hook.refusals.remove(refusal)
                            status = refusal[1]
                            break
                    hook.posts.append(Post(status, body, look()))
                    hook.changed.notify_all()
                self.send_response(status)
                self.end_headers()

            def log_message(self, *_: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"json://127.0.0.1:{self.server.server_port}/hook"

    def refuse(self, title: str, status: int = 500) -> None:
        """Answer the next POST whose title starts with ``title`` with ``status``."""
        with self.changed:
            self.refusals.append((title, status))

    def titled(self, title: str) -> list[Post]:
        """The POSTs whose title starts with ``title``, accepted or not."""
        with self.changed:
            return [post for post in self.posts if post.body["title"].startswith(title)]

    def delivered(self, title: str) -> list[dict[str, Any]]:
        """The bodies accepted whose title starts with ``title``."""
        return [post.body for post in self.titled(title) if post.status == 200]

    def wait(self, condition: Callable[[], bool], timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        with self.changed:
            while not condition():
                left = deadline - time.monotonic()
                assert left > 0, f"timed out waiting for {what}; got {self.posts}"
                self.changed.wait(left)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
