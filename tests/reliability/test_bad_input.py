"""Issue 10, bad input: damaged and hostile image files, through the real command.

Strict mode ends the run with one line naming the file and the reason (exit 2), even
when the file is met in a DataLoader worker; skip mode counts what it skipped per split
over every worker, in the final table and in ``summary.json``; an image whose header
declares more than ``data.max_pixels`` is refused before decoding.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from tests.reliability import _cli
from tests.reliability.crafted import bad_files, png_declaring, small_png


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Four train and two val receipts; tests damage copies of it."""
    return _cli.make_dataset(tmp_path_factory.mktemp("bad-input") / "synthetic")


def test_strict_mode_ends_with_one_line_naming_the_file(dataset: Path, tmp_path: Path) -> None:
    root = _cli.copy_dataset(dataset, tmp_path / "synthetic")
    bad = root / "images/train/train_00002.jpg"
    bad.write_bytes(bad_files()["truncated"])
    # Two workers: the error is raised in a DataLoader worker, not the main process.
    result = _cli.run(
        [
            "train",
            *_cli.TINY,
            f"data.root={root}",
            f"output_dir={tmp_path}/runs",
            "data.on_bad_sample=raise",
        ],
        cwd=tmp_path,
    )
    assert result.rc == 2, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    (line,) = result.error_lines()
    assert line.startswith("adaptive-cache train: error: ")
    assert f"{bad}: corrupt or truncated JPEG" in line
    assert _cli.leftovers(result.run_id) == []


def test_skip_mode_counts_every_skipped_sample_per_split(dataset: Path, tmp_path: Path) -> None:
    root = _cli.copy_dataset(dataset, tmp_path / "synthetic")
    files = bad_files()
    (root / "images/train/train_00000.jpg").write_bytes(files["zero_byte"])
    (root / "images/train/train_00003.jpg").write_bytes(files["not_an_image"])
    # A PNG under a .jpg name: the header says what it is, and it declares 400 MP.
    (root / "images/val/val_00001.jpg").write_bytes(png_declaring(small_png(), 20_000, 20_000))
    result = _cli.run(
        [
            "train",
            *_cli.TINY,
            f"data.root={root}",
            f"output_dir={tmp_path}/runs",
            "data.on_bad_sample=skip",
            "trainer.max_epochs=2",
        ],
        cwd=tmp_path,
    )
    assert result.rc == 0, result.stderr[-3000:]
    summary_path = Path(result.stdout.strip().splitlines()[-1].removeprefix("summary: "))
    summary = json.loads(summary_path.read_text())
    # Counted in the process that consumes batches, over both workers, every epoch
    # (the second epoch serves the replacements from the cache, still skipped).
    assert [e["skipped"] for e in summary["epochs"]] == [{"train": 2, "val": 1}] * 2
    table = result.stdout.splitlines()
    assert "skipped t/v" in table[0]
    assert [ln.split()[-1] for ln in table[2:4]] == ["2/1", "2/1"]
    # The reason of the bomb is given, checked from the header alone.
    assert "data.max_pixels" in result.stderr and "20000x20000" in result.stderr
    # monitoring.port=0: the address actually served is logged and kept.
    url = summary["metrics_url"]
    assert re.fullmatch(r"http://127\.0\.0\.1:\d+/metrics", url) and not url.endswith(":0/metrics")
    assert f"metrics: {url}" in result.stderr
    assert _cli.leftovers(result.run_id) == []
