"""PNG plots of the bench results (matplotlib figures rendered by Agg, no pyplot).

* ``loader-val.png``, ``loader-train.png``: samples/s per epoch per contender, and
  the median of epochs 1+ with its min-max range;
* ``hit-rate.png``: hit rate against the budget fraction for auto, static and lru
  at every ``num_workers`` (the last epoch, and the range of epochs 1+), with the
  lines ``f`` and ``f + (1-f) ln(1-f)``;
* ``knapsack.png``: rebuild seconds saved per epoch as a fraction of the bound;
* ``train.png``: train seconds and data wait per epoch, cache off and on.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib
import numpy as np

# Figures are drawn without pyplot: saving a PNG uses the Agg canvas, and no global
# backend is set for whoever imports this module.
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from adaptive_cache.bench import lru_hit_ratio
from training.bench.report import LOADER_WORKLOADS, label, order_key, steady

Record = dict[str, Any]
_POLICY_COLOURS = {"auto": "tab:blue", "static": "tab:green", "lru": "tab:red"}
_WORKER_MARKERS = {0: "o", 1: "v", 2: "s", 4: "^", 8: "D"}


def _loader(results: list[Record], workload: str, path: Path) -> bool:
    rows = sorted((r for r in results if r["workload"] == workload and r["epochs"]), key=order_key)
    if not rows:
        return False
    fig = Figure(figsize=(13, 5.5), layout="constrained")
    left, right = fig.subplots(1, 2, width_ratios=[1.4, 1])
    colours = matplotlib.colormaps["tab20"].resampled(max(len(rows), 2))
    for i, r in enumerate(rows):
        x = [e["epoch"] for e in r["epochs"]]
        y = [e["samples_per_second"] for e in r["epochs"]]
        style = "--" if r["contender"] in ("none", "ideal") else "-"
        left.plot(x, y, style, marker="o", ms=3, color=colours(i), label=label(r))
    left.set_yscale("log")
    left.xaxis.set_major_locator(MaxNLocator(integer=True))
    left.set_xlabel("epoch")
    left.set_ylabel("samples/s")
    left.set_title(f"{workload}: samples/s per epoch")
    left.grid(True, which="both", alpha=0.3)
    left.legend(fontsize=7, ncol=2)
    names, med, lo, hi = [], [], [], []
    for r in rows:
        s = steady(r["epochs"], "samples_per_second")
        if s is None:
            continue
        names.append(label(r))
        med.append(s[0])
        lo.append(s[0] - s[1])
        hi.append(s[2] - s[0])
    ypos = np.arange(len(names))
    right.barh(ypos, med, xerr=[lo, hi], color=[colours(i) for i in range(len(names))], capsize=3)
    right.set_yticks(ypos, names, fontsize=8)
    right.invert_yaxis()
    right.set_xscale("log")
    right.set_xlabel("samples/s, epochs 1+: median, min-max")
    right.grid(True, axis="x", which="both", alpha=0.3)
    fig.savefig(path, dpi=90)
    return True


def _hit_rate(results: list[Record], path: Path) -> bool:
    rows = [r for r in results if r["workload"] == "hit-rate"]
    if not rows:
        return False
    fig = Figure(figsize=(7, 5.5), layout="constrained")
    ax = fig.subplots()
    f = np.linspace(0.0, 0.999, 200)
    ax.plot(f, f, "k-", lw=1, label="f (keep a fixed subset)")
    ax.plot(f, [lru_hit_ratio(x) for x in f], "k:", lw=1, label="f + (1-f) ln(1-f) (LRU)")
    workers = sorted({r["num_workers"] for r in rows})
    for r in rows:
        s = steady(r["epochs"], "hit_ratio")
        if s is None:
            continue
        last = r["epochs"][-1]["hit_ratio"]
        # Small offsets keep the points of different worker counts apart.
        dx = 0.012 * (workers.index(r["num_workers"]) - (len(workers) - 1) / 2)
        dx += {"auto": -0.004, "static": 0.0, "lru": 0.004}.get(r["contender"], 0.0)
        ax.errorbar(
            r["budget_fraction"] + dx, last, yerr=[[last - s[1]], [s[2] - last]],
            color=_POLICY_COLOURS.get(r["contender"], "grey"),
            marker=_WORKER_MARKERS.get(r["num_workers"], "x"), ms=5, capsize=2, ls="none",
        )  # fmt: skip
    for policy, colour in _POLICY_COLOURS.items():
        ax.plot([], [], color=colour, marker="o", ls="none", label=policy)
    for w in workers:
        marker = _WORKER_MARKERS.get(w, "x")
        ax.plot([], [], color="grey", marker=marker, ls="none", label=f"num_workers={w}")
    ax.set_xlabel("budget fraction f of the footprint")
    ax.set_ylabel("hit rate: last epoch (marker), range of epochs 1+ (bar)")
    ax.set_title("Steady-state hit rate, shuffled epochs")
    ax.set_xlim(0, 1.05)
    ax.set_ylim(-0.02, 1.05)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    fig.savefig(path, dpi=90)
    return True


def _knapsack(results: list[Record], path: Path) -> bool:
    rows = [r for r in results if r["workload"] == "knapsack"]
    if not rows:
        return False
    fig = Figure(figsize=(7, 4.5), layout="constrained")
    ax = fig.subplots()
    styles = ["-", "--", ":", "-."]
    fractions = sorted({r["budget_fraction"] for r in rows})
    for r in rows:
        x = [e["epoch"] for e in r["epochs"]]
        y = [e["saved_fraction_of_bound"] for e in r["epochs"]]
        ls = styles[fractions.index(r["budget_fraction"]) % len(styles)]
        colour = _POLICY_COLOURS.get(r["contender"], "grey")
        ax.plot(x, y, ls, marker="o", ms=3, color=colour, label=label(r))
    ax.axhline(0.99, color="k", lw=0.8, ls=":", label="99% of the bound")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("epoch")
    ax.set_ylabel("rebuild seconds saved / knapsack bound")
    ax.set_title("Unequal sizes and costs")
    ax.set_ylim(0, 1.05)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    fig.savefig(path, dpi=90)
    return True


def _train(results: list[Record], path: Path) -> bool:
    rows = [r for r in results if r["workload"] == "train" and r["epochs"]]
    if not rows:
        return False
    fig = Figure(figsize=(8, 4.5), layout="constrained")
    ax = fig.subplots()
    width = 0.8 / len(rows)
    for i, r in enumerate(rows):
        x = np.array([e["epoch"] for e in r["epochs"]]) + (i - (len(rows) - 1) / 2) * width
        train = [e["train_seconds"] for e in r["epochs"]]
        wait = [e["data_wait_seconds"] for e in r["epochs"]]
        ax.bar(x, train, width, label=f"{r['contender']} ({r['precision']}): train s")
        ax.bar(x, wait, width * 0.5, color="k", alpha=0.5, label="data wait s" if i == 0 else None)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("epoch")
    ax.set_ylabel("seconds")
    ax.set_title("Lightning fit: train seconds per epoch (data wait in black)")
    ax.grid(True, axis="y", alpha=0.3)
    ax.legend(fontsize=8)
    fig.savefig(path, dpi=90)
    return True


def write_plots(results: list[Record], out_dir: Path) -> list[Path]:
    """Write every plot that has data; returns the paths written."""
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    jobs = [(lambda p, w=w: _loader(results, w, p), f"{w}.png") for w in LOADER_WORKLOADS]
    jobs += [
        (lambda p: _hit_rate(results, p), "hit-rate.png"),
        (lambda p: _knapsack(results, p), "knapsack.png"),
        (lambda p: _train(results, p), "train.png"),
    ]
    for fn, name in jobs:
        path = out_dir / name
        if fn(path):
            written.append(path)
    return written
