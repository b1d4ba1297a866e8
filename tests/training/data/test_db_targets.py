from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from training.data import db_targets as dbt
from training.data.db_targets import (
    PROB_MASK_BIT,
    TEXT_BIT,
    THRESH_MASK_BIT,
    DBMaps,
    background_fill,
    make_db_maps,
    pack,
    shrink_distance,
    unpack,
)

# A 100 x 40 rectangle at non-half-integer coordinates: no pixel centre on an edge.
RECT = np.array([[10.3, 20.2], [110.3, 20.2], [110.3, 60.2], [10.3, 60.2]], np.float32)
SHAPE = (100, 140)


def _maps(polys, ignore=None, shape=SHAPE, **kw) -> DBMaps:
    ignore = [False] * len(polys) if ignore is None else ignore
    return make_db_maps(polys, ignore, shape, **kw)


def test_shrink_distance_formula() -> None:
    # A = 4000, L = 280, r = 0.4: D = 4000 * 0.84 / 280 = 12.
    assert shrink_distance(RECT, 0.4) == pytest.approx(12.0, abs=1e-4)
    assert shrink_distance(np.zeros((4, 2)), 0.4) == 0.0


def test_rectangle_shrunk_area_matches_the_formula() -> None:
    m = _maps([RECT])
    d = 12.0  # shrunk rectangle: x in [22.3, 98.3], y in [32.2, 48.2]
    exact = (100 - 2 * d) * (40 - 2 * d)  # 76 x 16 = 1216 pixel centres inside
    rows, cols = np.nonzero(m.prob)
    # OpenCV's fill is inclusive at edges (rounds both ends of each span): at most one
    # extra column and row over the pixel centres strictly inside.
    assert exact <= m.prob.sum() <= (76 + 1) * (16 + 1)
    assert cols.min() in (21, 22) and cols.max() in (97, 98)
    assert rows.min() in (31, 32) and rows.max() in (47, 48)
    assert set(np.unique(m.prob)) == {0.0, 1.0}
    assert (m.prob_mask == 1).all()


def test_threshold_map_range_and_band() -> None:
    m = _maps([RECT], thresh_min=0.3, thresh_max=0.7)
    assert m.thresh.min() == pytest.approx(0.3) and m.thresh.max() <= 0.7 + 1e-6
    # Near the top edge (pixel centre 0.3 px away): 0.7 - 0.4 * 0.3 / 12 = 0.69.
    assert m.thresh[20, 60] == pytest.approx(0.7 - 0.4 * 0.3 / 12, abs=1e-4)
    # Centre of the text (20 px from the long edges, beyond D): background value.
    assert m.thresh[40, 60] == pytest.approx(0.3)
    assert m.thresh[0, 0] == pytest.approx(0.3)  # background far away
    # Mask covers the rectangle dilated by D = 12: y in [8.2, 72.2].
    assert m.thresh_mask[9, 60] == 1 and m.thresh_mask[73, 60] == 0
    assert m.thresh_mask[20:61, 10:111].all()


def _border_reference(poly: np.ndarray, shape, d: float) -> np.ndarray:
    """Per-pixel brute force: 1 - min(dist / D, 1) over the padded bounding box."""
    x0, y0 = np.floor(poly.min(axis=0) - d).astype(int)
    x1, y1 = np.ceil(poly.max(axis=0) + d).astype(int)
    out = np.zeros(shape, np.float64)
    for y in range(max(y0, 0), min(y1, shape[0])):
        for x in range(max(x0, 0), min(x1, shape[1])):
            p = np.array([x + 0.5, y + 0.5])
            best = np.inf
            for a, b in zip(poly, np.roll(poly, -1, axis=0), strict=True):
                t = np.clip(np.dot(p - a, b - a) / np.dot(b - a, b - a), 0, 1)
                best = min(best, np.linalg.norm(p - (a + t * (b - a))))
            out[y, x] = 1 - min(best / d, 1)
    return out


