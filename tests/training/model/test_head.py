import torch

from training.model.head import DBHead

torch.manual_seed(0)


def test_maps_have_four_times_the_feature_resolution():
    head = DBHead(32)
    out = head(torch.randn(2, 32, 8, 12))
    for name in ("prob_logits", "prob", "thresh", "binary"):
        assert out[name].shape == (2, 1, 32, 48), name


def test_uniform_features_give_a_uniform_map_without_a_tile_pattern():
    # A 2x2 stride-2 transposed conv maps each feature pixel to its own 4x4 tile with
    # one fixed pattern: uniform features came out as a checkerboard, and the head
    # could not place thin text lines inside a tile. Upsampling then convolving keeps
    # a uniform input uniform (away from the zero-padded border).
    head = DBHead(32).eval()
    features = torch.randn(1, 32, 1, 1).expand(1, 32, 12, 12)
    with torch.no_grad():
        out = head(features)
    for name in ("prob_logits", "thresh"):
        interior = out[name][0, 0, 12:-12, 12:-12]  # 3 feature pixels from each border
        assert interior.std() < 1e-4 * (1.0 + interior.abs().mean()), name


def test_gradients_reach_both_branches():
    head = DBHead(16)
    features = torch.randn(2, 16, 4, 4, requires_grad=True)
    out = head(features)
    (out["prob_logits"].mean() + out["binary"].mean()).backward()
    assert features.grad is not None and features.grad.abs().sum() > 0
    for name, p in head.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
