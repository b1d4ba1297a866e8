"""Probability map -> text polygons in the original image frame (numpy, OpenCV, pyclipper).

DBNet's inference path: binarise at ``bin_thresh``, take the contours, score each by
the mean probability inside it, drop those under ``box_thresh``, grow the survivors
back by the distance the targets were shrunk by (``D = A * unclip_ratio / L``), then
undo the canonical resize and clip to the original image.
"""

from __future__ import annotations

import cv2
import numpy as np
import pyclipper

# pyclipper works on integers: offset at 1/16 pixel so unclipping keeps sub-pixel detail.
_CLIPPER_SCALE = 16.0


def _min_area_box(points: np.ndarray) -> tuple[np.ndarray, float]:
    """Minimum-area rectangle of ``points`` as 4 corners (clockwise from the top-left
    in image coordinates) and its shorter side."""
    rect = cv2.minAreaRect(points.astype(np.float32))
    corners = cv2.boxPoints(rect)  # (4, 2)
    corners = corners[np.argsort(corners[:, 0], kind="stable")]
    left, right = corners[:2], corners[2:]
    top_left, bottom_left = left[np.argsort(left[:, 1], kind="stable")]
    top_right, bottom_right = right[np.argsort(right[:, 1], kind="stable")]
    box = np.stack([top_left, top_right, bottom_right, bottom_left])
    return box, float(min(rect[1]))


def _mean_inside(prob: np.ndarray, points: np.ndarray) -> float:
    """Mean of ``prob`` over the pixels inside the polygon ``points``."""
    h, w = prob.shape
    pts = np.round(points).astype(np.int32)
    x0, y0 = np.clip(pts.min(axis=0), 0, [w - 1, h - 1])
    x1, y1 = np.clip(pts.max(axis=0), 0, [w - 1, h - 1])
    mask = np.zeros((y1 - y0 + 1, x1 - x0 + 1), dtype=np.uint8)
    cv2.fillPoly(mask, [(pts - [x0, y0]).reshape(-1, 1, 2)], 1)
    return float(cv2.mean(prob[y0 : y1 + 1, x0 : x1 + 1], mask)[0])


def unclip(points: np.ndarray, ratio: float) -> np.ndarray | None:
    """Grow a polygon outward by ``D = area * ratio / perimeter`` (round joins).

    Returns:
        The largest resulting polygon ``(M, 2)`` float32, or ``None`` for a degenerate
        input (zero perimeter) or an empty result.
    """
    pts = points.astype(np.float32).reshape(-1, 2)
    area = abs(cv2.contourArea(pts))
    length = cv2.arcLength(pts.reshape(-1, 1, 2), True)
    if length <= 0:
        return None
    distance = area * ratio / length
    offset = pyclipper.PyclipperOffset()
    offset.ArcTolerance = 0.25 * _CLIPPER_SCALE
    offset.AddPath(
        np.round(pts * _CLIPPER_SCALE).astype(np.int64).tolist(),
        pyclipper.JT_ROUND,
        pyclipper.ET_CLOSEDPOLYGON,
    )
    paths = offset.Execute(distance * _CLIPPER_SCALE)
    if not paths:
        return None
    largest = max(paths, key=lambda p: abs(cv2.contourArea(np.asarray(p, dtype=np.float32))))
    return np.asarray(largest, dtype=np.float32) / _CLIPPER_SCALE


def boxes_from_prob(
    prob: np.ndarray,
    *,
    bin_thresh: float,
    box_thresh: float,
    unclip_ratio: float,
    max_candidates: int,
    scale: float = 1.0,
    orig_shape: tuple[int, int] | list[int] | None = None,
    min_size: float = 3.0,
    polygon: bool = False,
) -> tuple[list[np.ndarray], list[float]]:
    """Text regions of one probability map.

    Args:
        prob: ``(H, W)`` probabilities in the canonical frame (the network input).
        bin_thresh: pixels with ``prob > bin_thresh`` are text.
        box_thresh: keep a region when its mean probability is at least this.
        unclip_ratio: ``r`` in the unclip distance ``D = A * r / L``.
        max_candidates: at most this many contours are examined.
        scale: canonical = original * ``scale``; coordinates are divided by it.
        orig_shape: ``(h, w)`` of the original image to clip to; by default the
            canonical size divided by ``scale``.
        min_size: regions whose shorter side is under this (canonical pixels) are
            dropped, before and (plus 2) after unclipping, as in DBNet.
        polygon: return the unclipped polygon (simplified contour) instead of its
            minimum-area rectangle.

    Returns:
        ``(polygons, scores)``: float32 ``(N, 2)`` arrays of ``(x, y)`` in the original
        frame (4 points each unless ``polygon``) and their mean probabilities.

    Raises:
        ValueError: ``prob`` is not 2-D or ``scale`` is not positive.
    """
    if prob.ndim != 2:
        raise ValueError(f"prob of shape {prob.shape}: expected a 2-D (H, W) map")
    if scale <= 0:
        raise ValueError(f"scale={scale}: expected a positive number")
    prob = np.ascontiguousarray(prob, dtype=np.float32)
    h, w = prob.shape
    if orig_shape is None:
        orig_h, orig_w = h / scale, w / scale
    else:
        orig_h, orig_w = float(orig_shape[0]), float(orig_shape[1])

    bitmap = (prob > bin_thresh).astype(np.uint8)
    contours, _ = cv2.findContours(bitmap, cv2.RETR_LIST, cv2.CHAIN_APPROX_SIMPLE)
    polygons: list[np.ndarray] = []
    scores: list[float] = []
    for contour in contours[:max_candidates]:
        points = contour.reshape(-1, 2).astype(np.float32)
        box, short_side = _min_area_box(points)
        if short_side < min_size:
            continue
        score = _mean_inside(prob, points) if len(points) >= 3 else _mean_inside(prob, box)
        if score < box_thresh:
            continue
        if polygon:
            epsilon = 0.01 * cv2.arcLength(contour, True)
            shape = cv2.approxPolyDP(contour, epsilon, True).reshape(-1, 2).astype(np.float32)
            if len(shape) < 4:
                shape = box
        else:
            shape = box
        expanded = unclip(shape, unclip_ratio)
        if expanded is None or len(expanded) < 3:
            continue
        if polygon:
            if _min_area_box(expanded)[1] < min_size + 2:
                continue
            out = expanded
        else:
            out, short_side = _min_area_box(expanded)
            if short_side < min_size + 2:
                continue
        out = out / scale
        out[:, 0] = np.clip(out[:, 0], 0.0, orig_w)
        out[:, 1] = np.clip(out[:, 1], 0.0, orig_h)
        polygons.append(out.astype(np.float32))
        scores.append(score)
    return polygons, scores
