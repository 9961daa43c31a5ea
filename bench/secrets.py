"""Keep credentials out of everything a run writes.

Any environment variable whose name looks like a credential (TOKEN, KEY, SECRET, PASSWORD,
CREDENTIAL) has its value replaced by "***" in result.json, config.yaml, the run log and the config
sent to W&B, wherever the value appears inside a string.
"""

from __future__ import annotations

import logging
import os
import re

_NAME = re.compile(r"TOKEN|KEY|SECRET|PASSWORD|PASSWD|CREDENTIAL", re.IGNORECASE)
MASK = "***"


def secret_values(env=None) -> list[str]:
    env = os.environ if env is None else env
    # Short values ("1", "true") would mask ordinary text; real credentials are long.
    return sorted({v for k, v in env.items() if _NAME.search(k) and len(v) >= 8}, key=len, reverse=True)


def redact(obj, values: list[str] | None = None):
    values = secret_values() if values is None else values
    if not values:
        return obj
    if isinstance(obj, str):
        for v in values:
            obj = obj.replace(v, MASK)
        return obj
    if isinstance(obj, dict):
        return {redact(k, values): redact(v, values) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(redact(v, values) for v in obj)
    return obj


class RedactingFilter(logging.Filter):
    """Rewrites a record's message with credentials masked (attach to handlers)."""

    def filter(self, record: logging.LogRecord) -> bool:
        values = secret_values()
        if values:
            message = record.getMessage()
            record.msg, record.args = redact(message, values), None
        return True
