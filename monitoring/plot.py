"""Plot the dashboard's main queries from a real Prometheus into one PNG.

Each panel's queries are fetched with ``query_range`` and drawn in a grid with
matplotlib's Agg canvas (no display, no global backend switch), with the start of
every training epoch marked. This is how the README picture is made::

    python -m monitoring.plot --url http://127.0.0.1:9090 --start -30m --out dashboard.png
"""

from __future__ import annotations

import argparse
import logging
import math
import re
import time
from collections.abc import Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from monitoring.dashboard import DASHBOARD_PATH, default_variables, iter_panels, load_dashboard
from monitoring.dashboard import substitute as substitute_variables
from monitoring.prom_api import PrometheusAPI

logger = logging.getLogger(__name__)

_LEGEND = re.compile(r"\{\{\s*(\w+)\s*\}\}")
_RELATIVE = re.compile(r"^-(\d+(?:\.\d+)?)([smhd])$")
_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
# Dashboard unit -> ladder of (smallest value shown in it, divisor, axis label); the
# largest value plotted picks the rung, so bytes read as MiB or GiB, seconds as ms or s.
_UNITS = {
    "bytes": [(0.0, 2**20, "MiB"), (4 * 2**30, 2**30, "GiB")],
    "percentunit": [(0.0, 0.01, "%")],
    "s": [(0.0, 1e-3, "ms"), (1.0, 1.0, "s")],
    "ops": [(0.0, 1.0, "1/s")],
}
# Panel types whose queries share one time axis in Grafana; the others (stat, table)
# show numbers side by side, so only their first query is drawn.
_TIMESERIES = {"timeseries", "graph"}
_MAX_LINES = 12  # more lines than that is unreadable at this size
_STYLES = ["-", "--", ":", "-."]  # one per query of a panel
_RIGHT_AXIS = 200.0  # peak ratio that moves a query to a right-hand axis
_EPOCH_LABELS = 10  # at most this many epoch numbers along the top of a panel
EPOCH_QUERY = 'max(adaptive_cache_training_epoch{job=~"$job", instance=~"$instance"})'


