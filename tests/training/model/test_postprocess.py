import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from shapely.geometry import Polygon, box

from training.model.postprocess import boxes_from_prob, unclip

DEFAULTS = {"bin_thresh": 0.3, "box_thresh": 0.5, "unclip_ratio": 1.5, "max_candidates": 100}


def _prob_with(*rects, value=1.0, shape=(200, 240)):
    prob = np.zeros(shape, np.float32)
    for x0, y0, x1, y1 in rects:
        prob[y0:y1, x0:x1] = value
    return prob


def test_one_rectangle_gives_one_box_grown_by_the_unclip_distance():
    # A 100x40 word at (50, 60) shrunk as the DB targets do (D = A (1 - 0.4^2) / L = 12 px)
    # and drawn like cv2.fillPoly, which fills the pixels whose centres are inside.
    prob = _prob_with((62, 72, 139, 89))
    polygons, scores = boxes_from_prob(prob, **DEFAULTS)
    assert len(polygons) == 1 and scores == [1.0]
    poly = polygons[0]
    assert poly.dtype == np.float32 and poly.shape == (4, 2)
    # The contour runs through the pixel centres, 76 x 16: D = 1216 * 1.5 / 184.
    d = 1216 * 1.5 / 184
    expected = [[62 - d, 72 - d], [138 + d, 72 - d], [138 + d, 88 + d], [62 - d, 88 + d]]
    np.testing.assert_allclose(poly, expected, atol=0.3)
    word = box(50, 60, 150, 100)
    detected = Polygon(poly)
    assert detected.intersection(word).area / detected.union(word).area > 0.84  # DBNet's r=1.5


def test_coordinates_are_mapped_back_to_the_original_frame():
    prob = _prob_with((62, 72, 139, 89))
    (canonical,), _ = boxes_from_prob(prob, **DEFAULTS)
    (original,), _ = boxes_from_prob(prob, **DEFAULTS, scale=0.5, orig_shape=(400, 480))
    np.testing.assert_allclose(original, canonical * 2, atol=1e-4)


def test_polygons_are_clipped_to_the_original_image():
    prob = _prob_with((0, 0, 60, 30), (200, 150, 240, 200))  # touching the borders
    polygons, _ = boxes_from_prob(prob, **DEFAULTS, scale=2.0, orig_shape=(95, 110))
    assert len(polygons) == 2
    for poly in polygons:
        assert poly[:, 0].min() >= 0 and poly[:, 0].max() <= 110
        assert poly[:, 1].min() >= 0 and poly[:, 1].max() <= 95
    assert max(p[:, 0].max() for p in polygons) == 110  # the right blob was cut by the clip


def test_two_separated_blobs_give_two_boxes():
    prob = _prob_with((20, 20, 80, 40), (120, 120, 200, 150))
    polygons, scores = boxes_from_prob(prob, **DEFAULTS)
    assert len(polygons) == 2 and len(scores) == 2
    centres = sorted(tuple(p.mean(axis=0)) for p in polygons)
    np.testing.assert_allclose(centres, [(49.5, 29.5), (159.5, 134.5)], atol=0.1)


def test_empty_map_gives_nothing():
    assert boxes_from_prob(np.zeros((64, 64), np.float32), **DEFAULTS) == ([], [])


def test_score_filter_and_minimum_size():
    weak = _prob_with((20, 20, 80, 40), value=0.4)  # above bin_thresh, below box_thresh
    assert boxes_from_prob(weak, **DEFAULTS) == ([], [])
    tiny = _prob_with((20, 20, 22, 22))  # 2x2: under min_size
    assert boxes_from_prob(tiny, **DEFAULTS) == ([], [])


def test_max_candidates_bounds_the_contours_examined():
    prob = _prob_with((20, 20, 80, 40), (120, 120, 200, 150))
    polygons, _ = boxes_from_prob(prob, **{**DEFAULTS, "max_candidates": 1})
    assert len(polygons) == 1


def test_polygon_mode_follows_a_non_rectangular_region():
    prob = _prob_with((20, 20, 120, 40), (20, 40, 40, 120))  # an L
    (poly,), _ = boxes_from_prob(prob, **DEFAULTS, polygon=True)
    assert len(poly) > 4
    region = Polygon(poly)
    assert region.contains(box(22, 22, 118, 38)) and region.contains(box(22, 42, 38, 118))
    assert not region.contains(box(60, 60, 100, 100))  # the empty corner of the L stays out


def test_rejects_bad_input():
    with pytest.raises(ValueError, match="2-D"):
        boxes_from_prob(np.zeros((1, 8, 8)), **DEFAULTS)
    with pytest.raises(ValueError, match="scale=0"):
        boxes_from_prob(np.zeros((8, 8)), **DEFAULTS, scale=0)


def test_unclip_of_a_degenerate_polygon_is_none():
    assert unclip(np.zeros((4, 2), np.float32), 1.5) is None


@settings(max_examples=40, deadline=None)
@given(
    rects=st.lists(
        st.tuples(st.integers(0, 90), st.integers(0, 70), st.integers(3, 40), st.integers(3, 30)),
        max_size=6,
    ),
    scale=st.sampled_from([0.5, 1.0, 1.6]),
)
def test_polygons_always_lie_inside_the_original_image(rects, scale):
    prob = _prob_with(*[(x, y, x + w, y + h) for x, y, w, h in rects], shape=(96, 128))
    orig_shape = (int(96 / scale) - 3, int(128 / scale) - 5)  # padding at the bottom/right
    polygons, scores = boxes_from_prob(prob, **DEFAULTS, scale=scale, orig_shape=orig_shape)
    assert len(polygons) == len(scores) <= len(rects)
    for poly, score in zip(polygons, scores, strict=True):
        assert poly.shape == (4, 2) and poly.dtype == np.float32
        assert (poly >= 0).all()
        assert (poly[:, 0] <= orig_shape[1]).all() and (poly[:, 1] <= orig_shape[0]).all()
        assert 0.5 <= score <= 1.0
