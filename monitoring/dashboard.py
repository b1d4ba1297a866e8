"""Read the Grafana dashboard: every panel's PromQL with template variables filled in.

Used by the end-to-end test (each query must return data from a real Prometheus)
and by :mod:`monitoring.plot` (the README picture). The dashboard lives in
``grafana/dashboards/`` at the repository root.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

DASHBOARD_PATH = (
    Path(__file__).resolve().parents[1] / "grafana" / "dashboards" / "adaptive-cache.json"
)

# Grafana's ${name}, ${name:format}, $name and the deprecated [[name]].
_VARIABLE = re.compile(r"\$\{(\w+)(?::\w+)?\}|\$(\w+)|\[\[(\w+)\]\]")
_LABEL_VALUES = re.compile(r"^\s*label_values\(\s*(.+?)\s*,\s*(\w+)\s*\)\s*$")


def load_dashboard(path: str | Path = DASHBOARD_PATH) -> dict[str, Any]:
    """The dashboard JSON as a dict.

    Raises:
        ValueError: the file is not a dashboard (no ``panels`` list), naming it.
    """
    path = Path(path)
    doc = json.loads(path.read_text())
    if not isinstance(doc, dict) or not isinstance(doc.get("panels"), list):
        raise ValueError(f"{path}: expected a Grafana dashboard with a 'panels' list")
    return doc


def iter_panels(dashboard: Mapping[str, Any]) -> Iterator[dict[str, Any]]:
    """Every panel with queries, including those inside collapsed rows."""
    for panel in dashboard.get("panels", []):
        if panel.get("type") == "row":
            yield from (p for p in panel.get("panels", []) if p.get("targets"))
        elif panel.get("targets"):
            yield panel


def default_variables(dashboard: Mapping[str, Any]) -> dict[str, str]:
    """Template variable values as "All" would give: ``allValue`` (else the current one)."""
    out = {}
    for var in dashboard.get("templating", {}).get("list", []):
        if var.get("type") == "datasource":
            continue
        if var.get("includeAll") and var.get("allValue"):
            out[var["name"]] = var["allValue"]
        else:
            value = var.get("current", {}).get("value", "")
            out[var["name"]] = value[0] if isinstance(value, list) and value else str(value)
    return out


def substitute(expr: str, variables: Mapping[str, str], where: str = "query") -> str:
    """Replace template variables in ``expr``.

    Raises:
        ValueError: a variable with no value (the message names ``where`` and it).
    """

    def repl(m: re.Match[str]) -> str:
        name = m.group(1) or m.group(2) or m.group(3)
        if name not in variables:
            raise ValueError(
                f"{where}: template variable ${name} has no value; known: {sorted(variables)}"
            )
        return variables[name]

    return _VARIABLE.sub(repl, expr)


def panel_queries(
    path: str | Path = DASHBOARD_PATH,
    variables: Mapping[str, str] | None = None,
    *,
    rate_interval: str = "1m",
    main_only: bool = False,
) -> list[tuple[str, str]]:
    """``(panel title, PromQL)`` for every query of every panel, variables substituted.

    Args:
        path: the dashboard JSON.
        variables: values for the template variables (``job``, ``instance``); missing
            ones take their "All" value (a regex matching any value).
        rate_interval: what Grafana's ``$__rate_interval`` becomes (at least four
            scrape intervals).
        main_only: only the first query of each panel.

    Raises:
        ValueError: a query uses a variable with no value.

    Example:
        >>> panel_queries(variables={"job": "adaptive-cache"})[0][0]
        'Hit ratio per tier'
    """
    dashboard = load_dashboard(path)
    values = {
        **default_variables(dashboard),
        "__rate_interval": rate_interval,
        "__interval": rate_interval,
        **(variables or {}),
    }
    out = []
    for panel in iter_panels(dashboard):
        title = panel.get("title", f"panel {panel.get('id')}")
        targets = [t for t in panel["targets"] if t.get("expr") and not t.get("hide")]
        for target in targets[:1] if main_only else targets:
            where = f"{path}: panel {title!r} query {target.get('refId', '?')}"
            out.append((title, substitute(target["expr"], values, where)))
    return out


def variable_selectors(
    path: str | Path = DASHBOARD_PATH, variables: Mapping[str, str] | None = None
) -> list[tuple[str, str]]:
    """``(variable name, series selector)`` of each ``label_values(selector, label)`` variable."""
    dashboard = load_dashboard(path)
    values = {**default_variables(dashboard), **(variables or {})}
    out = []
    for var in dashboard.get("templating", {}).get("list", []):
        query = var.get("query")
        text = query.get("query", "") if isinstance(query, dict) else str(query or "")
        m = _LABEL_VALUES.match(text)
        if m:
            out.append((var["name"], substitute(m.group(1), values, f"variable {var['name']}")))
    return out
