"""Secrets masked wherever a configuration, a URL or an error message is shown or saved.

One place decides what a secret is: the password of a URL (``redis://:pw@host``), a
``password=``/``token=``/``secret=`` query parameter, and the value of any key whose
name contains ``password``, ``passwd``, ``token``, ``secret`` or ``credential``.
``show-config``, ``summary.json``, store errors and configuration errors all pass
through here.

Example:
    >>> masked_url("redis://user:s3cret@cache:6379/0")
    'redis://user:***@cache:6379/0'
    >>> redact({"redis_url": "redis://:s3cret@h/0", "api_token": "abc", "port": 1})
    {'redis_url': 'redis://:***@h/0', 'api_token': '***', 'port': 1}
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import urlsplit, urlunsplit

MASK = "***"

_SECRET_KEY = re.compile(r"password|passwd|token|secret|credential", re.IGNORECASE)
# scheme://[user]:password@ inside any text; the password runs to the last "@" before
# a "/" or white space (an unencoded "@" in a password is common).
_URL_PASSWORD = re.compile(r"([a-z][a-z0-9+.-]*://[^:@/\s'\"]*:)[^/\s]*@", re.IGNORECASE)
_SECRET_PARAM = re.compile(
    r"((?:password|passwd|token|secret|credential)[a-z_]*=)[^&\s'\"]+", re.IGNORECASE
)


def is_secret_key(name: str) -> bool:
    """Whether a configuration key holds a secret (its value is never shown)."""
    return bool(_SECRET_KEY.search(name))


def mask_text(text: str) -> str:
    """``text`` with URL passwords and ``password=...``-style parameters masked."""
    text = _URL_PASSWORD.sub(rf"\g<1>{MASK}@", text)
    return _SECRET_PARAM.sub(rf"\g<1>{MASK}", text)


def masked_url(url: str) -> str:
    """``url`` with its password (and any secret query parameter) replaced by ``***``."""
    try:
        parts = urlsplit(url)
        password = parts.password
    except ValueError:  # a malformed URL: mask whatever looks like a secret in it
        return mask_text(url)
    if password is not None:
        host = parts.hostname or ""
        if parts.port is not None:
            host = f"{host}:{parts.port}"
        parts = parts._replace(netloc=f"{parts.username or ''}:{MASK}@{host}")
    return mask_text(urlunsplit(parts))


def redact(value: Any) -> Any:
    """A copy of ``value`` (nested dicts, lists, strings) with every secret masked."""
    if isinstance(value, dict):
        return {
            k: MASK if v is not None and is_secret_key(str(k)) else redact(v)
            for k, v in value.items()
        }
    if isinstance(value, (list, tuple)):
        return type(value)(redact(v) for v in value)
    if isinstance(value, str):
        return mask_text(value)
    return value
