"""The OCR sample source: one split's images plus their annotations.

Samples are the annotated images that exist on disk, sorted by name; ``sample_id`` is
the image's path relative to the image directory. Annotations are parsed once, at
construction, so a bad annotation fails (``on_bad_sample=raise``) or is left out and
counted (``skip``) before any work starts. ``load`` reads the raw file bytes; decoding
is the pipeline's first stage.

Polygons travel as arrays (the cache codec stores arrays and JSON, nothing else):
``polys`` float32 (K, 2) all points concatenated, ``poly_offsets`` int32 (P + 1,) with
polygon ``i`` at ``polys[poly_offsets[i]:poly_offsets[i + 1]]``, and ``ignore`` uint8
(P,) for don't-care words.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Literal

import numpy as np

from adaptive_cache.pipeline import Sample
from training.data.annotations import Annotations, parse_icdar2015_dir, parse_seed_json

log = logging.getLogger(__name__)


def _stat_identity(path: str | os.PathLike[str]) -> str:
    st = os.stat(path)
    return f"{st.st_size}:{st.st_mtime_ns}"


def pack_polygons(polygons: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """A list of (N_i, 2) polygons -> ``(polys (K, 2) float32, poly_offsets (P + 1,) int32)``."""
    offsets = np.zeros(len(polygons) + 1, dtype=np.int32)
    if polygons:
        offsets[1:] = np.cumsum([len(p) for p in polygons])
        polys = np.concatenate(polygons).astype(np.float32, copy=False).reshape(-1, 2)
    else:
        polys = np.zeros((0, 2), np.float32)
    return polys, offsets


def unpack_polygons(polys: np.ndarray, offsets: np.ndarray) -> list[np.ndarray]:
    """Inverse of :func:`pack_polygons` (views into ``polys``)."""
    return [polys[offsets[i] : offsets[i + 1]] for i in range(len(offsets) - 1)]


class OcrSource:
    """One split of an OCR dataset (implements :class:`adaptive_cache.pipeline.Source`).

    Args:
        images: the image directory.
        annotations: the seed JSON file, or the ICDAR 2015 ground-truth directory.
        format: ``seed`` or ``icdar2015``.
        extensions: image file extensions (case-insensitive) considered for ICDAR.
        on_bad_sample: ``raise`` fails on the first invalid annotation or missing image;
            ``skip`` leaves such samples out, logs them once and counts them in
            :attr:`skipped`.

    Raises:
        ValueError: a missing directory or file, an invalid annotation (``raise``), or no
            usable sample at all.
    """

    def __init__(
        self,
        images: str | Path,
        annotations: str | Path,
        *,
        format: Literal["seed", "icdar2015"] = "seed",
        extensions: tuple[str, ...] | list[str] = (".jpg", ".jpeg", ".png"),
        on_bad_sample: Literal["raise", "skip"] = "raise",
    ) -> None:
        self.images_dir = Path(images)
        self._images_str = str(self.images_dir)
        self.annotations_path = Path(annotations)
        if not self.images_dir.is_dir():
            raise ValueError(f"image directory {self.images_dir} does not exist")
        strict = on_bad_sample == "raise"
        exts = {e.lower() for e in extensions}
        on_disk = sorted(
            str(p.relative_to(self.images_dir))
            for p in self.images_dir.rglob("*")
            if p.suffix.lower() in exts and p.is_file()
        )
        if format == "seed":
            parsed = parse_seed_json(self.annotations_path, strict=strict)
        else:
            parsed = parse_icdar2015_dir(self.annotations_path, on_disk, strict=strict)
        self.skipped: dict[str, str] = dict(parsed.bad)
        self.dropped_polygons = parsed.dropped
        present = set(on_disk)
        for name in parsed.images:
            if name not in present:
                msg = f"{self.annotations_path}: image {name!r} not found in {self.images_dir}"
                if strict:
                    raise ValueError(msg)
                self.skipped[name] = msg
        if len(self.skipped) > len(parsed.bad):
            log.warning(
                "%s: %d annotated images missing from %s, skipped",
                self.annotations_path,
                len(self.skipped) - len(parsed.bad),
                self.images_dir,
            )
        unannotated = len(present - set(parsed.images) - set(parsed.bad))
        if unannotated:
            log.info("%s: %d images without annotations ignored", self.images_dir, unannotated)
        self._names = [n for n in parsed.images if n in present]
        if not self._names:
            raise ValueError(
                f"no usable samples: {self.images_dir} with {self.annotations_path} "
                f"({len(on_disk)} images on disk, {len(parsed.images)} annotated)"
            )
        self._polys = [self._pack(parsed, n) for n in self._names]
        ann_files = (
            [self.annotations_path] * len(self._names)
            if format == "seed"
            else [self.annotations_path / f"gt_{Path(n).stem}.txt" for n in self._names]
        )
        # Annotation identity as parsed: the polygons held here come from that version.
        self._ann_identity = [_stat_identity(p) for p in ann_files]

    @staticmethod
    def _pack(parsed: Annotations, name: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        entry = parsed.images[name]
        polys, offsets = pack_polygons(entry.polygons)
        return polys, offsets, entry.ignore.astype(np.uint8)

    def __len__(self) -> int:
        return len(self._names)

    def sample_id(self, index: int) -> str:
        return self._names[index]

    def path(self, index: int) -> Path:
        """The image file of sample ``index``."""
        return self.images_dir / self._names[index]

    def identity(self, index: int) -> str:
        # A str path: a Path join costs more than the stat (this runs for every hit).
        path = os.path.join(self._images_str, self._names[index])
        return f"{_stat_identity(path)}|{self._ann_identity[index]}"

    def load(self, index: int) -> Sample:
        """Read one sample: ``data`` (the file's bytes as uint8), polygons, file names.

        A file that cannot be read gives empty ``data`` and a ``read_error`` entry: the
        decode stage then treats it like any other bad sample (raise or skip).
        """
        path = self.path(index)
        extra: dict[str, str] = {}
        try:
            data = np.fromfile(path, dtype=np.uint8)
        except OSError as exc:
            data = np.zeros(0, np.uint8)
            extra["read_error"] = f"cannot read image file: {exc.strerror or exc}"
        polys, offsets, ignore = self._polys[index]
        return {
            **extra,
            "data": data,
            "polys": polys,
            "poly_offsets": offsets,
            "ignore": ignore,
            "file": self._names[index],
            "path": str(path),
            "index": index,
        }
