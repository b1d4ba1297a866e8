"""Plot a training run's learning curve from its ``summary.json``.

Usage::

    .venv/bin/python docs/training/plot_learning_curve.py RUN_DIR/summary.json \
        docs/training/learning_curve.png [--untrained-hmean H --untrained-val-loss L]

x is the number of epochs trained: the run's epoch ``e`` is plotted at ``e + 1``, and
the untrained model's validation (zero optimizer steps, measured apart), when given,
at 0.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("summary", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--untrained-hmean", type=float)
    parser.add_argument("--untrained-val-loss", type=float)
    args = parser.parse_args()
    summary = json.loads(args.summary.read_text())
    epochs = summary["epochs"]
    x = [e["epoch"] + 1 for e in epochs]
    val_x, val_loss = list(x), [e["val_loss"] for e in epochs]
    hmean_x, hmean = list(x), [e["hmean"] for e in epochs]
    if args.untrained_val_loss is not None:
        val_x, val_loss = [0, *val_x], [args.untrained_val_loss, *val_loss]
    if args.untrained_hmean is not None:
        hmean_x, hmean = [0, *hmean_x], [args.untrained_hmean, *hmean]

    fig, (ax_loss, ax_hmean) = plt.subplots(1, 2, figsize=(10, 3.8))
    ax_loss.plot(x, [e["loss"] for e in epochs], marker="o", ms=3, label="train loss")
    ax_loss.plot(val_x, val_loss, marker="o", ms=3, label="val loss")
    ax_loss.set_yscale("log")
    ax_loss.set_xlabel("epochs trained")
    ax_loss.set_ylabel("DB loss (5 BCE + 10 L1 + dice)")
    ax_loss.grid(alpha=0.3, which="both")
    ax_loss.legend()
    ax_hmean.plot(hmean_x, hmean, marker="o", ms=3, color="tab:green", label="val hmean")
    ax_hmean.set_ylim(0.0, 1.0)
    ax_hmean.set_xlabel("epochs trained")
    ax_hmean.set_ylabel("ICDAR 2015 hmean (IoU 0.5)")
    ax_hmean.grid(alpha=0.3)
    ax_hmean.legend(loc="lower right")
    cfg = summary["config"]
    fig.suptitle(
        f"DBNet {cfg['model']['backbone']}, synthetic receipts "
        f"{cfg['data']['synthetic']['n_train']} train / {cfg['data']['synthetic']['n_val']} val "
        f"at {cfg['data']['image_size']} px, {summary['precision']}, {summary['device']}"
    )
    fig.tight_layout()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=110)


if __name__ == "__main__":
    main()
