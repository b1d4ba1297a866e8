"""A plain map-style torch Dataset over a pipeline: no cache (the baseline).

Every item runs the whole pipeline from the file. The epoch seeds the random stages,
so set it before each epoch: :meth:`PipelineDataset.set_epoch` works when the
DataLoader's workers are started per epoch (the default); with persistent workers
pass ``epoch_fn`` reading a value the workers share (for example a
``multiprocessing.Value``), since workers keep their own copy of the dataset.
"""

from __future__ import annotations

from collections.abc import Callable

from torch.utils.data import Dataset

from adaptive_cache.pipeline import Pipeline, Sample


class PipelineDataset(Dataset):
    """``dataset[i]`` = ``pipeline.run(i, epoch)``.

    Args:
        pipeline: the sample pipeline.
        epoch_fn: returns the current epoch; overrides :meth:`set_epoch` when given.

    Example:
        >>> ds = PipelineDataset(build_pipeline(cfg.data, "train"))
        >>> loader = DataLoader(ds, batch_size=4, collate_fn=collate, num_workers=2)
        >>> for epoch in range(3):
        ...     ds.set_epoch(epoch)
        ...     for batch in loader: ...
    """

    def __init__(self, pipeline: Pipeline, epoch_fn: Callable[[], int] | None = None) -> None:
        self.pipeline = pipeline
        self._epoch_fn = epoch_fn
        self._epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Set the epoch that seeds random stages (before iterating)."""
        self._epoch = int(epoch)

    @property
    def epoch(self) -> int:
        return int(self._epoch_fn()) if self._epoch_fn is not None else self._epoch

    def __len__(self) -> int:
        return len(self.pipeline)

    def __getitem__(self, index: int) -> Sample:
        if not 0 <= index < len(self.pipeline):
            raise IndexError(f"index {index} out of range for {len(self.pipeline)} samples")
        return self.pipeline.run(int(index), self.epoch)
