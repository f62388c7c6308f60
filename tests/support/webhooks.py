"""A real webhook receiver for tests: a threaded HTTP server on 127.0.0.1 that checks every request's signature
with ``events.signing.verify`` (the helper receivers copy) and answers from a script of status codes."""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from events import signing
from events.models import WebhookDelivery
from events.services import attempt_delivery


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes
    signature_valid: bool

    @property
    def event(self) -> dict:
        return json.loads(self.body)


@dataclass
class Receiver:
    """Answers the next status of ``script`` to each request (the last one once the script runs out)."""

    secret: str = ""
    script: list[int] = field(default_factory=lambda: [200])
    received: list[Received] = field(default_factory=list)
    server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}/hooks/mlp?source=test"

    def events(self, event_type: str | None = None) -> list[dict]:
        return [r.event for r in self.received if event_type is None or r.event["type"] == event_type]


def start_receiver(**options) -> Receiver:
    receiver = Receiver(**options)

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            header = self.headers.get(signing.SIGNATURE_HEADER, "")
            valid = signing.verify(receiver.secret, header, body)
            receiver.received.append(Received(self.path, dict(self.headers.items()), body, valid))
            status = receiver.script.pop(0) if len(receiver.script) > 1 else receiver.script[0]
            self.send_response(status if valid else 400)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, *args):
            pass

    receiver.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=receiver.server.serve_forever, daemon=True).start()
    return receiver


def stop_receiver(receiver: Receiver) -> None:
    receiver.server.shutdown()
    receiver.server.server_close()


def deliver_due(tenant) -> list[str]:
    """Run what the delivery task runs for every pending, due delivery of ``tenant``, once; their outcomes."""
    due = (
        WebhookDelivery.objects.for_tenant(tenant).filter(status=WebhookDelivery.Status.PENDING).order_by("created_at")
    )
    return [attempt_delivery(delivery_id=delivery.pk).status for delivery in due]
