from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from training.data import orientation as orient
from training.data.images import (
    DCT_TOLERANCE,
    BadSampleError,
    choose_reduction,
    decode_image,
    image_format,
)
from training.data.profile import compare_dct_decoding
from training.data.synthetic import generate

RED = (220, 30, 30)
# A polygon in the displayed frame of a 96x64 (h x w) image, off every symmetry axis.
POLY = np.array([[6.0, 8.0], [30.0, 10.0], [26.0, 30.0], [8.0, 26.0]], np.float32)
DISPLAYED_HW = (96, 64)


def _encode_jpeg(rgb: np.ndarray, quality: int = 95) -> bytes:
    bgr = cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2BGR)
    ok, buf = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, quality])
    assert ok
    return buf.tobytes()


def _displayed() -> np.ndarray:
    img = np.full((*DISPLAYED_HW, 3), 235, np.uint8)
    cv2.fillPoly(img, [np.round(POLY - 0.5).astype(np.int32)], RED)
    return img


def _inside(poly: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
    """Boolean mask of pixels well inside ``poly`` (continuous coordinates)."""
    mask = np.zeros(hw, np.uint8)
    centre = poly.mean(axis=0)
    inner = centre + (poly - centre) * 0.6  # keep away from JPEG-blurred edges
    cv2.fillPoly(mask, [np.round(inner - 0.5).astype(np.int32)], 1)
    return mask.astype(bool)


@pytest.mark.parametrize("decoder", ["simplejpeg", "opencv"])
@pytest.mark.parametrize("value", orient.ORIENTATIONS)
def test_exif_pixels_and_polygons_stay_aligned(value: int, decoder: str) -> None:
    shown = _displayed()
    stored = np.ascontiguousarray(orient.undo_on_image(shown, value))
    data = orient.add_orientation(_encode_jpeg(stored), value)
    dec = decode_image(data, path="x.jpg", decoder=decoder)
    assert dec.orientation == value
    assert dec.image.shape[:2] == DISPLAYED_HW == dec.displayed_hw
    assert dec.stored_hw == stored.shape[:2]
    # Annotations drawn on the displayed image: the polygon covers the red region.
    region = dec.image[_inside(POLY, DISPLAYED_HW)].astype(int)
    assert np.abs(region.mean(axis=0) - RED).max() < 12
    assert np.abs(dec.image.astype(int) - shown).mean() < 3
    # Annotations drawn on the stored pixels, moved to the displayed frame.
    stored_poly = orient.undo_on_points(POLY, stored.shape[:2], value)
    back = orient.apply_to_points(stored_poly, dec.stored_hw, dec.orientation)
    np.testing.assert_allclose(back, POLY, atol=1e-5)
    # OpenCV's own EXIF handling (its default) agrees with ours.
    cv_shown = cv2.cvtColor(cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR), 4)
    assert cv_shown.shape == dec.image.shape
    assert np.abs(cv_shown.astype(int) - dec.image).mean() < 1


