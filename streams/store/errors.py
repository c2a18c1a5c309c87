"""Store errors, and the redaction that keeps secrets out of them."""

from __future__ import annotations

import re
from urllib.parse import unquote, urlsplit


class StoreError(Exception):
    """A store operation failed for a reason retrying will not fix."""


class StoreUnavailable(StoreError):
    """The store could not be reached within the retry budget."""


_URL_PASSWORD = re.compile(r"(postgres(?:ql)?://[^:/@\s]*:)([^@\s]*)(@)")


def redact(text: str, *secrets: str | None) -> str:
    """``text`` with every given secret (and any URL password) replaced by ``***``."""
    values: set[str] = set()
    for s in secrets:
        if not s:
            continue
        values.add(s)
        if "://" in s:  # a DSN: its password too, raw and percent-decoded
            try:
                pw = urlsplit(s).password
            except ValueError:
                pw = None
            if pw:
                values.update({pw, unquote(pw)})
    for v in sorted(values, key=len, reverse=True):
        if len(v) >= 3:
            text = text.replace(v, "***")
    return _URL_PASSWORD.sub(r"\1***\3", text)
