"""Detection hmean with the ICDAR 2015 protocol (the RRC ``script.py`` rules).

Per image: a detection whose intersection with one don't-care ground truth covers
more than half of the detection's area is discarded; the remaining detections and the
care ground truths are matched one-to-one, greedily in ground-truth then detection
order, when their IoU is above 0.5 (strictly, as the official script). Matches and
counts are summed over the dataset before precision, recall and hmean are taken, so
an image with many words weighs more than one with few.

With IoU > 0.5 and non-overlapping ground truths a detection has at most one
candidate, so the greedy order cannot change the result.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import shapely
from shapely.geometry import Polygon
from shapely.geometry.base import BaseGeometry

IOU_THRESHOLD = 0.5
DONT_CARE_OVERLAP = 0.5


def _geometry(points: np.ndarray) -> BaseGeometry:
    """A valid shapely geometry of a polygon; degenerate ones become empty or 0-area."""
    pts = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    if len(pts) < 3 or not np.isfinite(pts).all():
        return Polygon()
    poly = Polygon(pts)
    return poly if poly.is_valid else shapely.make_valid(poly)


def _geometries(polygons: Sequence[np.ndarray]) -> np.ndarray:
    out = np.empty(len(polygons), dtype=object)  # filled item-wise: numpy must not unpack them
    for k, p in enumerate(polygons):
        out[k] = _geometry(p)
    return out


def _intersection_areas(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``(len(a), len(b))`` intersection areas, computed only where bounding boxes meet."""
    out = np.zeros((len(a), len(b)))
    if len(a) == 0 or len(b) == 0:
        return out
    ba, bb = shapely.bounds(a), shapely.bounds(b)  # (N, 4) minx, miny, maxx, maxy; NaN if empty
    with np.errstate(invalid="ignore"):
        overlap = (
            (ba[:, None, 0] < bb[None, :, 2])
            & (bb[None, :, 0] < ba[:, None, 2])
            & (ba[:, None, 1] < bb[None, :, 3])
            & (bb[None, :, 1] < ba[:, None, 3])
        )
    i, j = np.nonzero(overlap)
    if len(i):
        out[i, j] = shapely.area(shapely.intersection(a[i], b[j]))
    return out


@dataclass(frozen=True)
class ImageMatch:
    """Counts of one image: matched pairs, care ground truths, kept detections."""

    matched: int
    n_gt: int
    n_det: int


def match_image(
    preds: Sequence[np.ndarray], gts: Sequence[np.ndarray], ignore: np.ndarray | None = None
) -> ImageMatch:
    """Match one image's detections to its ground truth.

    Args:
        preds: detected polygons, each ``(N, 2)``.
        gts: ground-truth polygons, each ``(M, 2)``.
        ignore: bool per ground truth, ``True`` for don't-care; ``None`` for all care.

    Raises:
        ValueError: ``ignore`` does not have one flag per ground truth.
    """
    ignore = np.zeros(len(gts), bool) if ignore is None else np.asarray(ignore, bool).reshape(-1)
    if len(ignore) != len(gts):
        raise ValueError(f"ignore has {len(ignore)} flags for {len(gts)} ground-truth polygons")
    det = _geometries(preds)
    gt = _geometries(gts)
    det_area = shapely.area(det) if len(det) else np.zeros(0)

    keep = np.ones(len(det), bool)
    if ignore.any() and len(det):
        inter = _intersection_areas(det, gt[ignore])  # (n_det, n_dont_care)
        with np.errstate(divide="ignore", invalid="ignore"):
            covered = np.where(det_area[:, None] > 0, inter / det_area[:, None], 0.0)
        keep = ~(covered > DONT_CARE_OVERLAP).any(axis=1)
    det, det_area = det[keep], det_area[keep]
    gt = gt[~ignore]
    gt_area = shapely.area(gt) if len(gt) else np.zeros(0)

    inter = _intersection_areas(gt, det)  # (n_gt, n_det)
    union = gt_area[:, None] + det_area[None, :] - inter
    with np.errstate(divide="ignore", invalid="ignore"):
        iou = np.where(union > 0, inter / union, 0.0)
    gt_used = np.zeros(len(gt), bool)
    det_used = np.zeros(len(det), bool)
    matched = 0
    for g, d in zip(*np.nonzero(iou > IOU_THRESHOLD), strict=True):  # row-major: gt then det
        if not gt_used[g] and not det_used[d]:
            gt_used[g] = det_used[d] = True
            matched += 1
    return ImageMatch(matched=matched, n_gt=len(gt), n_det=len(det))


def hmean_from_counts(matched: int, n_gt: int, n_det: int) -> dict[str, float]:
    """Precision, recall and hmean from dataset totals (0 where a denominator is 0)."""
    precision = matched / n_det if n_det else 0.0
    recall = matched / n_gt if n_gt else 0.0
    hmean = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {
        "precision": precision,
        "recall": recall,
        "hmean": hmean,
        "matched": int(matched),
        "n_gt": int(n_gt),
        "n_det": int(n_det),
    }


class HmeanAccumulator:
    """Sums per-image matches over a dataset.

    Example:
        >>> acc = HmeanAccumulator()
        >>> box = np.array([[0, 0], [10, 0], [10, 5], [0, 5]], np.float32)
        >>> acc.update([box], [box], np.array([False]))
        >>> acc.compute()["hmean"]
        1.0
    """

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.matched = 0
        self.n_gt = 0
        self.n_det = 0

    def update(
        self,
        preds: Sequence[np.ndarray],
        gts: Sequence[np.ndarray],
        ignore: np.ndarray | None = None,
    ) -> ImageMatch:
        """Add one image (see :func:`match_image`) and return its counts."""
        result = match_image(preds, gts, ignore)
        self.matched += result.matched
        self.n_gt += result.n_gt
        self.n_det += result.n_det
        return result

    def compute(self) -> dict[str, float]:
        """``precision``, ``recall``, ``hmean``, ``matched``, ``n_gt``, ``n_det`` so far."""
        return hmean_from_counts(self.matched, self.n_gt, self.n_det)


def evaluate_hmean(
    preds: Sequence[Sequence[np.ndarray]],
    gts: Sequence[Sequence[np.ndarray]],
    ignores: Sequence[np.ndarray | None] | None = None,
) -> dict[str, float]:
    """Dataset hmean of per-image detections against per-image ground truth.

    Raises:
        ValueError: the sequences do not have one entry per image.
    """
    ignores = [None] * len(gts) if ignores is None else ignores
    if not len(preds) == len(gts) == len(ignores):
        raise ValueError(
            f"{len(preds)} prediction lists, {len(gts)} ground-truth lists and "
            f"{len(ignores)} ignore lists: expected one of each per image"
        )
    acc = HmeanAccumulator()
    for p, g, i in zip(preds, gts, ignores, strict=True):
        acc.update(p, g, i)
    return acc.compute()
