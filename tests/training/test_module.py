import itertools
import math

import numpy as np
import pytest
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader

from training.config import ModelConfig, OptimConfig
from training.metrics import HmeanAccumulator
from training.model.loss import unpack_targets
from training.module import IMAGENET_MEAN, IMAGENET_STD, DBNetModule, lr_factor

SIZE = 64


@pytest.fixture(autouse=True)
def _one_torch_thread():
    """Small tensors: one intra-op thread (see tests/training/model/conftest.py for why)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def make_sample(seed: int, scale: float = 1.0) -> dict:
    """One canonical sample in the collate format: a bright word on a dark background.

    The word is shrunk by DBNet's distance ``A (1 - 0.4^2) / L`` for the text bit and
    surrounded by a border band (threshold mask); the ground-truth polygon is given
    in the original frame (canonical / ``scale``).
    """
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 50, (3, SIZE, SIZE), dtype=np.uint8)
    w, h = int(rng.integers(24, 36)), int(rng.integers(12, 18))
    x0, y0 = int(rng.integers(4, SIZE - w - 4)), int(rng.integers(4, SIZE - h - 4))
    image[:, y0 : y0 + h, x0 : x0 + w] = 220
    d = round(w * h * (1 - 0.4**2) / (2 * (w + h)))
    gt = np.full((1, SIZE, SIZE), 2, np.uint8)  # probability mask everywhere
    gt[0, y0 + d : y0 + h - d, x0 + d : x0 + w - d] |= 1
    band = np.zeros((SIZE, SIZE), bool)
    band[max(0, y0 - d) : y0 + h + d, max(0, x0 - d) : x0 + w + d] = True
    band[y0 + d : y0 + h - d, x0 + d : x0 + w - d] = False
    gt[0][band] |= 4
    thresh = np.full((1, SIZE, SIZE), round(0.3 * 255), np.uint8)
    thresh[0][band] = round(0.7 * 255)
    word = np.array([[x0, y0], [x0 + w, y0], [x0 + w, y0 + h], [x0, y0 + h]], np.float32)
    return {
        "image": torch.from_numpy(image),
        "gt": torch.from_numpy(gt),
        "thresh": torch.from_numpy(thresh),
        "polygons": [word / scale],
        "ignore": np.zeros(1, bool),
        "meta": {
            "file": f"img_{seed}.jpg",
            "scale": scale,
            "orig_shape": [int(SIZE / scale) - 3, int(SIZE / scale)],  # bottom rows padded
        },
    }


def collate(samples: list[dict]) -> dict:
    batch = {k: torch.stack([s[k] for s in samples]) for k in ("image", "gt", "thresh")}
    batch.update({k: [s[k] for s in samples] for k in ("polygons", "ignore", "meta")})
    return batch


def small_module(**optim) -> DBNetModule:
    return DBNetModule(
        ModelConfig(backbone="mobilenet_small", neck_channels=32), OptimConfig(**optim)
    )


def test_image_is_normalised_on_the_device_side_hook():
    module = small_module()
    batch = module.on_after_batch_transfer(collate([make_sample(0)]), 0)
    image = batch["image"]
    assert image.dtype == torch.float32 and image.shape == (1, 3, SIZE, SIZE)
    raw = make_sample(0)["image"].float() / 255
    mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(3, 1, 1)
    torch.testing.assert_close(image[0], (raw - mean) / std)
    assert batch["gt"].dtype == torch.uint8 and batch["thresh"].dtype == torch.uint8


def test_float_images_are_refused():
    batch = collate([make_sample(0)])
    batch["image"] = batch["image"].float()
    with pytest.raises(TypeError, match="uint8"):
        small_module().on_after_batch_transfer(batch, 0)


def test_overfits_one_batch():
    torch.manual_seed(0)
    module = small_module()
    batch = module.on_after_batch_transfer(collate([make_sample(0), make_sample(1)]), 0)
    optimizer = torch.optim.Adam(module.parameters(), lr=3e-3)
    losses = []
    for _ in range(30):
        out = module(batch["image"], with_thresh=True)
        loss = module.loss(out, batch["gt"], batch["thresh"])["loss"]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert all(math.isfinite(v) for v in losses)
    assert np.mean(losses[-5:]) < 0.5 * losses[0]


def test_postprocess_maps_a_perfect_map_onto_the_original_frame():
    samples = [make_sample(seed, scale=0.5) for seed in range(4)]
    batch = collate(samples)
    prob = unpack_targets(batch["gt"], batch["thresh"])["text"]  # (B, 1, H, W): the answer
    acc = HmeanAccumulator()
    for (polygons, scores), sample in zip(
        small_module().postprocess(prob, batch["meta"]), samples, strict=True
    ):
        assert scores == [1.0]
        h, w = sample["meta"]["orig_shape"]
        assert all(
            (p >= 0).all() and (p[:, 0] <= w).all() and (p[:, 1] <= h).all() for p in polygons
        )
        acc.update(polygons, sample["polygons"], sample["ignore"])
    assert acc.compute()["hmean"] == 1.0


class _RecordBatches(pl.Callback):
    def __init__(self):
        self.dtypes = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.dtypes.append(batch["image"].dtype)


def test_lightning_fit_validate_predict_and_reload(tmp_path):
    pl.seed_everything(0, verbose=False)
    module = small_module(warmup_steps=2)
    train = DataLoader([make_sample(i) for i in range(4)], batch_size=2, collate_fn=collate)
    val = DataLoader(
        [make_sample(10 + i, scale=0.5) for i in range(2)], batch_size=2, collate_fn=collate
    )
    recorder = _RecordBatches()
    trainer = pl.Trainer(
        max_epochs=2,
        accelerator="cpu",
        precision="bf16-mixed",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[recorder],
    )
    trainer.fit(module, train, val)
    assert recorder.dtypes == [torch.float32] * 4
    for key in ("train/loss", "train/loss_prob", "train/loss_thresh", "train/loss_binary"):
        assert math.isfinite(trainer.callback_metrics[key].item()), key

    # The schedule is stepped per optimizer step: 4 steps done, warmup 2, cosine over 4.
    config = trainer.lr_scheduler_configs[0]
    assert config.interval == "step"
    lr = trainer.optimizers[0].param_groups[0]["lr"]
    assert lr == pytest.approx(2e-3 * lr_factor(4, warmup_steps=2, total_steps=4, min_ratio=0.05))

    (metrics,) = trainer.validate(module, val, verbose=False)
    assert 0.0 <= metrics["val/hmean"] <= 1.0
    for key in ("val/precision", "val/recall"):
        assert 0.0 <= metrics[key] <= 1.0
    assert math.isfinite(metrics["val/loss"])

    (predictions,) = trainer.predict(module, val)
    assert [p["file"] for p in predictions] == ["img_10.jpg", "img_11.jpg"]
    for p in predictions:
        assert len(p["polygons"]) == len(p["scores"])

    path = tmp_path / "last.ckpt"
    trainer.save_checkpoint(path)
    reloaded = DBNetModule.load_from_checkpoint(path)
    assert reloaded.hparams["model_cfg"] == module.model_cfg.model_dump(mode="json")
    image = module.on_after_batch_transfer(collate([make_sample(0)]), 0)["image"]
    module.eval()
    reloaded.eval()
    with torch.no_grad():
        torch.testing.assert_close(reloaded(image)["prob"], module(image)["prob"])


def test_learning_rate_schedule():
    def f(step):
        return lr_factor(step, warmup_steps=10, total_steps=110, min_ratio=0.1)

    assert [f(s) for s in (0, 4, 9)] == pytest.approx([0.1, 0.5, 1.0])
    assert f(60) == pytest.approx(0.55)  # halfway down the cosine
    assert f(110) == pytest.approx(0.1) and f(500) == pytest.approx(0.1)
    decay = [f(s) for s in range(10, 111)]
    assert all(a >= b for a, b in itertools.pairwise(decay))
    assert lr_factor(0, warmup_steps=0, total_steps=5, min_ratio=0.0) == 1.0
    assert lr_factor(99, warmup_steps=2, total_steps=math.inf, min_ratio=0.1) == 1.0


def test_hyperparameters_are_plain_dicts():
    module = DBNetModule({"backbone": "mobilenet_small"}, {"lr": 1e-3}, channels_last=True)
    assert module.hparams["model_cfg"]["backbone"] == "mobilenet_small"
    assert module.hparams["optim_cfg"]["lr"] == 1e-3
    assert module.hparams["channels_last"] is True
    assert all(type(v) in (dict, bool) for v in module.hparams.values())


class _RecordingAugment:
    """The real device augment, recording where it was called from."""

    def __init__(self) -> None:
        from training.config import AugmentConfig
        from training.data.device_augment import DeviceAugment

        self.inner = DeviceAugment(
            AugmentConfig(hflip_p=1.0, affine_p=0.0, color_jitter_p=0.0), 0.3, seed=0
        )
        self.calls: list[tuple[int, int, int, torch.dtype]] = []
        self.images: list[torch.Tensor] = []

    def __call__(self, batch, *, epoch, batch_idx, rank):
        self.calls.append((epoch, batch_idx, rank, batch["image"].dtype))
        out = self.inner(batch, epoch=epoch, batch_idx=batch_idx, rank=rank)
        self.images.append(out["image"].clone())
        return out


def test_device_augment_runs_on_training_batches_before_normalisation():
    pl.seed_everything(0, verbose=False)
    augment = _RecordingAugment()
    module = DBNetModule(
        ModelConfig(backbone="mobilenet_small", neck_channels=16), OptimConfig(), augment=augment
    )
    samples = [make_sample(i) for i in range(4)]
    train = DataLoader(samples, batch_size=2, collate_fn=collate)
    val = DataLoader([make_sample(10)], batch_size=1, collate_fn=collate)
    trainer = pl.Trainer(
        max_epochs=2,
        accelerator="cpu",
        precision="32-true",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(module, train, val)
    # Training batches only (not the sanity check nor validation), seeded per epoch and
    # batch, and still uint8: the module normalises after the augmentation.
    assert augment.calls == [(e, k, 0, torch.uint8) for e in (0, 1) for k in (0, 1)]
    first = collate(samples[:2])["image"]
    assert torch.equal(augment.images[0], first.flip(-1))  # hflip_p=1
    # Without an augment (inference, or the CPU suffix), the hook only normalises.
    assert small_module().augment is None
