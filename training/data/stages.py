"""The OCR pipeline's own stages: decode, canonical resize, DB maps, pack.

Samples are dicts of numpy arrays plus JSON metadata (see
:mod:`adaptive_cache.codec`); every stage's output round-trips through the codec.
Polygons stay in the *original displayed frame* (full resolution, EXIF orientation
applied) from ``decode`` on; the canonical-frame copies the maps need are computed
from ``meta["scale_xy"]`` where they are used.

=============  ==============================================================
stage          adds (removes)
=============  ==============================================================
``decode``     ``image`` (h, w, 3) uint8 upright, maybe DCT-reduced; meta
               ``orientation``, ``stored_shape``, ``orig_shape``, ``reduction``,
               ``annotation_frame`` (removes ``data``, ``index``, ``path``)
``canonical``  ``image`` (S, S, 3) uint8; meta ``scale_xy`` [sx, sy] (original
               pixels -> canonical), ``scale`` (the longest side's factor, a
               float), ``canonical_shape`` (content before padding)
``db_maps``    float32 (S, S) ``prob``, ``prob_mask``, ``thresh_map``,
               ``thresh_mask``
``pack``       uint8 (S, S) ``gt`` bitfield and ``thresh`` (removes the float
               maps); layout in :mod:`training.data.db_targets`
=============  ==============================================================
"""

from __future__ import annotations

import logging
from typing import Literal

import numpy as np

from adaptive_cache.pipeline import Sample, Stage
from adaptive_cache.transforms.albumentations import compose_fingerprint
from training.data import orientation as orient
from training.data.db_targets import DBMaps, make_db_maps, pack
from training.data.images import MAX_PIXELS, BadSampleError, Decoder, decode_image
from training.data.source import OcrSource, unpack_polygons
from training.data.transforms import canonical_compose

log = logging.getLogger(__name__)

_FLOAT_MAPS = ("prob", "prob_mask", "thresh_map", "thresh_mask")
_LOAD_ONLY = ("data", "read_error", "index", "path")


class DecodeStage(Stage):
    """Bytes -> upright RGB image, polygons moved into the displayed frame.

    With ``on_bad_sample="skip"`` a file that cannot be decoded is logged once (per
    process), counted in :attr:`bad`, and replaced by the next index (wrapping
    around) that decodes, so batches keep their shape and the replacement is the
    same in every process and epoch. The output's ``replaced_from`` names the bad file.

    Args:
        source: the pipeline's source (used only to load replacements).
        target_size: longest side after the canonical resize (for DCT-reduced decoding),
            or None to always decode in full.
        decoder: ``auto``, ``opencv`` or ``simplejpeg``.
        annotation_frame: ``displayed`` (annotations drawn on the upright image) or
            ``stored`` (on the stored pixels; moved to the displayed frame here).
        on_bad_sample: ``raise`` or ``skip``.
        max_pixels: largest width x height an image header may declare (None: no
            limit); a larger image is a bad sample, refused before decoding.
    """

    name = "decode"
    version = "1"

    def __init__(
        self,
        source: OcrSource,
        *,
        target_size: int | None,
        decoder: Decoder = "auto",
        annotation_frame: Literal["displayed", "stored"] = "displayed",
        on_bad_sample: Literal["raise", "skip"] = "raise",
        max_pixels: int | None = MAX_PIXELS,
    ) -> None:
        self._source = source
        self.max_pixels = max_pixels
        self.target_size = target_size
        self.decoder = decoder
        self.annotation_frame = annotation_frame
        self.on_bad_sample = on_bad_sample
        self.bad: dict[str, str] = {}

    def params(self) -> object:
        base = (self.target_size, self.decoder, self.annotation_frame)
        # The limit decides which samples are replaced under ``skip``; the default one
        # is left out so that keys (and persistent entries) made before it stay valid.
        return base if self.max_pixels == MAX_PIXELS else (*base, self.max_pixels)

    def _decode(self, sample: Sample) -> Sample:
        path = sample["path"]
        if "read_error" in sample:
            raise BadSampleError(path, sample["read_error"])
        dec = decode_image(
            sample["data"],
            path=path,
            target_size=self.target_size,
            decoder=self.decoder,
            max_pixels=self.max_pixels,
        )
        polys = sample["polys"]
        if self.annotation_frame == "stored":
            polys = orient.apply_to_points(polys, dec.stored_hw, dec.orientation)
        # Only what describes the content: the index and the path depend on the listing
        # and the machine, and a cached value must not.
        out = {k: v for k, v in sample.items() if k not in _LOAD_ONLY}
        out.update(
            image=dec.image,
            polys=np.ascontiguousarray(polys, dtype=np.float32),
            orientation=dec.orientation,
            stored_shape=list(dec.stored_hw),
            orig_shape=list(dec.displayed_hw),
            reduction=dec.reduction,
            annotation_frame=self.annotation_frame,
        )
        return out

    def _record(self, exc: BadSampleError) -> None:
        if exc.path not in self.bad:
            self.bad[exc.path] = exc.reason
            log.warning("skipping bad sample %s (%d so far)", exc, len(self.bad))

    def __call__(self, sample: Sample, rng: np.random.Generator) -> Sample:
        try:
            return self._decode(sample)
        except BadSampleError as exc:
            if self.on_bad_sample == "raise":
                raise
            self._record(exc)
        n = len(self._source)
        index = int(sample["index"])
        for step in range(1, n):
            candidate = self._source.load((index + step) % n)
            if candidate["path"] in self.bad:
                continue
            try:
                out = self._decode(candidate)
            except BadSampleError as exc:
                self._record(exc)
                continue
            out["replaced_from"] = sample["file"]
            return out
        raise ValueError(f"on_bad_sample=skip: none of the {n} samples could be decoded")


