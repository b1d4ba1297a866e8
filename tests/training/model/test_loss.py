import pytest
import torch
import torch.nn.functional as F

from training.model.loss import DBLoss, balanced_bce_with_logits, dice_loss, unpack_targets


def _targets(size=16):
    """A 4x6 text block, prob mask everywhere but the last row, border band around the block."""
    gt = torch.full((2, 1, size, size), 2, dtype=torch.uint8)
    gt[:, :, -1, :] = 0  # don't care
    gt[:, :, 6:10, 5:11] |= 1
    band = torch.zeros(size, size, dtype=torch.bool)
    band[4:12, 3:13] = True
    band[7:9, 7:9] = False
    gt[:, :, band] |= 4
    thresh = torch.full((2, 1, size, size), 77, dtype=torch.uint8)
    thresh[:, :, band] = 178
    return gt, thresh


def _perfect(gt, thresh):
    t = unpack_targets(gt, thresh)
    return {
        "prob_logits": (t["text"] * 2 - 1) * 30.0,
        "thresh": t["thresh_map"].clone(),
        "binary": t["text"].clone(),
    }


def test_unpack_targets_decodes_each_bit():
    gt = torch.tensor([0, 1, 2, 3, 4, 7], dtype=torch.uint8).view(1, 1, 1, 6)
    thresh = torch.tensor([0, 77, 128, 178, 255, 255], dtype=torch.uint8).view(1, 1, 1, 6)
    t = unpack_targets(gt, thresh)
    assert t["text"].flatten().tolist() == [0, 1, 0, 1, 0, 1]
    assert t["prob_mask"].flatten().tolist() == [0, 0, 1, 1, 0, 1]
    assert t["thresh_mask"].flatten().tolist() == [0, 0, 0, 0, 1, 1]
    torch.testing.assert_close(t["thresh_map"].flatten()[:2], torch.tensor([0.0, 77 / 255]))
    assert all(v.dtype == torch.float32 for v in t.values())


def test_unpack_targets_rejects_float_targets():
    with pytest.raises(TypeError, match=r"'gt'.*uint8"):
        unpack_targets(torch.zeros(1, 1, 2, 2), torch.zeros(1, 1, 2, 2, dtype=torch.uint8))


def test_perfect_prediction_costs_almost_nothing():
    gt, thresh = _targets()
    losses = DBLoss()(_perfect(gt, thresh), gt, thresh)
    assert set(losses) == {"loss", "loss_prob", "loss_thresh", "loss_binary"}
    assert losses["loss"].item() < 1e-4
    assert losses["loss_thresh"].item() == 0.0


def test_total_is_five_ten_one_weighting():
    gt, thresh = _targets()
    perfect = _perfect(gt, thresh)
    preds = {k: (v + 0.1 * torch.randn_like(v)).clamp(0, 1) for k, v in perfect.items()}
    preds["prob_logits"] = torch.randn_like(preds["prob_logits"])
    losses = DBLoss()(preds, gt, thresh)
    expected = 5 * losses["loss_prob"] + 10 * losses["loss_thresh"] + losses["loss_binary"]
    torch.testing.assert_close(losses["loss"], expected)
    assert min(losses[k].item() for k in losses) > 0


def test_hard_negative_mining_keeps_three_negatives_per_positive():
    target = torch.zeros(1, 1, 1, 20)
    target[..., :2] = 1  # 2 positives -> 6 negatives kept out of 17 counted
    mask = torch.ones_like(target)
    mask[..., -1] = 0  # masked pixel with the worst loss of all: must not count
    logits = torch.full_like(target, 30.0)
    logits[..., :2] = 2.0  # positives: small loss, non-zero gradient
    logits[..., 2:19] = torch.linspace(-3.0, 3.0, 17)  # negatives: increasing loss
    per_pixel = F.binary_cross_entropy_with_logits(logits, target, reduction="none").flatten()
    expected = (per_pixel[:2].sum() + per_pixel[2:19].topk(6).values.sum()) / 8
    got = balanced_bce_with_logits(logits, target, mask)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)

    logits.requires_grad_(True)
    balanced_bce_with_logits(logits, target, mask).backward()
    assert int((logits.grad != 0).sum()) == 2 + 6  # positives plus the 6 hardest negatives
    assert logits.grad.flatten()[-1] == 0


def test_mining_uses_every_negative_when_there_are_few():
    target = torch.tensor([1.0, 1.0, 1.0, 0.0]).view(1, 1, 1, 4)
    logits = torch.tensor([0.0, 0.0, 0.0, 0.0]).view(1, 1, 1, 4)
    got = balanced_bce_with_logits(logits, target, torch.ones_like(target))
    torch.testing.assert_close(got, torch.tensor(0.6931472), rtol=1e-5, atol=1e-6)


def test_no_positive_pixel_gives_zero_probability_loss():
    target = torch.zeros(1, 1, 4, 4)
    assert balanced_bce_with_logits(torch.randn(1, 1, 4, 4), target, torch.ones_like(target)) == 0


def test_threshold_loss_only_inside_the_border_band():
    gt, thresh = _targets()
    preds = _perfect(gt, thresh)
    band = unpack_targets(gt, thresh)["thresh_mask"].bool()
    preds["thresh"][~band] = 0.99  # outside the band: free
    assert DBLoss()(preds, gt, thresh)["loss_thresh"].item() == 0.0
    preds["thresh"][band] += 0.1
    torch.testing.assert_close(DBLoss()(preds, gt, thresh)["loss_thresh"], torch.tensor(0.1))


def test_dice_ignores_masked_pixels():
    target = torch.tensor([1.0, 0.0, 0.0]).view(1, 1, 1, 3)
    pred = torch.tensor([1.0, 0.0, 1.0]).view(1, 1, 1, 3)
    mask = torch.tensor([1.0, 1.0, 0.0]).view(1, 1, 1, 3)
    assert dice_loss(pred, target, mask).item() == pytest.approx(0.0, abs=1e-6)
    assert dice_loss(pred, target, torch.ones_like(mask)).item() == pytest.approx(1 / 3, abs=1e-6)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_predictions_give_a_finite_float32_loss(dtype):
    gt, thresh = _targets()
    preds = _perfect(gt, thresh)
    preds["prob_logits"] = preds["prob_logits"] * 100  # +-3000: overflows fp16's exp
    preds = {k: v.to(dtype).requires_grad_(True) for k, v in preds.items()}
    with torch.autocast("cpu", dtype=dtype):
        losses = DBLoss()(preds, gt, thresh)
    assert all(v.dtype == torch.float32 and torch.isfinite(v) for v in losses.values())
    losses["loss"].backward()
    assert all(torch.isfinite(p.grad).all() for p in preds.values())


def test_gradients_reach_all_three_maps():
    gt, thresh = _targets()
    preds = {k: torch.rand_like(v).requires_grad_(True) for k, v in _perfect(gt, thresh).items()}
    DBLoss()(preds, gt, thresh)["loss"].backward()
    for name, p in preds.items():
        assert p.grad.abs().sum() > 0, name
        assert p.grad[:, :, -1, :].abs().sum() == 0 or name == "thresh", name  # don't-care row
