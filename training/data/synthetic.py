"""Synthetic receipts: a small, reproducible OCR detection dataset.

Each image is a receipt-like page (a store header, dated lines of items with
quantities and amounts, totals) drawn with OpenCV's Hershey fonts on textured paper,
then warped onto a textured background with a slight rotation and perspective, with
sensor noise on top. Every drawn word is annotated with its polygon, transformed with
the page. About a quarter of the files are stored rotated or mirrored with an EXIF
orientation tag (the annotations stay in the displayed frame, as annotation tools
show the image). Pages are about 960x1280; one in five is a larger photo (1.5-2x).

The same seed gives the same bytes: every image draws from its own generator seeded
by ``(seed, split, index)``, and every file is written deterministically.

Layout (the seed project's)::

    OUT/images/train/train_00000.jpg ...   OUT/jsons/train.json
    OUT/images/val/val_00000.jpg ...       OUT/jsons/val.json
"""

from __future__ import annotations

import json
import logging
import sys
import time
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from training.data import orientation as orient

log = logging.getLogger(__name__)

_FONTS = (
    cv2.FONT_HERSHEY_SIMPLEX,
    cv2.FONT_HERSHEY_DUPLEX,
    cv2.FONT_HERSHEY_COMPLEX,
    cv2.FONT_HERSHEY_TRIPLEX,
    cv2.FONT_HERSHEY_PLAIN,
)
# fmt: off
_ITEMS = (
    "COFFEE", "MILK", "BREAD", "BUTTER", "EGGS", "APPLES", "BANANAS", "RICE", "PASTA", "TEA",
    "SUGAR", "CHEESE", "YOGURT", "WATER", "JUICE", "SOAP", "TOMATO", "ONION", "CARROTS",
    "CHICKEN", "BEEF", "SALMON", "CEREAL", "HONEY", "OLIVE", "OIL", "SALT", "FLOUR", "Latte",
    "Espresso", "Croissant", "Bagel", "Muffin", "Sandwich", "Salad", "Soup", "Cookie", "Donut",
    "Lemonade",
)
_STORES = (
    "FRESH", "MART", "CORNER", "SHOP", "CAFE", "DELI", "MARKET", "BAKERY", "GROCERY", "CITY",
    "CENTRAL", "DAILY",
)
_FOOTER = (
    "THANK", "YOU", "FOR", "SHOPPING", "WITH", "US", "PLEASE", "COME", "AGAIN", "KEEP", "YOUR",
    "RECEIPT",
)
# fmt: on
_SPLITS = {"train": 0, "val": 1}


def _money(rng: np.random.Generator) -> str:
    return f"{rng.integers(0, 60)}.{rng.integers(0, 100):02d}"


def _lines(rng: np.random.Generator, n_words: int) -> list[list[str]]:
    """Receipt text as lines of words, about ``n_words`` words in all."""
    lines = [
        list(rng.choice(_STORES, size=rng.integers(1, 3))),
        [f"{rng.integers(1, 400)}", "MAIN", "STREET"],
        [
            f"20{rng.integers(18, 26)}-{rng.integers(1, 13):02d}-{rng.integers(1, 29):02d}",
            f"{rng.integers(7, 23):02d}:{rng.integers(0, 60):02d}",
            f"#{rng.integers(1000, 99999)}",
        ],
    ]
    count = sum(len(x) for x in lines)
    budget = n_words - 8  # the three closing lines hold at most 8 words
    while True:
        item = list(rng.choice(_ITEMS, size=rng.integers(1, 3)))
        qty = [f"{rng.integers(1, 5)}", "x", _money(rng)] if rng.random() < 0.4 else []
        line = item + qty + [_money(rng)]
        if count + len(line) > budget:
            break
        lines.append(line)
        count += len(line)
    lines.append(["TOTAL", _money(rng)])
    lines.append(["VAT", f"{rng.integers(5, 25)}%", _money(rng)])
    lines.append(list(rng.choice(_FOOTER, size=rng.integers(1, 4))))
    return lines


def _texture(
    rng: np.random.Generator, hw: tuple[int, int], base: np.ndarray, amp: float
) -> np.ndarray:
    """A smooth random texture around colour ``base``: uint8 (H, W, 3)."""
    small = np.clip(base + rng.normal(0.0, amp, size=(6, 8, 1)), 0, 255).astype(np.uint8)
    # Bilinear: bicubic upscaling from 6x8 costs 10x more here and looks the same.
    return cv2.resize(small, (hw[1], hw[0]), interpolation=cv2.INTER_LINEAR)


