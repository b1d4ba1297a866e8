"""The cost model of one level: what a hit there costs, and whether to compress.

A hit in a lower level saves the rebuild but costs a read (and a decompression when
the entry is compressed); the level's worth of an entry is therefore
``(rebuild - read - decompress) / stored bytes``. Reads are timed where they happen
(DataLoader workers report them) and fitted as ``fixed + per_byte * bytes`` (an
exponentially weighted least-squares line: a small read is mostly its fixed cost, so
seconds per byte alone would make small entries look slow).

Compression (``cache.compress: auto``) is decided per tier from measurements: the
first :data:`TRIALS` entries of a tier written to the level are compressed and
decompressed once to time both and measure the ratio (they are stored raw). Then,
with ``s`` raw bytes, ratio ``rho``, read seconds per byte ``r`` (the line's slope;
0 until reads of different sizes tell it) and decompression seconds ``d``:

* if the tier's raw footprint fits the level's budget, what counts is seconds saved
  per entry: compress when ``r * rho * s + d < r * s`` (reading fewer bytes pays for
  decompressing them, as over a network);
* if it does not fit, what counts is seconds saved per byte (the knapsack): compress
  when ``(R - r*rho*s - d) / (rho*s) > (R - r*s) / s``, ``R`` the rebuild seconds.

On the synthetic receipts (640, zstd level 1) the ``tensor`` tier compresses 4.8x in
3.5 ms and decompresses in 1.1 ms against a 16 ms rebuild: under a binding budget a
compressed entry is worth about 4.5x more per byte; on a disk that holds everything,
raw entries win (and are served in place).
"""

from __future__ import annotations

from dataclasses import dataclass

TRIALS = 4  # entries per tier compressed and timed before deciding
IN_PLACE_FIXED_S = 200e-6  # an in-place hit's fixed cost allowed (stat, open, mmap)
SLOW_S_PER_BYTE = 1e-9  # ... plus this per byte: slower is a read from the device
_EMA = 0.2


def _ema(old: float | None, new: float) -> float:
    return new if old is None else old + _EMA * (new - old)


class ReadFit:
    """Read seconds as ``fixed + per_byte * bytes``, exponentially weighted least squares."""

    def __init__(self, decay: float = 0.98) -> None:
        self.decay = decay
        self._w = self._x = self._y = self._xx = self._xy = 0.0

    def add(self, nbytes: float, seconds: float) -> None:
        d = self.decay
        self._w = d * self._w + 1.0
        self._x = d * self._x + nbytes
        self._y = d * self._y + seconds
        self._xx = d * self._xx + nbytes * nbytes
        self._xy = d * self._xy + nbytes * seconds

    @property
    def per_byte(self) -> float:
        """The slope; 0 while the sizes read are too alike to tell it from the fixed cost."""
        if self._w == 0:
            return 0.0
        mx = self._x / self._w
        var = self._xx / self._w - mx * mx
        if var <= (0.05 * mx) ** 2:
            return 0.0
        cov = self._xy / self._w - mx * self._y / self._w
        return max(cov / var, 0.0)

    def seconds(self, nbytes: float) -> float:
        """Predicted seconds to read ``nbytes`` (0 before any read)."""
        if self._w == 0:
            return 0.0
        b = self.per_byte
        fixed = max(self._y / self._w - b * self._x / self._w, 0.0)
        return fixed + b * nbytes


@dataclass
class _TierCodec:
    raw_bytes: float | None = None
    ratio: float | None = None  # compressed / raw
    decompress_s_per_byte: float | None = None  # per raw byte
    trials: int = 0  # measured
    issued: int = 0  # asked for (results come back later, from workers)