def test_threshold_map_matches_brute_force() -> None:
    poly = np.array([[5.2, 7.9], [30.6, 4.1], [34.3, 20.7], [12.8, 25.4], [3.1, 16.0]])
    shape = (32, 40)
    m = _maps([poly], shape=shape)
    d = shrink_distance(poly, 0.4)
    ref = _border_reference(poly, shape, d) * 0.4 + 0.3
    np.testing.assert_allclose(m.thresh, ref, atol=2e-5)


def test_ignored_and_tiny_polygons_are_masked_out() -> None:
    tiny = np.array([[120, 80], [135, 80], [135, 82], [120, 82]], np.float32)  # 2 px tall
    m = _maps([RECT, tiny], ignore=[True, False], min_text_size=3)
    assert m.prob.sum() == 0
    assert m.prob_mask[30:50, 20:100].max() == 0  # the don't-care rectangle
    assert m.prob_mask[81, 125] == 0  # too small to learn from
    assert m.prob_mask[5, 5] == 1
    assert m.thresh_mask.sum() == 0 and np.allclose(m.thresh, 0.3)


def test_polygon_without_a_shrink_is_masked_out() -> None:
    # A self-intersecting "bow tie": its signed area cancels to 0, so D = 0 and there is
    # no shrunk region to learn from (convex polygons always keep one: D < inradius).
    bowtie = np.array([[10, 10], [50, 30], [50, 10], [10, 30]], np.float32)
    m = _maps([bowtie], min_text_size=0)
    assert m.prob.sum() == 0 and m.prob_mask[12, 12] == 0 and m.thresh_mask.sum() == 0


def test_polygon_partly_outside_is_clipped() -> None:
    poly = np.array([[-20, -10], [50, -10], [50, 30], [-20, 30]], np.float32)
    m = _maps([poly], shape=(40, 40))
    assert m.prob[5, 5] == 1 and m.thresh.shape == (40, 40)
    assert m.thresh.min() >= 0.3 - 1e-6 and m.thresh.max() <= 0.7 + 1e-6


def _flip(polys: list[np.ndarray], width: int) -> list[np.ndarray]:
    return [(np.array([[width, 0]]) + p * [-1, 1])[::-1] for p in polys]


def test_maps_of_flipped_rectangles_equal_flipped_maps_exactly() -> None:
    third = np.array([[70.6, 3.3], [131.2, 3.3], [131.2, 15.9], [70.6, 15.9]])
    rects = [RECT, np.add(RECT, [5.1, 30.4]), third]
    m, mf = _maps(rects), _maps(_flip(rects, SHAPE[1]))
    np.testing.assert_array_equal(mf.prob, m.prob[:, ::-1])
    np.testing.assert_array_equal(mf.prob_mask, m.prob_mask[:, ::-1])
    np.testing.assert_allclose(mf.thresh, m.thresh[:, ::-1], atol=1e-5)
    np.testing.assert_array_equal(mf.thresh_mask, m.thresh_mask[:, ::-1])


def test_maps_of_flipped_quads_equal_flipped_maps_up_to_edge_pixels() -> None:
    rng = np.random.default_rng(0)
    polys = []
    for _ in range(6):
        x, y = rng.uniform(5, 100), rng.uniform(5, 70)
        w, h = rng.uniform(10, 30), rng.uniform(6, 14)
        polys.append(np.array([[x, y], [x + w, y + 2], [x + w, y + h], [x, y + h - 1]]))
    m, mf = _maps(polys), _maps(_flip(polys, SHAPE[1]))
    # Slanted edges are rasterised with rounding: a few pixels on region boundaries
    # may differ, nothing inside.
    for a, b in ((mf.prob, m.prob[:, ::-1]), (mf.thresh_mask, m.thresh_mask[:, ::-1])):
        diff = a != b
        assert diff.sum() <= 0.02 * max(a.sum(), 1)
        eroded = cv2.erode(b.astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool)
        assert not (diff & eroded).any()
    np.testing.assert_array_equal(mf.prob_mask, m.prob_mask[:, ::-1])
    np.testing.assert_allclose(mf.thresh, m.thresh[:, ::-1], atol=1e-5)


