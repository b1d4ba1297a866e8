"""Validation of store keys and namespaces (they become file names and Redis keys)."""

from __future__ import annotations

import re

# Safe file names that cannot clash with temporary or bookkeeping files (which start
# with "."): the engine's keys look like "tensor-<32 hex digits>".
_KEY = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,199}")
_NAMESPACE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")


def check_key(key: str) -> str:
    """Return ``key`` if it is a safe file name: 1-200 letters, digits, ``_``, ``.``, ``-``,
    starting with a letter or digit.

    Raises:
        ValueError: anything else (keys become file names).
    """
    if not isinstance(key, str) or not _KEY.fullmatch(key):
        raise ValueError(
            "store key must be 1-200 letters, digits, '_', '.' or '-' starting with a "
            f"letter or digit (such as 'tensor-<hex digest>'), got {key!r}"
        )
    return key


def is_key(name: str) -> bool:
    """Whether a file name is a store key (and not a temporary or bookkeeping file)."""
    return _KEY.fullmatch(name) is not None


def check_namespace(namespace: str) -> str:
    """Return ``namespace`` if it is a safe name (letters, digits, ``.``, ``_``, ``-``).

    Raises:
        ValueError: anything else.
    """
    if not isinstance(namespace, str) or not _NAMESPACE.fullmatch(namespace):
        raise ValueError(
            "store namespace must be 1-128 characters of letters, digits, '.', '_' or '-' "
            f"(not starting with '.', '_' or '-'), got {namespace!r}"
        )
    return namespace
