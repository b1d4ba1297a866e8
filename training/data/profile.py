"""Measure what each stage of the OCR pipeline costs per sample.

:func:`profile_stages` runs the pipeline over samples and reports the median seconds
of each step (the source read, every stage, and the collate share of a batch);
:func:`compare_dct_decoding` measures reduced-size JPEG decoding against full
decoding plus resize, speed and pixel difference after the canonical resize.
``make run`` prints both, and the numbers in the README come from them.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import cv2
import numpy as np

from adaptive_cache.pipeline import Pipeline
from training.data.collate import collate
from training.data.images import Decoder, choose_reduction, decode_image
from training.data.transforms import canonical_compose


def profile_stages(
    pipeline: Pipeline,
    n: int,
    *,
    batch_size: int = 4,
    epoch: int = 0,
    clock: Callable[[], float] = time.perf_counter,
) -> dict:
    """Median seconds per sample of each step over the first ``n`` samples.

    Args:
        pipeline: the pipeline to measure (run from the file: no cache involved).
        n: number of samples (capped at the pipeline's length).
        batch_size: batch size for the collate measurement.
        epoch: the epoch passed to random stages.
        clock: ``time.perf_counter`` (wall time, the default) or ``time.process_time``
            (CPU time of the process, all threads: steadier on a shared machine).

    Returns:
        ``{"read": s, <stage name>: s, ..., "collate": s, "total": s, "n": n}``, where
        ``collate`` is the median time of a batch divided by its size and ``total``
        the sum of the medians.
    """
    n = min(n, len(pipeline))
    if n <= 0:
        raise ValueError(f"profile_stages: need at least one sample, got n={n}")
    names = ["read"] + [s.name for s in pipeline.stages]
    per_step: list[list[float]] = [[] for _ in names]
    outputs = []
    for index in range(n):
        t0 = clock()
        sample = pipeline.source.load(index)
        per_step[0].append(clock() - t0)
        for pos, stage in enumerate(pipeline.stages):
            rng = pipeline.rng(index, epoch, pos)  # what Pipeline.run passes
            t0 = clock()
            sample = stage(sample, rng)
            per_step[pos + 1].append(clock() - t0)
        outputs.append(sample)
    collate_s = []
    for start in range(0, max(n - batch_size, 0) + 1, batch_size):
        batch = outputs[start : start + batch_size]
        t0 = clock()
        collate(batch)
        collate_s.append((clock() - t0) / len(batch))
    result = {name: statistics.median(ts) for name, ts in zip(names, per_step, strict=True)}
    result["collate"] = statistics.median(collate_s)
    result["total"] = sum(result.values())
    result["n"] = n
    return result


def compare_dct_decoding(
    files: Sequence[str | Path], image_size: int, *, decoder: Decoder = "auto", repeat: int = 3
) -> dict:
    """Reduced-size vs full JPEG decoding, each followed by the canonical resize.

    Only files whose size allows a reduction (longest side >= 2 x ``image_size``) count.
    Quality is measured against a reference made the slow, careful way: full decode
    and an INTER_AREA resize to the canonical content size.

    Returns:
        ``"n"``; ``"full_ms"`` and ``"reduced_ms"``: medians over files of the best of
        ``repeat`` runs of decode + canonical resize and pad; ``"reduced_diff"`` and
        ``"full_diff"``: mean absolute difference from the reference (grey levels over
        the canonical content), mean over files; ``"reduced_diff_max"``: the worst
        file; ``"reductions"``: count per factor.
    """
    canon = canonical_compose(image_size)
    full_ms, red_ms, red_diff, full_diff = [], [], [], []
    reductions: dict[int, int] = {}
    for f in files:
        data = Path(f).read_bytes()
        probe = decode_image(data, path=str(f), decoder=decoder)
        k = choose_reduction(probe.stored_hw, image_size)
        if k == 1:
            continue
        reductions[k] = reductions.get(k, 0) + 1
        results = {}
        for label, target, sink in (("full", None, full_ms), ("reduced", image_size, red_ms)):
            best = float("inf")
            for _ in range(repeat):
                t0 = time.perf_counter()
                img = decode_image(data, path=str(f), target_size=target, decoder=decoder).image
                out = canon(image=img)["image"]
                best = min(best, time.perf_counter() - t0)
            sink.append(best * 1e3)
            results[label] = out.astype(np.int16)
        h, w = probe.image.shape[:2]
        s = image_size / max(h, w)
        ch, cw = round(h * s), round(w * s)
        ref = cv2.resize(probe.image, (cw, ch), interpolation=cv2.INTER_AREA).astype(np.int16)
        ch, cw = ch - 1, cw - 1  # leave out a last row/column that rounding may shift
        red_diff.append(float(np.abs(results["reduced"][:ch, :cw] - ref[:ch, :cw]).mean()))
        full_diff.append(float(np.abs(results["full"][:ch, :cw] - ref[:ch, :cw]).mean()))
    if not red_diff:
        return {"n": 0, "reductions": {}}
    return {
        "n": len(red_diff),
        "full_ms": statistics.median(full_ms),
        "reduced_ms": statistics.median(red_ms),
        "reduced_diff": float(np.mean(red_diff)),
        "reduced_diff_max": float(np.max(red_diff)),
        "full_diff": float(np.mean(full_diff)),
        "reductions": reductions,
    }
