"""``bench.md``: the results as markdown tables, and the targets of the issues checked.

Figures are medians over epochs 1+ (the steady state; epoch 0 fills the caches)
with the minimum and maximum beside them, so a noisy machine shows as a wide range.
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable
from typing import Any

from adaptive_cache.bench import cache_targets
from adaptive_cache.config import format_size

Record = dict[str, Any]
Stat = tuple[float, float, float]
LOADER_WORKLOADS = ("loader-val", "loader-train")
CONTENDER_ORDER = (
    "none", "seed-dicts", "seed-dicts-persistent", "monai", "auto", "static", "lru", "ideal",
)  # fmt: skip


def steady(epochs: list[Record], key: str) -> Stat | None:
    """``(median, min, max)`` of ``key`` over epochs 1+ (all epochs if there is one)."""
    vals = [e[key] for e in epochs[1:] if e.get(key) is not None]
    if not vals:
        vals = [e[key] for e in epochs if e.get(key) is not None]
    if not vals:
        return None
    return statistics.median(vals), min(vals), max(vals)


def order_key(r: Record) -> tuple[int, float]:
    name = r["contender"]
    rank = CONTENDER_ORDER.index(name) if name in CONTENDER_ORDER else len(CONTENDER_ORDER)
    return rank, -(r.get("budget_fraction") or 0.0)


def label(r: Record) -> str:
    """``auto 50%``, ``none``, ..."""
    f = r.get("budget_fraction")
    return r["contender"] if f is None else f"{r['contender']} {100 * f:.0f}%"


def find(
    results: Iterable[Record], workload: str, contender: str, fraction: float | None = None
) -> Record | None:
    """The first result that ran (not skipped) for this workload, contender and budget."""
    for r in results:
        same = r["workload"] == workload and r["contender"] == contender
        if same and not r.get("skipped") and fraction in (None, r.get("budget_fraction")):
            return r
    return None


def _stat(v: Stat | None, fmt: str = "{:.0f}") -> str:
    if v is None:
        return "—"
    med, lo, hi = v
    return f"{fmt.format(med)} [{fmt.format(lo)}–{fmt.format(hi)}]"


def _pct(v: float | None) -> str:
    return "—" if v is None else f"{100 * v:.1f}%"


def _size(v: float | None) -> str:
    return "—" if v is None else format_size(v)


def speedup(r: Record | None, base: Record | None) -> float | None:
    """Ratio of the steady median samples/s of ``r`` to that of ``base``."""
    a = steady(r["epochs"], "samples_per_second") if r else None
    b = steady(base["epochs"], "samples_per_second") if base else None
    return a[0] / b[0] if a and b else None


def cpu_ratio(r: Record | None, base: Record | None) -> float | None:
    """How many times less CPU per sample ``r`` uses than ``base`` (epochs 1+ medians)."""
    a = steady(r["epochs"], "cpu_ms_per_sample") if r else None
    b = steady(base["epochs"], "cpu_ms_per_sample") if base else None
    return b[0] / a[0] if a and b and a[0] > 0 else None


def _ratio(x: float | None, digits: int = 1) -> str:
    return "—" if x is None else f"{x:.{digits}f}x"


def _loader_table(results: list[Record], workload: str) -> list[str]:
    rows = sorted((r for r in results if r["workload"] == workload), key=order_key)
    if not rows:
        return []
    base = find(rows, workload, "none")
    first = next((r for r in rows if not r.get("skipped")), rows[0])
    lines = [
        f"## {workload}",
        "",
        f"{first.get('n_samples')} receipts, batch {first.get('batch_size')}, "
        f"num_workers={first.get('num_workers')} (ideal: 0), {len(first['epochs'])} epochs; "
        f"tensor-tier footprint {_size(first.get('footprint_bytes'))}.",
        "",
        "| contender | budget | epoch 0 s | samples/s epochs 1+ median [min–max] "
        "| speedup vs none | CPU ms/sample epochs 1+ | hit rate epochs 1+ "
        "| peak memory (RSS+shm) | peak PSS+shm | bytes/sample |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        f = r.get("budget_fraction")
        budget = "—" if f is None else f"{100 * f:.0f}%"
        if r.get("skipped"):
            lines.append(f"| {r['contender']} | {budget} | skipped: {r['skipped']} |||||||")
            continue
        hit = steady(r["epochs"], "hit_ratio")
        name = r["contender"] + ("" if r.get("persistent_workers", True) else " (non-persistent)")
        if r["contender"] == "ideal":
            name = "ideal"
        lines.append(
            f"| {name} | {budget} | {r['epochs'][0]['seconds']:.2f} "
            f"| {_stat(steady(r['epochs'], 'samples_per_second'))} "
            f"| {_ratio(speedup(r, base))} "
            f"| {_stat(steady(r['epochs'], 'cpu_ms_per_sample'), '{:.1f}')} "
            f"| {_pct(hit[0] if hit else None)} "
            f"| {_size(r.get('peak_memory_bytes'))} | {_size(r.get('peak_pss_bytes'))} "
            f"| {_size(r.get('bytes_per_sample'))} |"
        )
    loads = [x for r in rows for x in r.get("load_average_1m", [])]
    if loads:
        lines += [
            "",
            f"1-minute load average while these ran: {min(loads):.1f}–{max(loads):.1f}. "
            "CPU ms/sample: CPU time of the contender's whole process tree per sample, "
            "which other load on the machine does not change.",
        ]
    return [*lines, ""]


def _hit_rate_table(results: list[Record]) -> list[str]:
    rows = [r for r in results if r["workload"] == "hit-rate"]
    if not rows:
        return []
    workers = sorted({r["num_workers"] for r in rows})
    lines = [
        "## hit-rate (equal sizes, shuffled epochs)",
        "",
        f"{rows[0]['n_samples']} samples, {len(rows[0]['epochs'])} epochs; per cell: hit rate "
        "median of epochs 1+ [min–max], then the last epoch.",
        "",
        "| policy | budget f | expected | "
        + " | ".join(f"num_workers={w}" for w in workers)
        + " |",
        "|---|---|---|" + "---|" * len(workers),
    ]
    cells: dict[tuple[str, float], dict[int, Record]] = {}
    for r in rows:
        cells.setdefault((r["contender"], r["budget_fraction"]), {})[r["num_workers"]] = r
    ranked = sorted(cells.items(), key=lambda kv: (order_key({"contender": kv[0][0]}), kv[0][1]))
    for (policy, f), by_workers in ranked:
        expected = next(iter(by_workers.values()))["expected_hit_ratio"]
        shown = []
        for w in workers:
            r = by_workers.get(w)
            if r is None:
                shown.append("—")
                continue
            last = r["epochs"][-1]["hit_ratio"]
            shown.append(f"{_stat(steady(r['epochs'], 'hit_ratio'), '{:.3f}')}, last {last:.3f}")
        lines.append(f"| {policy} | {f:.1f} | {expected:.3f} | " + " | ".join(shown) + " |")
    return [*lines, ""]


def _knapsack_table(results: list[Record]) -> list[str]:
    rows = [r for r in results if r["workload"] == "knapsack"]
    if not rows:
        return []
    lines = [
        "## knapsack (unequal sizes and costs)",
        "",
        f"{rows[0]['n_samples']} samples, log-normal sizes and build costs, num_workers=0; "
        "rebuild seconds saved per epoch as a fraction of the fractional-knapsack bound "
        "(which may keep part of an entry); the best whole-entry choice (0/1 knapsack, "
        "exact) is given beside it.",
        "",
        "| policy | budget f | saved / bound, last epoch | best whole entries / bound "
        "| per epoch | hit rate, last epoch |",
        "|---|---|---|---|---|---|",
    ]
    for r in sorted(rows, key=lambda r: (r["budget_fraction"], order_key(r))):
        per = ", ".join(f"{e['saved_fraction_of_bound']:.3f}" for e in r["epochs"])
        last = r["epochs"][-1]
        opt = r.get("optimum_seconds")
        opt_s = "—" if opt is None else f"{opt / r['bound_seconds']:.3f}"
        lines.append(
            f"| {r['contender']} | {r['budget_fraction']:.1f} "
            f"| {last['saved_fraction_of_bound']:.3f} ({last['saved_seconds']:.3f} s of "
            f"{r['bound_seconds']:.3f} s) | {opt_s} | {per} | {_pct(last['hit_ratio'])} |"
        )
    return [*lines, ""]


def _train_table(results: list[Record]) -> list[str]:
    rows = [r for r in results if r["workload"] == "train"]
    if not rows:
        return []
    base = find(rows, "train", "none")
    r0 = rows[0]
    lines = [
        "## train (Lightning fit + validate)",
        "",
        f"{r0['n_train']} train + {r0['n_val']} val receipts, batch {r0['batch_size']}, "
        f"num_workers={r0['num_workers']}, device {r0['device']}, {len(r0['epochs'])} epochs; "
        "seconds are medians of epochs 1+ [min–max]; speedup in samples/s of train + val.",
        "",
        "| contender | precision | epoch 0 s | train s | val s | data wait s | step s "
        "| hit rate | speedup vs none | peak memory (RSS+shm) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        e = r["epochs"]
        hit = steady(e, "hit_ratio")
        lines.append(
            f"| {r['contender']} | {r['precision']} | {e[0]['seconds']:.1f} "
            f"| {_stat(steady(e, 'train_seconds'), '{:.2f}')} "
            f"| {_stat(steady(e, 'val_seconds'), '{:.2f}')} "
            f"| {_stat(steady(e, 'data_wait_seconds'), '{:.2f}')} "
            f"| {_stat(steady(e, 'step_seconds'), '{:.3f}')} "
            f"| {_pct(hit[0] if hit else None)} | {_ratio(speedup(r, base), 2)} "
            f"| {_size(r.get('peak_memory_bytes'))} |"
        )
    return [*lines, ""]


def _precision_table(results: list[Record]) -> list[str]:
    rows = [r for r in results if r["workload"] == "precision"]
    if not rows:
        return []
    fp32 = next((r for r in rows if r["contender"] == "32-true"), None)
    lines = [
        "## precision (train step time)",
        "",
        f"Cache on, {rows[0]['steps_per_epoch']} steps of batch {rows[0]['batch_size']} per "
        f"epoch, device {rows[0]['device']}; step seconds of epoch 1+.",
        "",
        "| precision | step s | relative to 32-true |",
        "|---|---|---|",
    ]
    for r in rows:
        rel = r["median_step_seconds"] / fp32["median_step_seconds"] if fp32 else None
        lines.append(
            f"| {r['contender']} | {_stat(steady(r['epochs'], 'step_seconds'), '{:.3f}')} "
            f"| {_ratio(rel, 2)} |"
        )
    return [*lines, ""]


def targets(results: list[Record]) -> list[tuple[str, str, bool | None]]:
    """The issues' targets: ``(target, measured, met)``; ``met`` is None when not run."""
    out: list[tuple[str, str, bool | None]] = []
    for workload, other, threshold, name in (
        ("loader-val", "none", 10.0, "val, full budget, epochs 1+: >= 10x uncached"),
        ("loader-val", "ideal", 0.8, "val, full budget, epochs 1+: >= 0.8x ideal"),
        ("loader-train", "none", 2.0, "train split, full budget, epochs 1+: >= 2x uncached"),
    ):
        ours, them = find(results, workload, "auto", 1.0), find(results, workload, other)
        x = speedup(ours, them)
        shown = "not run" if x is None else f"{x:.2f}x"
        cpu = cpu_ratio(ours, them)
        if cpu is not None:
            shown += f" (CPU per sample: {cpu:.2f}x)"
        out.append((name, shown, None if x is None else x >= threshold))
    out += cache_targets(results)
    hc = next((r["hit_cost"] for r in results if r.get("hit_cost")), None)
    if hc:
        extra = hc["overhead_us"]
        hit = hc.get("hit_us", hc["get_us"])
        shown = f"{hit:.0f} us with its copy; copy alone {hc['copy_us']:.0f} us; +{extra:.0f} us"
        out.append(("a hit costs < 50 us plus the copy of its bytes", shown, extra < 50))
    return out