def _matplotlib() -> tuple[Any, Any]:
    """``(Figure, FigureCanvasAgg)``, imported when a plot is drawn (an optional extra)."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as exc:
        raise ImportError(
            f"monitoring.plot draws with matplotlib, which cannot be imported ({exc}); "
            "install the plot extra: pip install 'adaptive-cache[plot]'"
        ) from exc
    return Figure, FigureCanvasAgg


def parse_time(text: str, now: float | None = None) -> float:
    """``now``, ``-30m`` (relative), unix seconds or ISO 8601 -> unix seconds.

    Raises:
        ValueError: anything else, with the accepted forms.
    """
    now = time.time() if now is None else now
    text = text.strip()
    if text == "now":
        return now
    m = _RELATIVE.match(text)
    if m:
        return now - float(m.group(1)) * _SECONDS[m.group(2)]
    try:
        return float(text)
    except ValueError:
        pass
    try:
        return datetime.fromisoformat(text).timestamp()
    except ValueError:
        raise ValueError(
            f"expected a time as 'now', '-30m' (s, m, h, d), unix seconds or ISO 8601, got {text!r}"
        ) from None


def _legend(fmt: str, labels: Mapping[str, str]) -> str:
    text = _LEGEND.sub(lambda m: labels.get(m.group(1), ""), fmt).strip()
    return text or ", ".join(f"{k}={v}" for k, v in sorted(labels.items()) if k != "__name__")


def plot_dashboard(
    url: str,
    start: float,
    end: float,
    out: str | Path,
    *,
    step: float | None = None,
    dashboard: str | Path = DASHBOARD_PATH,
    variables: Mapping[str, str] | None = None,
    rate_interval: str = "1m",
    columns: int = 3,
    epoch_query: str | None = EPOCH_QUERY,
) -> Path:
    """Query each panel's queries over ``[start, end]`` and write a PNG grid.

    Time-series panels get every query (the first solid, the next dashed, ...);
    stat and table panels their first. Missing points leave gaps instead of being
    bridged, series that are zero throughout are drawn but left out of the legend,
    and a dotted line marks where each training epoch starts.

    Args:
        url: Prometheus base URL.
        start: first time (unix seconds).
        end: last time (unix seconds), after ``start``.
        out: PNG path to write (parent directories are created).
        step: seconds between points; default about 300 points over the range.
        dashboard: the dashboard JSON.
        variables: template variable values (``job``, ``instance``); default "All".
        rate_interval: what ``$__rate_interval`` becomes.
        columns: panels per row of the grid.
        epoch_query: PromQL for the current epoch (dashboard variables allowed),
            or None for no epoch marks.

    Returns:
        The path written.

    Raises:
        ValueError: ``end`` not after ``start``.
        PrometheusError: a query failed.
    """
    if end <= start:
        raise ValueError(f"end ({end}) must be after start ({start})")
    step = step or max(1.0, (end - start) / 300)
    api = PrometheusAPI(url)
    board = load_dashboard(dashboard)
    values = {
        **default_variables(board),
        "__rate_interval": rate_interval,
        "__interval": rate_interval,
        **(variables or {}),
    }
    epochs: list[tuple[float, int]] = []
    if epoch_query:
        expr = substitute_variables(epoch_query, values, "epoch_query")
        epochs = _epoch_starts(api.query_range(expr, start, end, step))
    panels = [p for p in iter_panels(board) if p["targets"][0].get("expr")]
    rows = max(1, math.ceil(len(panels) / columns))
    Figure, FigureCanvasAgg = _matplotlib()
    fig = Figure(figsize=(5.2 * columns, 3.3 * rows), layout="constrained")
    FigureCanvasAgg(fig)
    for i, panel in enumerate(panels):
        ax = fig.add_subplot(rows, columns, i + 1)
        targets = [t for t in panel["targets"] if t.get("expr")]
        if panel.get("type") not in _TIMESERIES:
            targets = targets[:1]
        where = f"panel {panel['title']!r}"
        results = [
            (t, api.query_range(substitute_variables(t["expr"], values, where), start, end, step))
            for t in targets
        ]
        _draw(ax, panel, results, start, step)
        _mark_epochs(ax, epochs, start)
        ax.set_xlim(0, (end - start) / 60)  # one time axis for every panel, empty ones too
    fig.suptitle(
        f"{board.get('title', 'dashboard')}, {datetime.fromtimestamp(start):%Y-%m-%d %H:%M}"
        f" + {(end - start) / 60:.1f} min"
    )
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=90)
    logger.info("wrote %s (%d panels)", out, len(panels))
    return out


def _points(values: Sequence[Sequence[Any]], step: float) -> tuple[list[float], list[float]]:
    """Matrix values -> (times, values) with a NaN wherever a step has no sample.

    Matplotlib joins consecutive points, so without the NaN a series that stopped
    and came back (an alert that resolved, a rate between validation phases) would
    look continuous.
    """
    xs: list[float] = []
    ys: list[float] = []
    for t, v in values:
        t = float(t)
        if xs and t - xs[-1] > 1.5 * step:
            xs.append(xs[-1] + step)
            ys.append(math.nan)
        xs.append(t)
        ys.append(float(v))
    return xs, ys


def _isolated(ys: Sequence[float]) -> list[int]:
    """Indices of finite points with no finite neighbour: a line alone hides them."""
    finite = [math.isfinite(y) for y in ys]
    return [
        i
        for i, ok in enumerate(finite)
        if ok and not (i > 0 and finite[i - 1]) and not (i + 1 < len(ys) and finite[i + 1])
    ]


def _scale(unit: str, peak: float) -> tuple[float, str]:
    ladder = _UNITS.get(unit, [(0.0, 1.0, "")])
    rungs = [(divisor, label) for low, divisor, label in ladder if peak >= low]
    return rungs[-1] if rungs else ladder[0][1:]


def _peak(ys: Sequence[float]) -> float:
    return max((abs(y) for y in ys if math.isfinite(y)), default=0.0)


def _draw(
    ax: Any,
    panel: Mapping[str, Any],
    results: Sequence[tuple[Mapping[str, Any], Sequence[Any]]],
    t0: float,
    step: float,
) -> None:
    unit = panel.get("fieldConfig", {}).get("defaults", {}).get("unit", "")
    ax.set_title(panel["title"], fontsize=10)
    ax.tick_params(labelsize=7)
    ax.set_xlabel("minutes from start", fontsize=7)
    lines = []
    for n, (target, result) in enumerate(results):
        for series in result:
            xs, ys = _points(series["values"], step)
            name = _legend(target.get("legendFormat", ""), series["metric"])
            lines.append((_peak(ys) == 0, n, name, xs, ys))
    if not lines:
        ax.text(0.5, 0.5, "no data", ha="center", va="center", transform=ax.transAxes)
        return
    # Lines that move first, so they get the first colours and survive the cap.
    lines.sort(key=lambda line: line[0])
    drawn = lines[:_MAX_LINES]
    # A query hundreds of times larger than the first (host headroom in GiB next to a
    # cache in MiB) gets its own axis on the right; on one axis the rest is a flat line.
    first = max((_peak(ys) for _, n, _, _, ys in drawn if n == 0), default=0.0)
    right = {
        n for _, n, _, _, ys in drawn if n > 0 and first > 0 and _peak(ys) > _RIGHT_AXIS * first
    }
    axes = {False: ax, True: ax.twinx() if right else None}
    handles = []
    for side, side_ax in axes.items():
        mine = [line for line in drawn if (line[1] in right) == side]
        if side_ax is None or not mine:
            continue
        divisor, label = _scale(unit, max(_peak(line[4]) for line in mine))
        if side:
            names = ", ".join(sorted({line[2] for line in mine}))
            label = f"{label} ({names})" if label else names
            side_ax.tick_params(labelsize=7)
        if label:
            side_ax.set_ylabel(label, fontsize=7)
        for flat, n, name, xs, ys in mine:
            (handle,) = side_ax.plot(
                [(x - t0) / 60 for x in xs],
                [y / divisor for y in ys],
                _STYLES[n % len(_STYLES)],
                color=f"C{drawn.index((flat, n, name, xs, ys)) % 10}",
                linewidth=1.2,
                marker=".",
                markersize=4,
                markevery=_isolated(ys),
                label=name,
            )
            if not flat:
                handles.append(handle)
    notes = []
    flat_count = sum(line[0] for line in drawn)
    if flat_count:
        notes.append(f"{flat_count} series at 0 throughout")
    if len(lines) > _MAX_LINES:
        notes.append(f"{len(lines) - _MAX_LINES} more series not drawn")
    if notes:
        ax.text(
            0.99,
            0.01,
            "; ".join(notes),
            ha="right",
            va="bottom",
            fontsize=6,
            color="0.4",
            transform=ax.transAxes,
        )
    if handles:
        (axes[True] or ax).legend(handles=handles, fontsize=6, loc="best")


def _epoch_starts(result: Sequence[Any]) -> list[tuple[float, int]]:
    """(time, epoch) where the epoch series first shows each new value."""
    starts: list[tuple[float, int]] = []
    for series in result:
        for t, v in series["values"]:
            value = float(v)
            if math.isfinite(value) and (not starts or int(value) != starts[-1][1]):
                starts.append((float(t), int(value)))
    return starts


def _mark_epochs(ax: Any, epochs: Sequence[tuple[float, int]], t0: float) -> None:
    every = max(1, math.ceil(len(epochs) / _EPOCH_LABELS))
    for i, (t, epoch) in enumerate(epochs):
        x = (t - t0) / 60
        ax.axvline(x, color="0.75", linewidth=0.7, linestyle=":", zorder=0)
        if i % every:
            continue
        ax.text(
            x,
            1.0,
            f" e{epoch}",
            fontsize=6,
            color="0.5",
            ha="left",
            va="top",
            transform=ax.get_xaxis_transform(),
        )


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: ``python -m monitoring.plot --url URL --start -30m --out x.png``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="http://127.0.0.1:9090", help="Prometheus base URL")
    parser.add_argument("--start", default="-30m", help="now, -30m, unix seconds or ISO 8601")
    parser.add_argument("--end", default="now", help="as --start")
    parser.add_argument("--step", type=float, default=None, help="seconds between points")
    parser.add_argument("--job", default=None, help="job label (default: all)")
    parser.add_argument("--instance", default=None, help="instance label (default: all)")
    parser.add_argument("--rate-interval", default="1m", help="range of rate() windows")
    parser.add_argument("--dashboard", default=str(DASHBOARD_PATH))
    parser.add_argument("--out", default="dashboard.png")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    now = time.time()
    variables = {k: v for k, v in (("job", args.job), ("instance", args.instance)) if v}
    plot_dashboard(
        args.url,
        parse_time(args.start, now),
        parse_time(args.end, now),
        args.out,
        step=args.step,
        dashboard=args.dashboard,
        variables=variables,
        rate_interval=args.rate_interval,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
