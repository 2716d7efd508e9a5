"""Schemathesis hooks for `.ci/run`'s contract check.

Long-polls are capped at a second: the spec allows a wait of up to 60 s (`?wait=`,
`Prefer: wait=`, a lease's `wait_ms`), and a generated request that waits that long only
spends the step's budget on waiting. The cap is applied just before each call, in every
phase; a value that is not a number is left as generated (the server must refuse it).
How long-polls wait and end is covered by the Rust tests; here every answer is still
checked against the spec.
"""

import schemathesis

MAX_WAIT_SECS = 1


def _capped(value, cap):
    """`cap` if `value` is a number above it, else `value`."""
    try:
        return cap if float(value) > cap else value
    except (TypeError, ValueError):
        return value


@schemathesis.hook
def before_call(context, case, **kwargs):
    if isinstance(case.query, dict) and "wait" in case.query:
        case.query["wait"] = _capped(case.query["wait"], MAX_WAIT_SECS)
    if isinstance(case.headers, dict):
        for name in list(case.headers):
            if name.lower() == "prefer":
                case.headers[name] = f"wait={MAX_WAIT_SECS}"
    if isinstance(case.body, dict) and "wait_ms" in case.body:
        if not isinstance(case.body["wait_ms"], bool):
            case.body["wait_ms"] = _capped(case.body["wait_ms"], MAX_WAIT_SECS * 1000)
