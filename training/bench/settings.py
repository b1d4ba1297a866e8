"""How big each benchmark workload is: the full run, ``--quick``, and test sizes."""

from __future__ import annotations

from dataclasses import dataclass

WORKLOADS = ("loader-val", "loader-train", "hit-rate", "knapsack", "train")
"""Workload names, in the order they run (``--only`` picks among them)."""


@dataclass(frozen=True)
class BenchSizes:
    """Sizes of one benchmark run.

    Attributes:
        n: receipts per split generated for the loader workloads.
        scale: image size factor of the generated receipts (1.0: about 960x1280).
        image_size: canonical size of the OCR pipeline (``None``: ``data.image_size``).
        batch_size: loader batch size.
        epochs: epochs per loader contender (epoch 0 fills, 1+ are the steady state).
        budgets: budget fractions (of the tensor-tier footprint) for ``auto``.
        policy_budgets: budget fractions for ``static`` and ``lru``.
        monai: run MONAI's ``CacheDataset`` (skipped with a note if it cannot import).
        hit_n: samples of the generic equal-size pipeline.
        hit_nbytes: bytes of each of its samples.
        hit_cost_s: seconds each of its samples takes to build.
        hit_fractions: budget fractions of the hit-rate grid.
        hit_workers: ``num_workers`` values of the hit-rate grid.
        hit_epochs: epochs per hit-rate run.
        knap_n: samples of the unequal-size, unequal-cost pipeline.
        knap_fractions: budget fractions of the knapsack case.
        knap_epochs: epochs per knapsack run.
        knap_cost_s: median build seconds of a knapsack sample.
        train_n: training receipts of the end-to-end workload (a multiple of
            ``train_batch``, so that every epoch sees every one).
        train_val_n: its validation receipts.
        train_batch: its batch size.
        train_epochs: its epochs.
        train_image_size: its canonical size on a CPU (``None``: ``data.image_size``;
            on CUDA the configured size is always used).
        train_scale: size factor of its generated receipts.
        precision_compare: two short extra runs (three epochs of two steps) at fp32
            and at mixed precision, to compare step times.
    """

    n: int
    scale: float
    image_size: int | None
    batch_size: int
    epochs: int
    budgets: tuple[float, ...]
    policy_budgets: tuple[float, ...]
    monai: bool
    hit_n: int
    hit_nbytes: int
    hit_cost_s: float
    hit_fractions: tuple[float, ...]
    hit_workers: tuple[int, ...]
    hit_epochs: int
    knap_n: int
    knap_fractions: tuple[float, ...]
    knap_epochs: int
    knap_cost_s: float
    train_n: int
    train_val_n: int
    train_batch: int
    train_epochs: int
    train_image_size: int | None
    train_scale: float
    precision_compare: bool

    def __post_init__(self) -> None:
        if self.epochs < 2 or self.hit_epochs < 2 or self.knap_epochs < 2:
            raise ValueError("bench sizes: epochs must be >= 2 (epoch 0 fills, 1+ measure)")
        if self.train_n % self.train_batch:
            raise ValueError(
                f"bench sizes: train_n={self.train_n} must be a multiple of "
                f"train_batch={self.train_batch}"
            )
        for name in ("budgets", "policy_budgets", "hit_fractions", "knap_fractions"):
            bad = [f for f in getattr(self, name) if not 0.0 < f <= 1.0]
            if bad:
                raise ValueError(f"bench sizes: {name} must lie in (0, 1], got {bad}")


FULL = BenchSizes(
    n=128,
    scale=1.0,
    image_size=640,  # the seed's canonical size, which its numbers (and ours) are about
    batch_size=16,
    epochs=8,  # epochs 1+ of the cached loaders last ~40 ms each: medians need several
    budgets=(1.0, 0.5, 0.2),
    policy_budgets=(1.0, 0.5, 0.2),
    monai=True,
    hit_n=400,
    hit_nbytes=60_000,
    hit_cost_s=0.002,
    hit_fractions=(0.2, 0.5, 1.0),
    hit_workers=(0, 2, 4),
    hit_epochs=6,
    knap_n=200,
    knap_fractions=(0.1, 0.3),
    knap_epochs=6,
    knap_cost_s=0.002,
    train_n=16,
    train_val_n=8,
    train_batch=4,
    train_epochs=5,
    train_image_size=320,
    train_scale=1.0,
    precision_compare=True,
)
"""The full run: under 20 minutes on 2 cores."""

QUICK = BenchSizes(
    n=24,
    scale=0.5,
    image_size=320,
    batch_size=8,
    epochs=3,
    budgets=(1.0, 0.5, 0.2),
    policy_budgets=(1.0, 0.2),
    monai=True,
    hit_n=120,
    hit_nbytes=16_000,
    hit_cost_s=0.001,
    hit_fractions=(0.2, 0.5, 1.0),
    hit_workers=(0, 2, 4),
    hit_epochs=3,
    # As in the full run: with fewer samples a budget of 10% holds a handful of whole
    # entries, and even the best choice of them stays well under the fractional bound.
    knap_n=200,
    knap_fractions=(0.1,),
    knap_epochs=4,
    knap_cost_s=0.002,
    train_n=8,
    train_val_n=4,
    train_batch=4,
    train_epochs=3,
    train_image_size=128,
    train_scale=0.3,
    precision_compare=True,
)
"""``--quick``: under 3 minutes on 2 cores."""
