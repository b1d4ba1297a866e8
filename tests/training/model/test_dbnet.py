import pytest
import torch

from training.config import ModelConfig
from training.model import build_model

torch.manual_seed(0)


@pytest.mark.parametrize(
    ("backbone", "size"), [("mobilenet_small", (64, 96)), ("resnet18", (64, 64))]
)
def test_training_outputs_have_input_resolution(backbone, size):
    model = build_model(ModelConfig(backbone=backbone, neck_channels=32))
    out = model(torch.randn(2, 3, *size))
    assert set(out) == {"prob", "prob_logits", "thresh", "binary"}
    for name, t in out.items():
        assert t.shape == (2, 1, *size), name
        assert torch.isfinite(t).all(), name
    for name in ("prob", "thresh", "binary"):
        assert out[name].min() >= 0.0 and out[name].max() <= 1.0, name
    torch.testing.assert_close(out["prob"], torch.sigmoid(out["prob_logits"]))
    torch.testing.assert_close(out["binary"], torch.sigmoid(50.0 * (out["prob"] - out["thresh"])))


def test_eval_mode_skips_threshold_branch_unless_asked():
    model = build_model(ModelConfig(neck_channels=32)).eval()
    image = torch.randn(1, 3, 96, 160)
    with torch.no_grad():
        assert set(model(image)) == {"prob", "prob_logits"}
        full = model(image, with_thresh=True)
    assert full["thresh"].shape == (1, 1, 96, 160)


@pytest.mark.parametrize("shape", [(1, 3, 60, 64), (1, 3, 64, 100), (3, 64, 64)])
def test_rejects_sizes_that_are_not_multiples_of_32(shape):
    model = build_model(ModelConfig(neck_channels=32))
    with pytest.raises(ValueError, match="multiples of 32"):
        model(torch.zeros(shape))


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_forward_and_backward_under_cpu_autocast(dtype):
    model = build_model(ModelConfig(neck_channels=32))
    with torch.autocast("cpu", dtype=dtype):
        out = model(torch.randn(2, 3, 64, 64))
    assert out["binary"].dtype == torch.float32  # the steep sigmoid is never in half precision
    out["binary"].mean().backward()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)