def _draw_page(
    rng: np.random.Generator, page_hw: tuple[int, int], n_words: int
) -> tuple[np.ndarray, list[np.ndarray], list[str]]:
    """Paper with text; word polygons (continuous coordinates) and texts."""
    ph, pw = page_hw
    paper = _texture(rng, page_hw, rng.integers(225, 252, size=3), amp=6.0)
    font = int(rng.choice(_FONTS))
    text_h = ph * rng.uniform(0.014, 0.022)
    (_, unit_h), _ = cv2.getTextSize("A", font, 1.0, 1)
    fs = text_h / unit_h
    thick = max(1, round(text_h / 14))
    ink = tuple(int(c) for c in rng.integers(10, 70, size=3))
    margin = pw * 0.06
    y = ph * 0.05
    line_gap = text_h * rng.uniform(1.6, 2.2)
    polys: list[np.ndarray] = []
    texts: list[str] = []
    for line in _lines(rng, n_words):
        y += line_gap
        if y > ph * 0.95:
            break
        x = margin + rng.uniform(0, pw * 0.05)
        for word in line:
            (tw, th), base = cv2.getTextSize(word, font, fs, thick)
            if x + tw > pw - margin:
                break
            org = (round(x), round(y))
            cv2.putText(paper, word, org, font, fs, ink, thick, cv2.LINE_AA)
            # Pixel centres are at i + 0.5 in continuous coordinates.
            x0, x1 = org[0] - thick / 2, org[0] + tw + thick / 2 + 1
            y0, y1 = org[1] - th - thick / 2, org[1] + base + 1
            polys.append(np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]], np.float64))
            texts.append(word)
            x += tw + text_h * rng.uniform(0.6, 1.6)
    return paper, polys, texts


def render(
    rng: np.random.Generator, scale: float = 1.0
) -> tuple[np.ndarray, list[np.ndarray], list[str]]:
    """One receipt photo: RGB uint8 image, word polygons (displayed frame), texts."""
    factor = rng.uniform(1.5, 2.0) if rng.random() < 0.2 else 1.0
    w = int(960 * rng.uniform(0.9, 1.1) * factor * scale)
    h = int(1280 * rng.uniform(0.9, 1.1) * factor * scale)
    image = _texture(rng, (h, w), rng.integers(40, 170, size=3), amp=18.0)
    pw, ph = int(w * rng.uniform(0.55, 0.8)), int(h * rng.uniform(0.72, 0.88))
    paper, polys, texts = _draw_page(rng, (ph, pw), int(rng.integers(24, 81)))
    # Page corners -> a slightly rotated, perspective-jittered quad inside the image.
    angle = np.deg2rad(rng.uniform(-4.0, 4.0))
    rot = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    corners = np.array([[0, 0], [pw, 0], [pw, ph], [0, ph]], np.float64)
    centred = (corners - [pw / 2, ph / 2]) @ rot.T
    centred += rng.uniform(-0.025, 0.025, size=(4, 2)) * [pw, ph]
    lo, hi = centred.min(axis=0), centred.max(axis=0)
    centre = [rng.uniform(-lo[0] + 2, w - hi[0] - 2), rng.uniform(-lo[1] + 2, h - hi[1] - 2)]
    dst = centred + centre
    # Continuous coordinates: shift by half a pixel around OpenCV's pixel-centre maths.
    hom = cv2.getPerspectiveTransform(
        (corners - 0.5).astype(np.float32), (dst - 0.5).astype(np.float32)
    )
    cv2.warpPerspective(
        paper, hom, (w, h), dst=image, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_TRANSPARENT
    )
    polys = [
        cv2.perspectiveTransform((p - 0.5)[None].astype(np.float64), hom)[0] + 0.5 for p in polys
    ]
    if rng.random() < 0.3:
        cv2.GaussianBlur(image, (0, 0), rng.uniform(0.5, 1.0), dst=image)
    # Sensor noise, the same on the three channels, added with saturation.
    amp = int(rng.integers(3, 10))
    noise = rng.integers(-amp, amp + 1, size=(h, w), dtype=np.int8)
    image = cv2.add(image, cv2.merge([noise, noise, noise]), dtype=cv2.CV_8U)
    return image, polys, texts