def _machine(m: Record) -> list[str]:
    gpu = m["gpu"]["name"] if m.get("gpu") else "none"
    start = ", ".join(f"{x:.2f}" for x in m.get("load_average", []))
    end = ", ".join(f"{x:.2f}" for x in m.get("load_average_end", []))
    return [
        f"- CPU: {m['cpu']}, {m['cores']} cores ({m['usable_cores']} usable); "
        f"memory {_size(m['memory_bytes'])}; GPU: {gpu}",
        f"- torch {m['torch']}, Lightning {m['pytorch_lightning']}, MONAI {m['monai']}, "
        f"Python {m['python']}; commit {m.get('commit')}",
        f"- load average at start {start}; at end {end}; "
        f"the bench took {m.get('seconds', 0):.0f} s",
    ]


def _hit_cost(results: list[Record]) -> list[str]:
    hc = next((r["hit_cost"] for r in results if r.get("hit_cost")), None)
    if not hc:
        return []
    hit = hc.get("hit_us", hc["get_us"])
    return [
        "## Hit cost",
        "",
        f"One hit of a {_size(hc['entry_bytes'])} sample (median of {hc['repeats']}): the "
        f"whole `cache.get` {hc['get_us']:.0f} us (keys, staleness check, mapped entry, "
        f"accounting), {hit:.0f} us with one copy of its arrays, against {hc['copy_us']:.0f} us "
        f"copying the same arrays from the process's own memory (all the ideal loader pays); "
        f"the general path (read a fresh copy, decode) takes {hc['read_us']:.0f} us.",
        "",
    ]


def render(doc: Record, command: str) -> str:
    """The whole ``bench.md``."""
    results = doc["results"]
    lines = ["# adaptive-cache bench", "", *_machine(doc["machine"]), ""]
    lines += [f"Command: `{command}`", ""]
    checks = targets(results)
    if checks:
        lines += ["## Targets", "", "| target | measured | met |", "|---|---|---|"]
        for name, shown, met in checks:
            verdict = "—" if met is None else ("yes" if met else "**no**")
            lines.append(f"| {name} | {shown} | {verdict} |")
        lines.append("")
    for workload in LOADER_WORKLOADS:
        lines += _loader_table(results, workload)
    lines += _hit_rate_table(results) + _knapsack_table(results)
    lines += _train_table(results) + _precision_table(results) + _hit_cost(results)
    return "\n".join(lines)
