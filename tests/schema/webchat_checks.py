"""Schemathesis checks for gts-webchat: loaded with SCHEMATHESIS_HOOKS=webchat_checks."""
import json

import schemathesis


@schemathesis.check
def error_shape(ctx, response, case):
    """Every error answer is {"ok": false, "error": {"code": "...", "message": "..."}}."""
    if response.status_code < 400:
        return
    try:
        body = json.loads(response.content)
    except ValueError:
        raise AssertionError(
            f"HTTP {response.status_code} answer is not JSON: {response.content[:200]!r}"
        )
    err = body.get("error") if isinstance(body, dict) else None
    if (
        not isinstance(body, dict)
        or body.get("ok") is not False
        or not isinstance(err, dict)
        or not isinstance(err.get("code"), str)
        or not isinstance(err.get("message"), str)
        or not err["message"]
    ):
        raise AssertionError(f"HTTP {response.status_code} answer lacks the error shape: {body!r}")


# Documented answers in the 5xx range that say how this relay is set up, not that it failed:
# the schema relay runs without a speech-to-text engine, so /transcribe answers 503
# engine_unavailable by design (tests/voice.rs covers it with engines installed).
SETUP_ANSWERS = {(503, "engine_unavailable")}


@schemathesis.check
def no_server_error(ctx, response, case):
    """No 5xx, except a documented, shaped answer about the relay's setup (SETUP_ANSWERS)."""
    if response.status_code < 500:
        return
    try:
        code = json.loads(response.content)["error"]["code"]
    except (ValueError, KeyError, TypeError):
        code = None
    if (response.status_code, code) not in SETUP_ANSWERS:
        raise AssertionError(
            f"server error {response.status_code} on {case.method} {case.path}: "
            f"{response.content[:300]!r}"
        )


@schemathesis.hook
def map_body(ctx, body):
    """Long-polls hold the request open for up to 90 s by design (tested elsewhere); keep the
    fuzzer's waits short so its read timeout measures errors, not patience."""
    if (
        ctx.operation is not None
        and ctx.operation.path == "/api/v1/webchat/poll"
        and isinstance(body, dict)
        and isinstance(body.get("wait"), (int, float))
        and not isinstance(body.get("wait"), bool)
    ):
        body["wait"] = min(abs(body["wait"]), 0.2)
    return body
