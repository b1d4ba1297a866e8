"""Stage and Pipeline: the chain that turns a sample index into a training example.

A pipeline is a :class:`Source` (which knows the samples and reads their raw input)
followed by named stages. Each stage says whether it is deterministic and gives a
fingerprint of its parameters and code version. The *cacheable prefix* is every stage
before the first random one; *tiers* name outputs inside that prefix (for the OCR
workload: ``image``, ``maps``, ``tensor``). A cached value is keyed by the sample,
the identity of its source file and the fingerprints of every stage up to its tier,
so a changed file or a changed stage never serves a stale entry.

Random stages draw from a generator seeded by ``(seed, epoch, index, stage)``: the
same sample in the same epoch gets the same augmentation whichever process computes
it and whether or not its prefix came from the cache.
"""

from __future__ import annotations

import hashlib
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol, runtime_checkable

import numpy as np

from adaptive_cache.keys import EntryKey

Sample = dict[str, Any]
"""A sample: named numpy arrays plus JSON-serialisable metadata (str, int, float, lists)."""


_KEY_MEMO_MAX = 65536  # samples whose keys Pipeline.keys remembers


def stable_hash(*parts: object) -> str:
    """Hex digest (16 bytes of BLAKE2b) of the ``repr`` of ``parts``; stable across runs."""
    h = hashlib.blake2b(digest_size=16)
    for part in parts:
        h.update(repr(part).encode())
        h.update(b"\x00")
    return h.hexdigest()


@runtime_checkable
class Source(Protocol):
    """Where samples come from: names them, identifies their files, reads raw input."""

    def __len__(self) -> int: ...

    def sample_id(self, index: int) -> str:
        """A stable name for the sample (for example its relative file path)."""
        ...

    def identity(self, index: int) -> str:
        """Changes whenever the sample's underlying data changes (size, mtime, ...)."""
        ...

    def load(self, index: int) -> Sample:
        """Read the raw input of one sample (bytes, annotation); the pipeline's first step."""
        ...


class Stage(ABC):
    """One named step of a pipeline.

    Subclasses set ``name`` and ``deterministic`` and implement :meth:`__call__`.
    :meth:`params` returns what :meth:`fingerprint` hashes; bump ``version`` when the
    code changes in a way that changes outputs.
    """

    name: str = "stage"
    deterministic: bool = True
    version: str = "1"

    def params(self) -> object:
        """Everything that determines the stage's output besides its input."""
        return ()

    def fingerprint(self) -> str:
        return stable_hash(type(self).__qualname__, self.name, self.version, self.params())

    def describe_random(self) -> str:
        """What makes this stage random, for error messages (override to name a transform)."""
        return self.name

    @abstractmethod
    def __call__(self, sample: Sample, rng: np.random.Generator) -> Sample: ...


class FunctionStage(Stage):
    """A stage from a plain function ``fn(sample) -> sample`` (or ``fn(sample, rng)``)."""

    def __init__(
        self,
        name: str,
        fn: Callable[..., Sample],
        *,
        deterministic: bool = True,
        params: object = (),
        uses_rng: bool = False,
    ) -> None:
        self.name = name
        self.deterministic = deterministic
        self._fn = fn
        self._params = params
        self._uses_rng = uses_rng

    def params(self) -> object:
        return (
            getattr(self._fn, "__module__", ""),
            getattr(self._fn, "__qualname__", ""),
            self._params,
        )

    def __call__(self, sample: Sample, rng: np.random.Generator) -> Sample:
        return self._fn(sample, rng) if self._uses_rng else self._fn(sample)


class RandomStageError(ValueError):
    """A tier was requested at or after a random stage."""


