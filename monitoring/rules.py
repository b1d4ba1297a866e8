"""The shipped alert rules, read from ``monitoring/prometheus/rules.yml``."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import yaml

RULES_PATH = Path(__file__).resolve().parent / "prometheus" / "rules.yml"


@dataclass(frozen=True)
class AlertRule:
    """One alerting rule as written in a rules file."""

    name: str
    expr: str
    severity: str
    for_: str = "0s"
    annotations: dict[str, str] = field(default_factory=dict)


def alert_rules(path: str | Path = RULES_PATH) -> list[AlertRule]:
    """Every alerting rule of a Prometheus rules file, in file order.

    Raises:
        ValueError: the file is not a rules file (``groups`` of ``rules``), naming it.
    """
    path = Path(path)
    doc = yaml.safe_load(path.read_text())
    if not isinstance(doc, dict) or not isinstance(doc.get("groups"), list):
        raise ValueError(f"{path}: expected a Prometheus rules file with a 'groups' list")
    out = []
    for group in doc["groups"]:
        for rule in group.get("rules", []):
            if "alert" not in rule:
                continue  # a recording rule
            out.append(
                AlertRule(
                    name=rule["alert"],
                    expr=str(rule["expr"]).strip(),
                    severity=rule.get("labels", {}).get("severity", ""),
                    for_=str(rule.get("for", "0s")),
                    annotations=dict(rule.get("annotations", {})),
                )
            )
    return out
