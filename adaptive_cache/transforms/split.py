"""Splitting a user's transform into a cached deterministic prefix and a random suffix.

:func:`split_transform` takes what people pass as ``transform``: an albumentations
``Compose``, a torchvision ``Compose`` (``transforms.v2`` or classic), a list of
callables, or one callable. It cuts at the first transform that is not known to be
deterministic; a plain callable counts as random unless marked with
:func:`deterministic` (or given a ``deterministic = True`` attribute).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from adaptive_cache.transforms import torchvision as tv
from adaptive_cache.transforms.fingerprint import fingerprint
from adaptive_cache.transforms.seeding import GENERATORS

F = TypeVar("F", bound=Callable[..., Any])


class _Marked:
    """A deterministic callable that cannot carry the attribute itself (a builtin)."""

    deterministic = True

    def __init__(self, fn: Callable[..., Any]) -> None:
        self.fn = fn

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.fn(*args, **kwargs)

    def __repr__(self) -> str:
        return f"deterministic({self.fn!r})"


def deterministic(fn: F) -> F:
    """Mark ``fn`` as deterministic: its output depends only on its input.

    A marked callable may sit in the cached prefix of a transform. Mark only what
    really is deterministic: a random transform in the prefix would be frozen, one
    draw per sample, for as long as the entry is kept.

    Example:
        >>> @deterministic
        ... def to_float(x):
        ...     return x.float() / 255
    """
    try:
        fn.deterministic = True  # type: ignore[attr-defined]
    except (AttributeError, TypeError):
        return _Marked(fn)  # type: ignore[return-value]
    return fn


def is_deterministic(transform: Any) -> bool:
    """Whether one callable of a transform list counts as deterministic."""
    if getattr(transform, "deterministic", None) is True:
        return True
    return tv.is_deterministic(transform)


@dataclass(frozen=True)
class Part:
    """One side of a :class:`Split`: transforms applied in turn to a dataset item.

    Attributes:
        apply: ``item -> item``.
        fingerprint: changes whenever the transforms' parameters or code do.
        names: class (or function) names of the transforms, for logs.
        reseed: seeds the library's own generators (albumentations), if it has any.
        generators: the global generators the transforms may draw from (see
            :func:`~adaptive_cache.transforms.seeding.seeded`): all three for plain
            callables, torch alone for torchvision's own classes, none for
            albumentations' own (it has generators of its own).
    """

    apply: Callable[[Any], Any]
    fingerprint: str
    names: tuple[str, ...] = ()
    reseed: Callable[[int], None] | None = None
    generators: frozenset[str] = GENERATORS

    def __call__(self, item: Any) -> Any:
        return self.apply(item)

    def __bool__(self) -> bool:
        return bool(self.names)


@dataclass(frozen=True)
class Split:
    """A transform cut at its first random step.

    Attributes:
        prefix: the deterministic head (its output may be cached).
        suffix: everything from the first random transform on (run every epoch).
        first_random: how to name that transform in messages; None without a suffix.
    """

    prefix: Part
    suffix: Part
    first_random: str | None


def _identity(item: Any) -> Any:
    return item


_EMPTY = Part(_identity, fingerprint(()))


def _call_all(transforms: tuple[Callable[[Any], Any], ...], item: Any) -> Any:
    for t in transforms:
        item = t(item)
    return item


def _name(t: Any) -> str:
    return getattr(t, "__qualname__", None) or type(t).__name__


def _module(t: Any) -> str:
    return type(t).__module__ or ""


def _leaves(compose: Any) -> list[Any]:
    """Every transform inside ``compose``, nested containers opened."""
    out = []
    for t in getattr(compose, "transforms", ()):
        out.extend(_leaves(t) if hasattr(t, "transforms") else [t])
    return out


def split_transform(transform: Any) -> Split:
    """Split ``transform`` at its first random step (see the module docstring).

    Raises:
        TypeError: ``transform`` is not callable, or a list holds something that is not.
        ValueError: a list mixes in albumentations or classic torchvision transforms,
            which take their input differently (pass them in their own ``Compose``), or
            an albumentations ``Compose`` with ``p`` other than 1.
    """
    if transform is None:
        return Split(_EMPTY, _EMPTY, None)
    if _module(transform).startswith("albumentations"):
        return _split_albumentations(transform)
    if tv.is_torchvision(transform) and type(transform).__name__ == "Compose":
        return _split_torchvision(transform)
    if tv.is_torchvision(transform) and not tv.is_v2(transform):
        import torchvision.transforms as classic

        return _split_torchvision(classic.Compose([transform]))
    items = list(transform) if isinstance(transform, (list, tuple)) else [transform]
    for i, t in enumerate(items):
        if not callable(t):
            raise TypeError(f"transform[{i}] is not callable: {t!r}")
        if _module(t).startswith("albumentations"):
            raise ValueError(
                f"transform[{i}] is an albumentations {type(t).__name__}; albumentations "
                "transforms take keyword arguments: pass them as one A.Compose([...])"
            )
        if tv.is_torchvision(t) and not tv.is_v2(t):
            raise ValueError(
                f"transform[{i}] is a classic torchvision {type(t).__name__}, which takes "
                "only the image: pass classic transforms as one transforms.Compose([...]) "
                "(or use transforms.v2, which takes the whole item)"
            )
    return _split_callables(items)


def _split_callables(items: Sequence[Callable[[Any], Any]]) -> Split:
    cut = next((i for i, t in enumerate(items) if not is_deterministic(t)), len(items))

    def part(ts: Sequence[Callable[[Any], Any]]) -> Part:
        if not ts:
            return _EMPTY
        return Part(
            functools.partial(_call_all, tuple(ts)), fingerprint(list(ts)), tuple(map(_name, ts))
        )

    first = None
    if cut < len(items):
        t = items[cut]
        first = (
            tv.describe_random(t)
            if tv.is_torchvision(t)
            else f"callable {_name(t)} (mark it with adaptive_cache.deterministic if it is not "
            "random)"
        )
    return Split(part(items[:cut]), part(items[cut:]), first)


def _split_torchvision(compose: Any) -> Split:
    prefix, suffix = tv.split_compose(compose)
    kind = "torchvision.v2" if tv.is_v2(compose) else "torchvision"

    def part(c: Any) -> Part:
        if c is None:
            return _EMPTY
        names = tuple(type(t).__name__ for t in c.transforms)
        fn = c if tv.is_v2(compose) else functools.partial(tv.apply_classic, c)
        own = all(tv.is_torchvision(t) and type(t).__name__ != "Lambda" for t in _leaves(c))
        generators = frozenset({"torch"}) if own else GENERATORS
        return Part(fn, fingerprint(kind, list(c.transforms)), names, None, generators)

    name = tv.first_random(compose)
    return Split(part(prefix), part(suffix), f"torchvision {name}" if name else None)


def _split_albumentations(transform: Any) -> Split:
    import albumentations as A

    from adaptive_cache.transforms import albumentations as albu

    compose = transform if isinstance(transform, A.Compose) else A.Compose([transform])
    prefix, suffix = albu.split_compose(compose)

    def part(c: A.Compose, *, random: bool) -> Part:
        if not c.transforms:
            return _EMPTY
        names = tuple(type(t).__name__ for t in c.transforms)
        reseed = c.set_random_seed if random else None
        own = all(
            _module(t).startswith("albumentations") and not isinstance(t, A.Lambda)
            for t in _leaves(c)
        )
        generators = frozenset() if own else GENERATORS
        fp = albu.compose_fingerprint(c)
        return Part(functools.partial(albu.apply, c), fp, names, reseed, generators)

    name = albu.first_random(compose)
    return Split(
        part(prefix, random=False),
        part(suffix, random=True),
        f"albumentations {name}" if name else None,
    )
