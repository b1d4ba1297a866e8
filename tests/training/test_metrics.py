import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from training.metrics import HmeanAccumulator, evaluate_hmean, hmean_from_counts, match_image


def rect(x0, y0, x1, y1):
    return np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]], np.float32)


WORD = rect(0, 0, 100, 10)


def test_perfect_detection():
    gts = [WORD, rect(0, 20, 50, 30), rect(60, 20, 90, 40)]
    result = evaluate_hmean([gts], [gts])
    assert result == {
        "precision": 1.0,
        "recall": 1.0,
        "hmean": 1.0,
        "matched": 3,
        "n_gt": 3,
        "n_det": 3,
    }


@pytest.mark.parametrize(("shift", "matched"), [(33, 1), (34, 0)])
def test_shifted_detection_matches_only_above_half_iou(shift, matched):
    # IoU = (100 - s) / (100 + s): 0.504 at s = 33, 0.493 at s = 34.
    assert match_image([WORD + np.float32([shift, 0])], [WORD]).matched == matched


def test_iou_of_exactly_one_half_does_not_match():
    assert match_image([rect(0, 0, 50, 10)], [WORD]).matched == 0  # the official rule is ">"


@pytest.mark.parametrize("gap", [0, 10])
def test_split_detection_matches_nothing(gap):
    halves = [rect(0, 0, 50 - gap / 2, 10), rect(50 + gap / 2, 0, 100, 10)]
    result = evaluate_hmean([halves], [[WORD]])
    assert result["matched"] == 0 and result["n_det"] == 2 and result["hmean"] == 0.0


@pytest.mark.parametrize(("first", "matched"), [(45, 0), (70, 1)])
def test_merged_detection_matches_at_most_one(first, matched):
    gts = [rect(0, 0, first, 10), rect(first + 10, 0, 100, 10)]  # IoUs 0.45/0.45 or 0.7/0.2
    result = match_image([WORD], gts)
    assert result.matched == matched and result.n_gt == 2 and result.n_det == 1


def test_empty_predictions():
    result = evaluate_hmean([[]], [[WORD]])
    assert (result["precision"], result["recall"], result["hmean"]) == (0.0, 0.0, 0.0)
    assert result["n_gt"] == 1 and result["n_det"] == 0


def test_empty_ground_truth():
    result = evaluate_hmean([[WORD]], [[]])
    assert result["hmean"] == 0.0 and result["n_det"] == 1 and result["n_gt"] == 0


def test_all_dont_care():
    gts = [WORD, rect(0, 20, 50, 30)]
    ignore = np.array([True, True])
    # Detections on don't-care regions are dropped; they are neither hits nor misses.
    on_dont_care = match_image(gts, gts, ignore)
    assert (on_dont_care.matched, on_dont_care.n_gt, on_dont_care.n_det) == (0, 0, 0)
    elsewhere = match_image([rect(200, 200, 240, 220)], gts, ignore)
    assert (elsewhere.n_gt, elsewhere.n_det) == (0, 1)  # still a false positive


@pytest.mark.parametrize(("inside", "kept"), [(50, 1), (60, 0)])
def test_detection_discarded_when_mostly_inside_a_dont_care_region(inside, kept):
    det = rect(100 - inside, 0, 200 - inside, 10)  # `inside` % of it lies on the don't-care word
    result = match_image([det], [WORD], np.array([True]))
    assert result.n_det == kept


def test_dont_care_does_not_hide_a_real_match():
    gts = [WORD, rect(0, 20, 100, 30)]
    result = match_image([WORD], gts, np.array([False, True]))
    assert (result.matched, result.n_gt, result.n_det) == (1, 1, 1)


def test_totals_are_summed_over_the_dataset_not_averaged():
    acc = HmeanAccumulator()
    acc.update([WORD], [WORD])
    acc.update([], [rect(0, 0, 10, 10), rect(20, 0, 30, 10), rect(40, 0, 50, 10)])
    result = acc.compute()
    assert result["recall"] == 0.25  # per-image average would be 0.5
    assert result["precision"] == 1.0
    assert result["hmean"] == pytest.approx(0.4)
    acc.reset()
    assert acc.compute()["n_gt"] == 0


def test_invalid_and_degenerate_polygons_do_not_crash():
    bowtie = np.array([[0, 0], [100, 10], [100, 0], [0, 10]], np.float32)
    two_points = np.array([[0, 0], [5, 5]], np.float32)
    result = match_image([bowtie, two_points], [WORD])
    assert result.n_det == 2 and result.matched == 0
    assert match_image([WORD], [bowtie]).n_gt == 1


def test_mismatched_lengths_are_rejected():
    with pytest.raises(ValueError, match="1 flags for 2"):
        match_image([], [WORD, WORD], np.array([False]))
    with pytest.raises(ValueError, match="one of each per image"):
        evaluate_hmean([[]], [[], []])


def test_hmean_from_counts():
    assert hmean_from_counts(0, 0, 0)["hmean"] == 0.0
    assert hmean_from_counts(3, 4, 6)["hmean"] == pytest.approx(2 * 0.5 * 0.75 / 1.25)


_box = st.tuples(st.floats(0, 90), st.floats(0, 90), st.floats(1, 40), st.floats(1, 20)).map(
    lambda t: rect(t[0], t[1], t[0] + t[2], t[1] + t[3])
)


@settings(max_examples=60, deadline=None)
@given(
    images=st.lists(
        st.tuples(st.lists(_box, max_size=6), st.lists(_box, max_size=6)), min_size=1, max_size=3
    ),
    flags=st.lists(st.booleans(), min_size=6, max_size=6),
)
def test_scores_are_bounded(images, flags):
    acc = HmeanAccumulator()
    for preds, gts in images:
        counts = acc.update(preds, gts, np.array(flags[: len(gts)], bool))
        assert 0 <= counts.matched <= min(counts.n_gt, counts.n_det)
    result = acc.compute()
    for key in ("precision", "recall", "hmean"):
        assert 0.0 <= result[key] <= 1.0


@settings(max_examples=60, deadline=None)
@given(
    cells=st.lists(st.booleans(), min_size=9, max_size=9),
    preds=st.lists(_box, max_size=8),
    seed=st.integers(0, 2**16),
)
def test_order_of_polygons_does_not_matter(cells, preds, seed):
    # Disjoint ground truths on a grid (as real words are); detections anywhere, overlapping.
    gts = [
        rect(35 * (i % 3), 35 * (i // 3), 35 * (i % 3) + 30, 35 * (i // 3) + 30) for i in range(9)
    ]
    ignore = np.array(cells)
    rng = np.random.default_rng(seed)
    gt_order, pred_order = rng.permutation(len(gts)), rng.permutation(len(preds))
    before = match_image(preds, gts, ignore)
    after = match_image(
        [preds[i] for i in pred_order], [gts[i] for i in gt_order], ignore[gt_order]
    )
    assert before == after