class LevelCost:
    """Measured read and compression costs of one level.

    Args:
        compress: ``auto``, ``on`` or ``off`` (``cache.compress``).
    """

    def __init__(self, compress: str = "auto") -> None:
        self.compress = compress
        self.reads = ReadFit()  # seconds against stored bytes
        self.in_place_slow = 0.0  # smoothed share of in-place hits that were slow reads
        self._tiers: dict[str, _TierCodec] = {}

    def _tier(self, tier: str) -> _TierCodec:
        t = self._tiers.get(tier)
        if t is None:
            t = self._tiers[tier] = _TierCodec()
        return t

    def observe_read(self, stored: int, raw: int, read_s: float, decompress_s: float) -> None:
        """A read of ``stored`` bytes (``raw`` once decompressed, 0 s when raw)."""
        if stored > 0:
            self.reads.add(stored, read_s)
        if decompress_s > 0 and raw > 0 and raw != stored:
            # Attributed to every tier: decompression speed depends on the library more
            # than on the tier.
            for t in self._tiers.values():
                t.decompress_s_per_byte = _ema(t.decompress_s_per_byte, decompress_s / raw)

    def observe_in_place(self, nbytes: int, seconds: float) -> None:
        """A hit served from a mapping of the level's file, in the owner.

        A hit slower than ``IN_PLACE_FIXED_S`` plus 1 ns a byte (1 GB/s) read from the
        device rather than the page cache; while most are, the level's hits go to
        DataLoader workers, which read in parallel, instead of the owner's loop.
        """
        slow = seconds > IN_PLACE_FIXED_S + nbytes * SLOW_S_PER_BYTE
        self.in_place_slow += _EMA * (float(slow) - self.in_place_slow)

    @property
    def in_place_ok(self) -> bool:
        return self.in_place_slow < 0.5

    def observe_write(self, tier: str, raw: int) -> None:
        t = self._tier(tier)
        t.raw_bytes = _ema(t.raw_bytes, float(raw))

    def observe_trial(
        self, tier: str, raw: int, compressed: int, compress_s: float, decompress_s: float
    ) -> None:
        """One timed compression of an entry of ``tier``."""
        t = self._tier(tier)
        t.trials += 1
        t.raw_bytes = _ema(t.raw_bytes, float(raw))
        if raw > 0:
            t.ratio = _ema(t.ratio, compressed / raw)
            t.decompress_s_per_byte = _ema(t.decompress_s_per_byte, decompress_s / raw)

    def read_seconds(self, stored: float) -> float:
        return self.reads.seconds(stored)

    def decompress_seconds(self, tier: str, raw: float) -> float:
        t = self._tiers.get(tier)
        return (t.decompress_s_per_byte or 0.0) * raw if t is not None else 0.0

    def ratio(self, tier: str) -> float:
        """Expected stored / raw bytes of ``tier`` at this level."""
        t = self._tiers.get(tier)
        return t.ratio if t is not None and t.ratio is not None else 1.0

    def codec(
        self, tier: str, rebuild_s: float, population: int, budget: int, *, issue: bool = False
    ) -> str:
        """``raw``, ``zstd`` or ``trial`` (compress and time it) for the next entry.

        With ``issue`` the answer is for an entry about to be written: at most
        :data:`TRIALS` trials are handed out per tier; until their results are back,
        entries are written raw (``on``: compressed).
        """
        if self.compress != "auto":
            self._tier(tier)
            return "zstd" if self.compress == "on" else "raw"
        t = self._tier(tier)
        if t.trials < TRIALS:
            if t.issued < TRIALS:
                if issue:
                    t.issued += 1
                return "trial"
            return "raw"
        return "zstd" if self.prefers_compressed(tier, rebuild_s, population, budget) else "raw"

    def prefers_compressed(self, tier: str, rebuild_s: float, population: int, budget: int) -> bool:
        """The rule of the module docstring, from the current measurements."""
        t = self._tiers.get(tier)
        if t is None or t.ratio is None or not t.raw_bytes:
            return False
        s, rho = t.raw_bytes, t.ratio
        d = (t.decompress_s_per_byte or 0.0) * s
        if s * max(population, 1) <= budget:
            return self.reads.per_byte * s * (1.0 - rho) > d
        worth_raw = (rebuild_s - self.read_seconds(s)) / s
        worth_zstd = (rebuild_s - self.read_seconds(rho * s) - d) / max(rho * s, 1.0)
        return worth_zstd > worth_raw
