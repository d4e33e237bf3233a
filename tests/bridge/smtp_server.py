"""A real SMTP server for tests/bridge.rs (aiosmtpd, from PyPI): prints `PORT n`, then one JSON
line per mail it accepts (envelope, parsed headers and the text body). Recipients whose local
part starts with `refuse` get `550 5.1.1` at RCPT, as a real server answers an unknown mailbox.

    smtp_server.py
"""
import asyncio
import email
import email.policy
import json
import socket

from aiosmtpd.controller import Controller


class Handler:
    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if address.lower().startswith("refuse"):
            return "550 5.1.1 no such mailbox here"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        msg = email.message_from_bytes(envelope.content, policy=email.policy.default)
        body = msg.get_body(preferencelist=("plain",))
        print(json.dumps({
            "mail_from": envelope.mail_from,
            "rcpt_tos": envelope.rcpt_tos,
            "from": str(msg["from"]),
            "to": str(msg["to"]),
            "subject": str(msg["subject"]),
            "message_id": str(msg["message-id"]),
            "body": body.get_content() if body is not None else None,
        }), flush=True)
        return "250 OK queued"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


port = free_port()
controller = Controller(Handler(), hostname="127.0.0.1", port=port)
controller.start()
print(f"PORT {port}", flush=True)
try:
    asyncio.new_event_loop().run_forever()
finally:
    controller.stop()