def test_pack_unpack_round_trip_numpy_and_torch() -> None:
    m = _maps([RECT], ignore=[False])
    m = DBMaps(m.prob, m.prob_mask * (np.arange(SHAPE[1]) % 3 > 0), m.thresh, m.thresh_mask)
    gt, thresh = pack(m)
    assert gt.dtype == np.uint8 and thresh.dtype == np.uint8 and gt.shape == SHAPE
    assert gt.max() <= TEXT_BIT | PROB_MASK_BIT | THRESH_MASK_BIT
    back = unpack(gt, thresh)
    for key, ref in (("prob", m.prob), ("prob_mask", m.prob_mask), ("thresh_mask", m.thresh_mask)):
        assert back[key].dtype == np.float32
        np.testing.assert_array_equal(back[key], ref)
    np.testing.assert_allclose(back["thresh"], m.thresh, atol=0.5 / 255 + 1e-7)
    tb = unpack(torch.from_numpy(gt)[None, None], torch.from_numpy(thresh)[None, None])
    assert tb["prob"].dtype == torch.float32 and tb["prob"].shape == (1, 1, *SHAPE)
    for key in back:
        np.testing.assert_array_equal(tb[key][0, 0].numpy(), back[key])
    assert background_fill(0.3) == (PROB_MASK_BIT, 76)


def test_model_side_decoder_agrees() -> None:
    loss = pytest.importorskip("training.model.loss")
    gt, thresh = pack(_maps([RECT]))
    gt_t, thresh_t = torch.from_numpy(gt)[None, None], torch.from_numpy(thresh)[None, None]
    ours = unpack(gt_t, thresh_t)
    theirs = loss.unpack_targets(gt_t, thresh_t)
    torch.testing.assert_close(theirs["text"], ours["prob"])
    torch.testing.assert_close(theirs["prob_mask"], ours["prob_mask"])
    torch.testing.assert_close(theirs["thresh_mask"], ours["thresh_mask"])
    torch.testing.assert_close(theirs["thresh_map"], ours["thresh"])


_quad = st.tuples(
    st.floats(0, 120), st.floats(0, 80), st.floats(1, 60), st.floats(1, 30), st.floats(-0.4, 0.4)
)


@settings(max_examples=40, deadline=None)
@given(quads=st.lists(_quad, max_size=8), ignore=st.lists(st.booleans(), min_size=8, max_size=8))
def test_map_invariants(quads, ignore) -> None:
    polys = []
    for x, y, w, h, skew in quads:
        polys.append(np.array([[x, y], [x + w, y + skew * h], [x + w, y + h], [x, y + h]]))
    m = _maps(polys, ignore[: len(polys)])
    for arr in (m.prob, m.prob_mask, m.thresh_mask):
        assert arr.dtype == np.float32 and arr.shape == SHAPE
        assert set(np.unique(arr)) <= {0.0, 1.0}
    assert m.thresh.min() >= 0.3 - 1e-6 and m.thresh.max() <= 0.7 + 1e-6
    assert not (m.prob.astype(bool) & ~m.thresh_mask.astype(bool)).any()  # text inside band
    gt, thresh = pack(m)
    back = unpack(gt, thresh)
    np.testing.assert_array_equal(back["prob"], m.prob)


def test_border_batches_cover_large_polygons() -> None:
    # One polygon larger than a batch and many small ones: the batched computation must
    # equal the maximum of each polygon's map computed alone.
    big = np.array([[2.5, 2.5], [300.5, 2.5], [300.5, 150.5], [2.5, 150.5]])
    small = [
        np.array([[x, 170.0], [x + 20, 170], [x + 20, 185], [x, 185]]) for x in range(5, 280, 25)
    ]
    shape = (200, 320)
    assert dbt._BATCH_PIXELS < 300 * 150 < (len(small) + 1) * dbt._BATCH_PIXELS
    together = _maps([big, *small], shape=shape)
    alone = np.max([_maps([p], shape=shape).thresh for p in [big, *small]], axis=0)
    np.testing.assert_allclose(together.thresh, alone, atol=1e-6)
    assert together.thresh[170, 15] > 0.6
