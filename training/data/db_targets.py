"""DBNet training targets (numpy, pyclipper and OpenCV only) and their compact layout.

For text polygons at the canonical resolution, DB ("Real-time Scene Text Detection
with Differentiable Binarization", Liao et al. 2020) trains on four maps:

* ``prob``: 1 inside each polygon shrunk by ``D = A (1 - r^2) / L`` (``A`` area, ``L``
  perimeter, ``r`` the shrink ratio), else 0.
* ``prob_mask``: 1 where the probability loss counts; 0 on don't-care polygons, on
  polygons whose shorter bounding-box side is below ``min_text_size`` and on polygons
  whose shrink vanishes (all three are left out of the threshold map too).
* ``thresh``: ``thresh_min + (thresh_max - thresh_min) * (1 - min(d / D, 1))`` inside
  the polygon dilated by ``D`` (``d``: distance to the nearest polygon edge, so the
  edge itself gets ``thresh_max``); ``thresh_min`` everywhere else.
* ``thresh_mask``: 1 inside the polygons dilated by ``D`` (round joins: the polygon
  plus every point closer than ``D`` to an edge).

Compact layout (what the cache keeps and the model decodes), two uint8 (H, W) arrays:

* ``gt``: a bitfield; bit 0 (``TEXT_BIT``) = ``prob``, bit 1 (``PROB_MASK_BIT``) =
  ``prob_mask``, bit 2 (``THRESH_MASK_BIT``) = ``thresh_mask``.
* ``thresh``: ``round(threshold * 255)``.

Both survive nearest-neighbour warping (the augmentation passes them as masks). Areas
a geometric augmentation fills from outside the image take ``gt = PROB_MASK_BIT``
(background that counts) and ``thresh = round(thresh_min * 255)``, the same values as
the canonical padding. :func:`unpack` turns the pair back into float32 maps and
works on numpy arrays and on torch tensors alike.

Coordinates are continuous (a pixel spans one unit, its centre at ``i + 0.5``);
polygons are rasterised with sub-pixel precision so that flipping polygons and
flipping maps give the same result.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np
import pyclipper

TEXT_BIT = 1
PROB_MASK_BIT = 2
THRESH_MASK_BIT = 4
THRESH_SCALE = 255.0
_SHIFT = 8  # fixed-point bits for cv2.fillPoly and pyclipper (1/256 pixel)
_ONE = 1 << _SHIFT


@dataclass(frozen=True)
class DBMaps:
    """The four DB target maps, each float32 (H, W) with values in [0, 1]."""

    prob: np.ndarray
    prob_mask: np.ndarray
    thresh: np.ndarray
    thresh_mask: np.ndarray


def shrink_distance(polygon: np.ndarray, ratio: float) -> float:
    """``D = A (1 - r^2) / L`` for a polygon (N, 2); 0 for a zero perimeter."""
    pts = polygon.astype(np.float64)
    nxt = np.concatenate([pts[1:], pts[:1]])
    area = 0.5 * abs(float(np.sum(pts[:, 0] * nxt[:, 1] - pts[:, 1] * nxt[:, 0])))
    perimeter = float(np.sqrt(((nxt - pts) ** 2).sum(axis=1)).sum())
    return area * (1.0 - ratio**2) / perimeter if perimeter > 0 else 0.0


def offset_polygon(polygon: np.ndarray, distance: float) -> list[np.ndarray]:
    """Grow (``distance > 0``) or shrink (``< 0``) a polygon with rounded joins.

    Returns:
        The resulting polygons as float64 (M, 2) arrays; empty when a shrink vanishes.
    """
    # Arc tolerance in the same fixed point: a quarter pixel (the default, 0.25 units,
    # would be 1/1024 pixel here and produce hundreds of vertices per rounded corner).
    off = pyclipper.PyclipperOffset(arc_tolerance=0.25 * _ONE)
    path = np.rint(polygon.astype(np.float64) * _ONE).astype(np.int64).tolist()
    off.AddPath(path, pyclipper.JT_ROUND, pyclipper.ET_CLOSEDPOLYGON)
    return [np.asarray(p, dtype=np.float64) / _ONE for p in off.Execute(distance * _ONE) if p]


def _fill(canvas: np.ndarray, polygons: Sequence[np.ndarray], value: float) -> None:
    # Continuous -> OpenCV pixel-centre coordinates (-0.5), in 1/256 pixel fixed point.
    pts = [np.rint((p - 0.5) * _ONE).astype(np.int32).reshape(-1, 1, 2) for p in polygons]
    cv2.fillPoly(canvas, pts, value, lineType=cv2.LINE_8, shift=_SHIFT)


_BATCH_PIXELS = 16384  # pixels per vectorised pass: temporaries stay in cache


def _border_batch(
    canvas: np.ndarray, width: int, edges: np.ndarray, box: np.ndarray, dist: np.ndarray
) -> None:
    """``canvas = max(canvas, 1 - min(d / D, 1))`` for a batch of polygons, in one pass.

    Args:
        canvas: the flat (H * W,) float32 border map, updated in place.
        width: W.
        edges: (P, N, 5) float32 per edge: start x, start y, vector x, vector y and
            1 / squared length (0 for a zero-length edge).
        box: (P, 4) int32 bounding boxes ``x0, y0, x1, y1`` (clipped, non-empty).
        dist: (P,) float32 dilation distances D.
    """
    bw = box[:, 2] - box[:, 0]
    counts = bw * (box[:, 3] - box[:, 1])

    # The batch's pixels are grouped by polygon: np.repeat(per_polygon, counts) spreads
    # a per-polygon value over its pixels. Every temporary stays below ~64 KiB: larger
    # ones are fresh mmap allocations, and their page faults cost more than the maths.
    def spread(values: np.ndarray) -> np.ndarray:
        return np.repeat(values, counts)

    fbw = bw.astype(np.float32)
    # float32 is exact for these integers (< 2**24) and divides faster than int64.
    local = np.arange(int(counts.sum()), dtype=np.float32)
    local -= spread((np.cumsum(counts) - counts).astype(np.float32))
    width_px = spread(fbw)
    ly = np.floor(local / width_px)
    cx = spread(box[:, 0].astype(np.float32) + 0.5) + (local - ly * width_px)  # centres
    cy = spread(box[:, 1].astype(np.float32) + 0.5) + ly
    d2 = np.full(local.size, np.inf, np.float32)
    for j in range(edges.shape[1]):
        ax, ay, ex, ey, inv = (spread(np.ascontiguousarray(edges[:, j, k])) for k in range(5))
        dx = cx - ax
        dy = cy - ay
        t = np.clip((dx * ex + dy * ey) * inv, 0.0, 1.0)  # projection on the edge
        dx -= t * ex
        dy -= t * ey
        np.minimum(d2, dx * dx + dy * dy, out=d2)
    near = 1.0 - np.minimum(np.sqrt(d2) / spread(dist), 1.0)
    index = (cy - 0.5).astype(np.int32) * width + (cx - 0.5).astype(np.int32)
    np.maximum.at(canvas, index, near)


def _border_map(
    shape: tuple[int, int], polygons: list[np.ndarray], distances: list[float]
) -> np.ndarray:
    """max over polygons of ``1 - min(d / D, 1)``, d the distance to the polygon's edges.

    Only pixels in each polygon's bounding box grown by D are visited (elsewhere the
    value is 0). Polygons are processed in batches of about ``_BATCH_PIXELS`` pixels: a
    loop per polygon spends its time in numpy call overhead, one pass over every pixel
    in page faults for its large temporaries.
    """
    h, w = shape
    canvas = np.zeros(h * w, np.float32)
    if not polygons:
        return canvas.reshape(h, w)
    boxes = []
    for poly, d in zip(polygons, distances, strict=True):
        x0, y0 = np.floor(poly.min(axis=0) - d).astype(np.int32)
        x1, y1 = np.ceil(poly.max(axis=0) + d).astype(np.int32)
        boxes.append((max(x0, 0), max(y0, 0), min(x1, w), min(y1, h)))
    box = np.asarray(boxes, dtype=np.int32)
    keep = (box[:, 2] > box[:, 0]) & (box[:, 3] > box[:, 1])
    # Polygons padded to the same vertex count by repeating their last vertex: the extra
    # zero-length edges are points already on the polygon, so the minimum is unchanged.
    n = max(len(p) for p in polygons)
    verts = np.stack([np.concatenate([p, np.repeat(p[-1:], n - len(p), 0)]) for p in polygons])
    verts = verts.astype(np.float32)[keep]  # (P, N, 2)
    vec = np.roll(verts, -1, axis=1) - verts
    len2 = (vec * vec).sum(axis=2, keepdims=True)
    inv = np.divide(1.0, len2, out=np.zeros_like(len2), where=len2 > 0)
    edges = np.concatenate([verts, vec, inv], axis=2)  # (P, N, 5)
    box = box[keep]
    dist = np.asarray(distances, dtype=np.float32)[keep]
    counts = (box[:, 2] - box[:, 0]).astype(np.int64) * (box[:, 3] - box[:, 1])
    start = 0
    while start < len(box):
        end = start + 1
        total = int(counts[start])
        while end < len(box) and total + counts[end] <= _BATCH_PIXELS:
            total += int(counts[end])
            end += 1
        _border_batch(canvas, w, edges[start:end], box[start:end], dist[start:end])
        start = end
    return canvas.reshape(h, w)


def make_db_maps(
    polygons: Sequence[np.ndarray],
    ignore: Sequence[bool] | np.ndarray,
    shape: tuple[int, int],
    *,
    shrink_ratio: float = 0.4,
    thresh_min: float = 0.3,
    thresh_max: float = 0.7,
    min_text_size: int = 3,
) -> DBMaps:
    """Compute the DB target maps of one image.

    Args:
        polygons: float (N, 2) ``(x, y)`` arrays in the map's pixel frame.
        ignore: per polygon, True for a don't-care region.
        shape: (height, width) of the maps.
        shrink_ratio: ``r`` in ``D = A (1 - r^2) / L``.
        thresh_min: threshold-map background and value at distance ``D`` from an edge.
        thresh_max: threshold-map value on a polygon edge.
        min_text_size: polygons with a shorter bounding-box side (pixels) are masked out.

    Returns:
        The four float32 (H, W) maps.
    """
    h, w = shape
    prob = np.zeros((h, w), np.float32)
    prob_mask = np.ones((h, w), np.float32)
    inside = np.zeros((h, w), np.float32)
    kept: list[np.ndarray] = []
    kept_distance: list[float] = []
    for poly, ign in zip(polygons, ignore, strict=True):
        poly = np.asarray(poly, dtype=np.float64)
        side = float(np.min(poly.max(axis=0) - poly.min(axis=0)))
        distance = shrink_distance(poly, shrink_ratio)
        shrunk = (
            [] if ign or side < min_text_size or distance <= 0 else offset_polygon(poly, -distance)
        )
        if not shrunk:
            _fill(prob_mask, [poly], 0.0)
            continue
        _fill(prob, shrunk, 1.0)
        _fill(inside, [poly], 1.0)
        kept.append(poly)
        kept_distance.append(distance)
    border = _border_map(shape, kept, kept_distance)
    # The polygon dilated by D (round joins) is the polygon plus every point closer than
    # D to its edges: taken from the distances, it is exact and mirror-symmetric, unlike
    # a rasterised pyclipper outline whose arcs depend on the traversal direction.
    # In place: every full-size temporary is a fresh allocation that page-faults.
    thresh_mask = inside
    thresh_mask[border > 0] = 1.0
    thresh = border
    thresh *= np.float32(thresh_max - thresh_min)
    thresh += np.float32(thresh_min)
    return DBMaps(prob=prob, prob_mask=prob_mask, thresh=thresh, thresh_mask=thresh_mask)


def pack(maps: DBMaps) -> tuple[np.ndarray, np.ndarray]:
    """Float maps -> the compact ``(gt, thresh)`` pair, both uint8 (H, W)."""
    gt = (maps.prob > 0.5).view(np.uint8)  # bool -> 0/1 without a copy; TEXT_BIT = 1
    gt |= (maps.prob_mask > 0.5).view(np.uint8) << 1  # PROB_MASK_BIT
    gt |= (maps.thresh_mask > 0.5).view(np.uint8) << 2  # THRESH_MASK_BIT
    scaled = maps.thresh * np.float32(THRESH_SCALE)
    np.clip(scaled, 0.0, THRESH_SCALE, out=scaled)
    np.rint(scaled, out=scaled)
    return gt, scaled.astype(np.uint8)


def background_fill(thresh_min: float) -> tuple[int, int]:
    """``(gt, thresh)`` values for areas outside the image: background that counts."""
    return PROB_MASK_BIT, round(thresh_min * THRESH_SCALE)


def _to_float(x: Any) -> Any:
    # numpy arrays and torch tensors (duck-typed: this module does not import torch).
    return x.astype(np.float32) if isinstance(x, np.ndarray) else x.float()


def unpack(gt: Any, thresh: Any) -> dict[str, Any]:
    """The compact pair -> float32 maps ``prob, prob_mask, thresh, thresh_mask``.

    Works on numpy arrays and on torch uint8 tensors of any shape, e.g. (B, 1, H, W);
    results have the input's type and shape.

    Example:
        >>> maps = unpack(batch["gt"], batch["thresh"])  # torch (B, 1, H, W) uint8
        >>> maps["prob"].dtype
        torch.float32
    """
    return {
        "prob": _to_float(gt & TEXT_BIT),
        "prob_mask": _to_float((gt & PROB_MASK_BIT) >> 1),
        "thresh": _to_float(thresh) / THRESH_SCALE,
        "thresh_mask": _to_float((gt & THRESH_MASK_BIT) >> 2),
    }
