"""Stable descriptions of transforms and datasets, for cache keys.

A cached value is keyed by the fingerprint of everything that made it; a transform
whose parameters change must get a new fingerprint, in this run and the next. So a
description holds parameters and code, never an address or an ``id``: numbers and
strings as they are, arrays by content hash, functions by module, name, byte code,
constants and closure values, other objects by class and public attributes.
"""

from __future__ import annotations

import enum
import functools
import hashlib
import re
import sys
import types
from typing import Any

import numpy as np

from adaptive_cache.pipeline import stable_hash

_MAX_DEPTH = 6  # deeper structure is described by its class only
_MAX_ITEMS = 256  # longer containers: length, the first items and a hash of the repr
_HASH_ITEMS = 10_000  # (the repr only up to this length: it is read in full)
_ADDRESS = re.compile(r" at 0x[0-9a-fA-F]+")


def fingerprint(*objs: Any) -> str:
    """Hex digest of the :func:`describe` of ``objs``."""
    return stable_hash(*(describe(o) for o in objs))


def describe(obj: Any, depth: int = 0) -> Any:
    """A nested structure of plain values that changes whenever ``obj``'s behaviour may."""
    if isinstance(obj, enum.Enum):
        return _enum(obj)
    if obj is None or isinstance(obj, (bool, int, float, str, bytes)):
        return obj
    if depth > _MAX_DEPTH:
        return _qualname(type(obj))
    if isinstance(obj, (list, tuple, set, frozenset)):
        items = sorted(obj, key=repr) if isinstance(obj, (set, frozenset)) else list(obj)
        out = [describe(v, depth + 1) for v in items[:_MAX_ITEMS]]
        if len(items) > _MAX_ITEMS:
            rest = stable_hash(repr(items)) if len(items) <= _HASH_ITEMS else None
            out.append(("more", len(items), rest))
        return (type(obj).__name__, out)
    if isinstance(obj, dict):
        pairs = sorted(obj.items(), key=lambda kv: repr(kv[0]))[:_MAX_ITEMS]
        return ("dict", [(describe(k, depth + 1), describe(v, depth + 1)) for k, v in pairs])
    if isinstance(obj, (np.ndarray, np.generic)):
        arr = np.asarray(obj)
        return ("ndarray", arr.dtype.str, arr.shape, _digest(arr))
    torch = sys.modules.get("torch")
    if torch is not None and isinstance(obj, torch.Tensor):
        t = obj.detach().cpu().contiguous()
        raw = t.reshape(-1).view(torch.uint8).numpy() if t.numel() else b""
        return ("tensor", str(t.dtype), tuple(t.shape), _digest(raw))
    if isinstance(obj, functools.partial):
        return ("partial", describe(obj.func, depth + 1), describe(obj.args, depth + 1),
                describe(obj.keywords, depth + 1))  # fmt: skip
    if isinstance(obj, types.FunctionType):
        return _function(obj, depth)
    if isinstance(obj, types.MethodType):
        return ("method", describe(obj.__self__, depth + 1), describe(obj.__func__, depth + 1))
    if isinstance(obj, (type, types.BuiltinFunctionType, types.ModuleType)):
        return _qualname(obj)
    state = getattr(obj, "__dict__", None)
    if isinstance(state, dict):
        public = {k: v for k, v in state.items() if not k.startswith("_")}
        return (_qualname(type(obj)), describe(public, depth + 1))
    return (_qualname(type(obj)), _ADDRESS.sub("", repr(obj)))


def _enum(obj: enum.Enum) -> str:
    return f"{_qualname(type(obj))}.{obj.name}"


def _qualname(obj: Any) -> str:
    return f"{getattr(obj, '__module__', '')}.{getattr(obj, '__qualname__', repr(obj))}"


def _digest(arr: Any) -> str:
    data = arr.tobytes() if isinstance(arr, np.ndarray) else bytes(arr)
    return hashlib.blake2b(data, digest_size=16).hexdigest()


def _function(fn: types.FunctionType, depth: int) -> Any:
    closure = [c.cell_contents for c in fn.__closure__ or () if _filled(c)]
    return (
        "function",
        _qualname(fn),
        _code(fn.__code__, depth),
        describe(fn.__defaults__, depth + 1),
        describe(fn.__kwdefaults__, depth + 1),
        describe(closure, depth + 1),
    )


def _code(code: types.CodeType, depth: int) -> Any:
    """Byte code, constants (nested code included) and the global names it uses.

    Globals are described by name only: a changed helper function it calls is not seen.
    """
    consts = [
        _code(c, depth + 1) if isinstance(c, types.CodeType) else describe(c, depth + 1)
        for c in code.co_consts
    ]
    return (_digest(np.frombuffer(code.co_code, np.uint8)), consts, list(code.co_names))


def _filled(cell: types.CellType) -> bool:
    try:
        cell.cell_contents  # noqa: B018
    except ValueError:  # an empty cell (a variable assigned after the closure was made)
        return False
    return True
