"""A webhook receiver for tests/callbacks.rs: verifies each request with the official Standard
Webhooks library (standardwebhooks, from PyPI), prints one JSON line per request on stdout and
answers as the mode file says: `200` (the default), `500`, `302 URL`, `400 REASON…` (any status
with words after it answers `{"error": "REASON…"}`), or `sleep SECONDS`. tests/bridge.rs uses it
as the PhoneRelay bridge double.

    receiver.py SECRET_FILE MODE_FILE    (prints `PORT n` first)
"""
import json
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from standardwebhooks.webhooks import Webhook, WebhookVerificationError

SECRET_FILE, MODE_FILE = sys.argv[1], sys.argv[2]
# Requests are handled on threads; print() writes the text and the newline separately, so two
# at once could share a line. One locked write per line instead.
OUT = threading.Lock()


def emit(obj):
    with OUT:
        sys.stdout.write(json.dumps(obj) + "\n")
        sys.stdout.flush()


def read(path, default=""):
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:
        return default


class Handler(BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("content-length") or 0))
        headers = {k.lower(): v for k, v in self.headers.items()}
        verified, error = False, None
        try:
            Webhook(read(SECRET_FILE)).verify(body, headers)
            verified = True
        except (WebhookVerificationError, ValueError) as e:
            error = str(e) or type(e).__name__
        mode = (read(MODE_FILE, "200") or "200").split()
        status = 200
        if mode[0] == "sleep":
            time.sleep(float(mode[1]))
        elif mode[0].isdigit():
            status = int(mode[0])
        try:
            parsed = json.loads(body)
        except ValueError:
            parsed = None
        emit({"id": headers.get("webhook-id"), "verified": verified, "error": error,
              "answered": status, "body": parsed, "path": self.path})
        self.send_response(status)
        answer = b"ok"
        if status in (301, 302, 307, 308) and len(mode) > 1:
            self.send_header("location", mode[1])
        elif len(mode) > 1:
            answer = json.dumps({"error": " ".join(mode[1:])}).encode()
            self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)

    def log_message(self, *args):
        pass


server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
print(f"PORT {server.server_address[1]}", flush=True)
server.serve_forever()