def _encode(rng: np.random.Generator, image: np.ndarray) -> tuple[bytes, int]:
    """JPEG bytes (quality 85-95); a quarter stored with an EXIF orientation tag."""
    o = int(rng.integers(2, 9)) if rng.random() < 0.25 else 1
    stored = np.ascontiguousarray(orient.undo_on_image(image, o))
    quality = int(rng.integers(85, 96))
    ok, buf = cv2.imencode(
        ".jpg", cv2.cvtColor(stored, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, quality]
    )
    if not ok:
        raise RuntimeError("OpenCV failed to encode a JPEG")
    data = buf.tobytes()
    return (orient.add_orientation(data, o) if o != 1 else data), o


def existing_dataset(out: Path) -> list[str]:
    """What of a data set is already in ``out``: annotation files and image counts.

    Empty when ``out`` holds no annotation file and no image in the layout above.
    """
    out = Path(out)
    found = []
    for split in _SPLITS:
        ann = out / "jsons" / f"{split}.json"
        if ann.is_file():
            found.append(str(ann.relative_to(out)))
        img_dir = out / "images" / split
        n = sum(1 for p in img_dir.glob("*") if p.is_file()) if img_dir.is_dir() else 0
        if n:
            found.append(f"{n} images in images/{split}")
    return found


def generate(
    out: Path,
    n_train: int,
    n_val: int,
    seed: int,
    progress: bool = True,
    *,
    scale: float = 1.0,
) -> dict:
    """Write a synthetic receipt dataset in the seed format.

    Args:
        out: the dataset root (created; earlier files of this generator are replaced).
        n_train: number of training images.
        n_val: number of validation images.
        seed: the seed; the same seed gives the same bytes.
        progress: show a progress bar (only on a terminal).
        scale: image size factor (tests use small images).

    Returns:
        ``{"out", "seed", "counts": {"train", "val", "words", "exif_tagged"}, "paths":
        {split: {"images", "annotations"}}, "seconds"}``.

    Raises:
        ValueError: negative counts or a non-positive scale.
    """
    if n_train < 0 or n_val < 0:
        raise ValueError(f"make-data: image counts must be >= 0, got {n_train} and {n_val}")
    if not scale > 0:
        raise ValueError(f"make-data: scale must be > 0, got {scale}")
    t0 = time.perf_counter()
    out = Path(out)
    counts = {"train": n_train, "val": n_val, "words": 0, "exif_tagged": 0}
    paths: dict[str, dict[str, str]] = {}
    bar = tqdm(
        total=n_train + n_val,
        desc="make-data",
        unit="img",
        disable=not progress or not sys.stderr.isatty(),
    )
    for split, n in (("train", n_train), ("val", n_val)):
        img_dir = out / "images" / split
        ann_path = out / "jsons" / f"{split}.json"
        img_dir.mkdir(parents=True, exist_ok=True)
        ann_path.parent.mkdir(parents=True, exist_ok=True)
        for old in img_dir.glob(f"{split}_*.jpg"):
            old.unlink()
        images: dict[str, dict] = {}
        for i in range(n):
            rng = np.random.default_rng([seed, _SPLITS[split], i])
            image, polys, texts = render(rng, scale)
            data, o = _encode(rng, image)
            name = f"{split}_{i:05d}.jpg"
            (img_dir / name).write_bytes(data)
            words = {
                f"{j + 1:04d}": {"points": np.round(p, 2).tolist(), "text": t}
                for j, (p, t) in enumerate(zip(polys, texts, strict=True))
            }
            images[name] = {"words": words}
            counts["words"] += len(words)
            counts["exif_tagged"] += o != 1
            bar.update()
        ann_path.write_text(json.dumps({"images": images}, sort_keys=True) + "\n")
        paths[split] = {"images": str(img_dir), "annotations": str(ann_path)}
    bar.close()
    seconds = round(time.perf_counter() - t0, 3)
    log.info("make-data: %d images, %d words in %.1f s -> %s", n_train + n_val,
             counts["words"], seconds, out)  # fmt: skip
    return {"out": str(out), "seed": seed, "counts": counts, "paths": paths, "seconds": seconds}