class CanonicalStage(Stage):
    """LongestMaxSize + top-left PadIfNeeded to a square ``image_size`` canvas.

    Records ``scale_xy = [sx, sy]``, the factors from original (full-resolution
    displayed) pixels to canonical pixels, taking a DCT reduction into account, and
    ``scale``, the longest side's factor as one float (the two differ by the rounding
    of the resized size: under half a canonical pixel across the image).
    """

    name = "canonical"
    version = "1"

    def __init__(self, image_size: int) -> None:
        self.image_size = image_size
        self._compose = canonical_compose(image_size)
        self._fingerprint = compose_fingerprint(self._compose)

    def params(self) -> object:
        return (self.image_size, self._fingerprint)

    def __call__(self, sample: Sample, rng: np.random.Generator) -> Sample:
        image = sample["image"]
        resize, pad = self._compose.transforms
        resized = resize(image=image)["image"]
        padded = pad(image=resized)["image"]
        # Decoded pixel j covers original pixels [j*k, (j+1)*k) with k the DCT reduction.
        k = sample["reduction"]
        out = dict(sample)
        out["image"] = np.ascontiguousarray(padded)
        sx = resized.shape[1] / (image.shape[1] * k)
        sy = resized.shape[0] / (image.shape[0] * k)
        out["scale_xy"] = [sx, sy]
        out["scale"] = sx if image.shape[1] >= image.shape[0] else sy
        out["canonical_shape"] = [int(resized.shape[0]), int(resized.shape[1])]
        return out


def canonical_polygons(sample: Sample) -> list[np.ndarray]:
    """The sample's polygons in the canonical frame (original frame times ``scale_xy``)."""
    scale = np.asarray(sample["scale_xy"], dtype=np.float32)
    return [p * scale for p in unpack_polygons(sample["polys"], sample["poly_offsets"])]


class DBMapsStage(Stage):
    """The four float32 DB target maps at the canonical resolution."""

    name = "db_maps"
    version = "1"

    def __init__(
        self, *, shrink_ratio: float, thresh_min: float, thresh_max: float, min_text_size: int
    ) -> None:
        self.kwargs = dict(
            shrink_ratio=shrink_ratio,
            thresh_min=thresh_min,
            thresh_max=thresh_max,
            min_text_size=min_text_size,
        )

    def params(self) -> object:
        return sorted(self.kwargs.items())

    def __call__(self, sample: Sample, rng: np.random.Generator) -> Sample:
        maps = make_db_maps(
            canonical_polygons(sample),
            sample["ignore"].astype(bool),
            sample["image"].shape[:2],
            **self.kwargs,
        )
        out = dict(sample)
        out.update(
            prob=maps.prob, prob_mask=maps.prob_mask, thresh_map=maps.thresh,
            thresh_mask=maps.thresh_mask,
        )  # fmt: skip
        return out


class PackStage(Stage):
    """Float maps -> the compact uint8 ``gt`` bitfield and ``thresh``."""

    name = "pack"
    version = "1"

    def __call__(self, sample: Sample, rng: np.random.Generator) -> Sample:
        maps = DBMaps(
            prob=sample["prob"], prob_mask=sample["prob_mask"], thresh=sample["thresh_map"],
            thresh_mask=sample["thresh_mask"],
        )  # fmt: skip
        out = {k: v for k, v in sample.items() if k not in _FLOAT_MAPS}
        out["gt"], out["thresh"] = pack(maps)
        return out
