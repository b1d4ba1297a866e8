"""Plot the dashboard's main queries from a real Prometheus into one PNG.

Each panel's first query is fetched with ``query_range`` and drawn in a grid with
matplotlib's Agg canvas (no display, no global backend switch). This is how the
README picture is made::

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

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from monitoring.dashboard import DASHBOARD_PATH, default_variables, iter_panels, load_dashboard
from monitoring.dashboard import substitute as substitute_variables
from monitoring.prom_api import PrometheusAPI

logger = logging.getLogger(__name__)

_LEGEND = re.compile(r"\{\{\s*(\w+)\s*\}\}")
_RELATIVE = re.compile(r"^-(\d+(?:\.\d+)?)([smhd])$")
_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
# unit -> (divisor, axis label) for the units the dashboard uses.
_UNITS = {
    "bytes": (2**20, "MiB"),
    "percentunit": (0.01, "%"),
    "s": (1.0, "s"),
    "ops": (1.0, "1/s"),
}


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
) -> Path:
    """Query each panel's main query over ``[start, end]`` and write a PNG grid.

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
    panels = [p for p in iter_panels(board) if p["targets"][0].get("expr")]
    rows = max(1, math.ceil(len(panels) / columns))
    fig = Figure(figsize=(5.2 * columns, 3.3 * rows), layout="constrained")
    FigureCanvasAgg(fig)
    for i, panel in enumerate(panels):
        ax = fig.add_subplot(rows, columns, i + 1)
        target = panel["targets"][0]
        expr = substitute_variables(target["expr"], values, f"panel {panel['title']!r}")
        _draw(ax, panel, target, api.query_range(expr, start, end, step), start)
    fig.suptitle(
        f"{board.get('title', 'dashboard')}, {datetime.fromtimestamp(start):%Y-%m-%d %H:%M}"
    )
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=90)
    logger.info("wrote %s (%d panels)", out, len(panels))
    return out


def _draw(
    ax: Any, panel: Mapping[str, Any], target: Mapping[str, Any], result: Sequence[Any], t0: float
) -> None:
    unit = panel.get("fieldConfig", {}).get("defaults", {}).get("unit", "")
    divisor, label = _UNITS.get(unit, (1.0, ""))
    ax.set_title(panel["title"], fontsize=10)
    ax.tick_params(labelsize=7)
    ax.set_xlabel("minutes", fontsize=7)
    if label:
        ax.set_ylabel(label, fontsize=7)
    if not result:
        ax.text(0.5, 0.5, "no data", ha="center", va="center", transform=ax.transAxes)
        return
    for series in result[:12]:  # more lines than that is unreadable at this size
        points = [(float(t), float(v)) for t, v in series["values"]]
        xs = [(t - t0) / 60 for t, _ in points]
        ys = [v / divisor for _, v in points]
        ax.plot(
            xs, ys, linewidth=1, label=_legend(target.get("legendFormat", ""), series["metric"])
        )
    ax.legend(fontsize=6, loc="best")


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