def test_png_decodes_to_rgb() -> None:
    rgb = _displayed()
    _, buf = cv2.imencode(".png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    dec = decode_image(buf.tobytes(), path="a.png")
    np.testing.assert_array_equal(dec.image, rgb)
    assert dec.reduction == 1 and dec.orientation == 1
    assert image_format(buf.tobytes()) == "png"
    with pytest.raises(BadSampleError, match=r"a\.png: decoder 'simplejpeg' reads only JPEG"):
        decode_image(buf.tobytes(), path="a.png", decoder="simplejpeg")


def _bad_inputs() -> dict[str, bytes]:
    jpeg = _encode_jpeg(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8))
    _, png = cv2.imencode(".png", np.zeros((32, 32, 3), np.uint8))
    corrupt = bytearray(jpeg)
    corrupt[len(jpeg) // 2 : len(jpeg) // 2 + 64] = b"\x00" * 64
    return {
        "empty": b"",
        "text": b"hello, this is not an image",
        "truncated_jpeg": jpeg[: len(jpeg) // 2],
        "header_only_jpeg": jpeg[:20],
        "corrupt_jpeg": bytes(corrupt),
        "truncated_png": png.tobytes()[:60],
    }


@pytest.mark.parametrize("kind", sorted(_bad_inputs()))
def test_bad_files_raise_naming_the_file(kind: str) -> None:
    path = f"images/train/{kind}.jpg"
    with pytest.raises(BadSampleError) as err:
        decode_image(_bad_inputs()[kind], path=path)
    assert str(err.value).startswith(f"{path}: ")
    assert err.value.path == path and err.value.reason
    assert isinstance(err.value, ValueError)


@pytest.mark.parametrize("kind", ["truncated_jpeg", "header_only_jpeg", "text"])
def test_opencv_decoder_catches_truncation(kind: str) -> None:
    with pytest.raises(BadSampleError, match=kind):
        decode_image(_bad_inputs()[kind], path=f"{kind}.jpg", decoder="opencv")


@pytest.mark.parametrize(
    ("hw", "target", "k"),
    [
        ((1280, 960), 640, 2),
        ((1279, 960), 640, 2),
        ((1278, 960), 640, 1),
        ((2560, 1920), 640, 4),
        ((6000, 4000), 640, 8),
        ((6000, 4000), None, 1),
        ((300, 200), 640, 1),
        ((1281, 100), 640, 2),
    ],
)
def test_choose_reduction(hw: tuple[int, int], target: int | None, k: int) -> None:
    assert choose_reduction(hw, target) == k


@pytest.mark.parametrize("decoder", ["simplejpeg", "opencv"])
def test_reduced_decoding_size_and_orientation(decoder: str) -> None:
    rng = np.random.default_rng(1)
    stored = cv2.GaussianBlur(rng.integers(0, 255, (401, 203, 3), dtype=np.uint8), (0, 0), 2)
    data = orient.add_orientation(_encode_jpeg(stored), 6)
    dec = decode_image(data, path="r.jpg", target_size=100, decoder=decoder)
    assert dec.reduction == 4
    # ceil(401 / 4) x ceil(203 / 4) stored, rotated by the tag.
    assert dec.image.shape == (51, 101, 3) and dec.displayed_hw == (203, 401)


def test_reduced_decoding_stays_within_tolerance(tmp_path: Path) -> None:
    # Full-size pages: the tolerance is stated for real page sizes and text heights.
    generate(tmp_path, n_train=3, n_val=0, seed=3, progress=False)
    files = sorted((tmp_path / "images").rglob("*.jpg"))
    # Target 320 makes every page reducible (by 2, or by 4 for the larger photos).
    result = compare_dct_decoding(files, 320, repeat=1)
    assert result["n"] == len(files) == 3
    assert result["reduced_diff_max"] <= DCT_TOLERANCE
    assert result["reduced_diff"] <= result["full_diff"] + 0.5


def _jpeg_declaring(data: bytes, width: int, height: int) -> bytes:
    """A real JPEG whose SOF header is patched to declare ``width`` x ``height``."""
    out = bytearray(data)
    i = 2
    while out[i + 1] not in (0xC0, 0xC1, 0xC2):
        i += 2 + int.from_bytes(out[i + 2 : i + 4], "big")
    out[i + 5 : i + 9] = height.to_bytes(2, "big") + width.to_bytes(2, "big")
    return bytes(out)


def _png_declaring(width: int, height: int) -> bytes:
    _, png = cv2.imencode(".png", np.zeros((8, 8, 3), np.uint8))
    out = bytearray(png.tobytes())
    out[16:24] = width.to_bytes(4, "big") + height.to_bytes(4, "big")  # IHDR
    return bytes(out)


@pytest.mark.parametrize("decoder", ["auto", "opencv"])
@pytest.mark.parametrize("kind", ["jpeg", "png"])
def test_a_header_declaring_too_many_pixels_is_refused_before_decoding(
    kind: str, decoder: str
) -> None:
    # A few hundred bytes that declare 1.2 gigapixels (3.6 GB once decoded).
    jpeg = _encode_jpeg(np.zeros((16, 24, 3), np.uint8))
    declare = _jpeg_declaring if kind == "jpeg" else lambda _, w, h: _png_declaring(w, h)
    bomb = declare(jpeg, 40_000, 30_000)
    assert len(bomb) < 2000
    with pytest.raises(BadSampleError) as err:
        decode_image(bomb, path="bomb", decoder=decoder)
    assert err.value.reason.startswith("image header declares 40000x30000 = 1,200,000,000 pixels")
    assert "data.max_pixels" in err.value.reason


def test_opencv_refusing_an_image_is_a_bad_sample() -> None:
    # Above OpenCV's own limit (CV_IO_MAX_IMAGE_PIXELS, 2^30) when data.max_pixels allows it.
    bomb = _jpeg_declaring(_encode_jpeg(np.zeros((16, 24, 3), np.uint8)), 40_000, 30_000)
    with pytest.raises(BadSampleError, match="OpenCV refused the image"):
        decode_image(bomb, path="bomb.jpg", decoder="opencv", max_pixels=None)


def test_max_pixels_limit_is_inclusive_and_none_disables_it() -> None:
    data = _encode_jpeg(np.zeros((16, 24, 3), np.uint8))
    assert decode_image(data, path="a.jpg", max_pixels=16 * 24).image.shape == (16, 24, 3)
    with pytest.raises(BadSampleError, match="16x24|24x16"):
        decode_image(data, path="a.jpg", max_pixels=16 * 24 - 1)
    assert decode_image(data, path="a.jpg", max_pixels=None).image.shape == (16, 24, 3)


class _BadFiles(torch.utils.data.Dataset):
    def __init__(self, files: dict[str, bytes]) -> None:
        self.names = sorted(files)
        self.files = files

    def __len__(self) -> int:
        return len(self.names)

    def __getitem__(self, index: int) -> object:
        name = self.names[index]
        return decode_image(self.files[name], path=f"images/{name}.jpg")


@pytest.mark.parametrize("kind", ["empty", "text", "truncated_jpeg", "corrupt_jpeg"])
def test_bad_sample_error_from_a_worker_keeps_its_file_and_reason(kind: str) -> None:
    data = _bad_inputs()[kind]
    with pytest.raises(BadSampleError) as direct:
        decode_image(data, path=f"images/{kind}.jpg")
    loader = torch.utils.data.DataLoader(
        _BadFiles({kind: data}), batch_size=None, num_workers=1, collate_fn=lambda x: x
    )
    # torch re-raises a worker's error from its formatted traceback alone.
    with pytest.raises(BadSampleError) as err:
        next(iter(loader))
    assert (err.value.path, err.value.reason) == (direct.value.path, direct.value.reason)
    assert str(err.value) == str(direct.value)  # one line, not the worker's traceback
    assert "in DataLoader worker process 0" in (err.value.worker_traceback or "")
