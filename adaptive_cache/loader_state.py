"""What a :class:`~adaptive_cache.loader.CacheLoader` saves to resume mid-epoch.

A run resumed from a checkpoint taken mid-epoch must see the rest of that epoch's
batches, in the same order, with the same epoch number (random stages are seeded by
it). The order of an epoch is drawn once, at its start, from the sampler's generator
(the DataLoader's ``generator``) or, without one, from torch's global generator (a
``RandomSampler`` draws its seed there). :class:`LoaderState` keeps the epoch, the
batches already yielded and the generator states from which the order was drawn;
:func:`draw_batches` draws an epoch's order again from them.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import torch


@dataclass
class LoaderState:
    """Where a loader is: ``epoch``, ``batches`` yielded in it, and ``rng`` (the
    generator states its batch order was drawn from; empty: draw afresh)."""

    epoch: int = 0
    batches: int = 0
    rng: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"epoch": self.epoch, "batches": self.batches, "rng": dict(self.rng)}

    @classmethod
    def from_dict(cls, state: dict[str, Any]) -> LoaderState:
        """Read a :meth:`to_dict` result.

        Raises:
            ValueError: a missing or negative ``epoch`` or ``batches`` (names the key).
        """
        out = cls()
        for key in ("epoch", "batches"):
            value = state.get(key)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise ValueError(f"CacheLoader state: {key!r} must be an int >= 0, got {value!r}")
            setattr(out, key, value)
        rng = state.get("rng") or {}
        if not isinstance(rng, dict):
            raise ValueError(f"CacheLoader state: 'rng' must be a dict, got {type(rng).__name__}")
        out.rng = dict(rng)
        return out


def _generator(sampler: Any) -> torch.Generator | None:
    gen = getattr(sampler, "generator", None)
    return gen if isinstance(gen, torch.Generator) else None


def capture(sampler: Any) -> dict[str, Any]:
    """The generator states an epoch's order will be drawn from, as they are now."""
    gen = _generator(sampler)
    return {
        "global": torch.get_rng_state(),
        "sampler": None if gen is None else gen.get_state(),
    }


@contextlib.contextmanager
def _drawing_from(sampler: Any, rng: dict[str, Any]) -> Iterator[None]:
    # The sampler's own generator is left where the draw leaves it (as in the run that
    # saved the state); torch's global one is given back, so nothing else is disturbed.
    gen = _generator(sampler)
    if gen is not None and rng.get("sampler") is not None:
        gen.set_state(rng["sampler"])
    saved = torch.get_rng_state()
    if rng.get("global") is not None:
        torch.set_rng_state(rng["global"])
    try:
        yield
    finally:
        if rng.get("global") is not None:
            torch.set_rng_state(saved)


def draw_batches(
    batch_sampler: Iterable[list[int]], sampler: Any, rng: dict[str, Any] | None = None
) -> tuple[list[list[int]], dict[str, Any]]:
    """Every batch of one epoch, and the generator states they were drawn from.

    With ``rng`` (a resumed epoch) the order is drawn again from those states; without,
    it is drawn as a DataLoader would, from the generators as they are.
    """
    if not rng:
        rng = capture(sampler)
        return [list(b) for b in batch_sampler], rng
    with _drawing_from(sampler, rng):
        return [list(b) for b in batch_sampler], rng