class Pipeline:
    """A source plus an ordered list of stages, with named cacheable tiers.

    Args:
        source: names the samples and reads their raw input.
        stages: the stages, in order; names must be unique.
        tiers: tier name -> name of the stage whose output the tier is. A tier must lie
            inside the deterministic prefix.
        seed: base seed for random stages.
        clock: what stage timings are read from (a fake clock makes them exact in tests).

    Raises:
        ValueError: duplicate stage names, an unknown stage in ``tiers``, or a tier
            placed at or after a random stage (the message names the random stage).

    Example:
        >>> pipe = Pipeline(src, [decode, resize, crop], tiers={"image": "decode"})
        >>> sample = pipe.run(index=3, epoch=0)
    """

    def __init__(
        self,
        source: Source,
        stages: Sequence[Stage],
        tiers: Mapping[str, str],
        *,
        seed: int = 0,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        names = [s.name for s in stages]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"pipeline stage names must be unique; repeated: {dupes}")
        self.source = source
        self.stages: list[Stage] = list(stages)
        self.seed = int(seed)
        self.clock = clock
        self.prefix_len = next(
            (i for i, s in enumerate(self.stages) if not s.deterministic), len(self.stages)
        )
        self._tier_end: dict[str, int] = {}
        self._key_memo: dict[int, tuple[tuple[str, str], dict[str, EntryKey]]] = {}
        for tier, stage_name in tiers.items():
            if stage_name not in names:
                raise ValueError(
                    f"tier {tier!r} names stage {stage_name!r}, which is not in the pipeline "
                    f"(stages: {names})"
                )
            end = names.index(stage_name) + 1
            if end > self.prefix_len:
                rnd = self.stages[self.prefix_len]
                raise RandomStageError(
                    f"tier {tier!r} (output of stage {stage_name!r}) lies after the random "
                    f"stage {rnd.name!r} ({rnd.describe_random()}); a random stage's output "
                    "is never cached"
                )
            self._tier_end[tier] = end
        # Deepest first: lookups try the tier that saves the most work.
        self.tiers: list[str] = sorted(self._tier_end, key=self._tier_end.__getitem__, reverse=True)
        fps = [s.fingerprint() for s in self.stages]
        self._chain = [stable_hash("source", type(source).__qualname__)]
        for fp in fps:
            self._chain.append(stable_hash(self._chain[-1], fp))

    def __len__(self) -> int:
        return len(self.source)

    def tier_end(self, tier: str) -> int:
        """Number of stages whose output makes up ``tier`` (its position in the chain)."""
        try:
            return self._tier_end[tier]
        except KeyError:
            raise ValueError(f"unknown tier {tier!r}; known: {sorted(self._tier_end)}") from None

    def fingerprint(self, upto: int | None = None) -> str:
        """Fingerprint of the source type and the first ``upto`` stages (all by default)."""
        return self._chain[len(self.stages) if upto is None else upto]

    def key(self, index: int, tier: str) -> EntryKey:
        """Cache key of ``tier`` for sample ``index``: id + file identity + stage chain."""
        return self.keys(index, (tier,))[tier]

    def keys(self, index: int, tiers: Sequence[str]) -> dict[str, EntryKey]:
        """Cache keys of several tiers of one sample, reading the source identity once.

        A key is ``(tier, hex digest)`` (see :class:`~adaptive_cache.keys.EntryKey`):
        the digest covers the sample id, the identity of its file(s) and the
        fingerprints of every stage up to the tier.
        """
        src = self.source
        sid, ident = src.sample_id(index), src.identity(index)
        # Hashing costs more than reading the identity; while the identity (and so
        # every key) is unchanged, reuse the digests: this runs for every hit.
        memo = self._key_memo.get(index)
        if memo is None or memo[0] != (sid, ident):
            if len(self._key_memo) >= _KEY_MEMO_MAX:
                self._key_memo.clear()  # bounded memory (about 0.5 KB a sample)
            memo = ((sid, ident), {})
            self._key_memo[index] = memo
        known = memo[1]
        out = {}
        for t in tiers:
            key = known.get(t)
            if key is None:
                digest = stable_hash(sid, ident, self.fingerprint(self.tier_end(t)))
                key = known[t] = EntryKey(t, digest)
            out[t] = key
        return out

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_key_memo"] = {}  # rebuilt where it is used; not worth shipping to workers
        return state

    def rng(self, index: int, epoch: int, stage_pos: int) -> np.random.Generator:
        """The generator a stage gets for one sample in one epoch."""
        return np.random.default_rng([self.seed, epoch, index, stage_pos])

    def run(
        self,
        index: int,
        epoch: int = 0,
        *,
        start: int = 0,
        sample: Sample | None = None,
        upto: int | None = None,
        timings: list[float] | None = None,
        outputs: Mapping[int, Callable[[Sample], None]] | None = None,
    ) -> Sample:
        """Run stages ``start .. upto`` (exclusive) for one sample.

        Args:
            index: sample index.
            epoch: epoch number (seeds random stages).
            start: first stage to run; ``sample`` must then be the output of stage
                ``start - 1`` (for example a cached tier). With ``start == 0`` the
                source is read.
            sample: the input when ``start > 0``.
            upto: stop after this many stages (``None``: all).
            timings: if given (length ``len(stages) + 1``), ``timings[0]`` receives the
                seconds the source read took (when ``start == 0``) and ``timings[i + 1]``
                the seconds stage ``i`` took.
            outputs: stage count -> callback receiving the output after that many stages
                (used to hand tier values to the cache as soon as they exist).
        """
        end = len(self.stages) if upto is None else upto
        clock = self.clock
        if start == 0:
            t0 = clock()
            sample = self.source.load(index)
            if timings is not None:
                timings[0] = clock() - t0
        elif sample is None:
            raise ValueError("Pipeline.run: start > 0 needs the sample to start from")
        for pos in range(start, end):
            stage = self.stages[pos]
            t0 = clock()
            sample = stage(sample, self.rng(index, epoch, pos))
            if timings is not None:
                timings[pos + 1] = clock() - t0
            if outputs and (pos + 1) in outputs:
                outputs[pos + 1](sample)
        return sample
