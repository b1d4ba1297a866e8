"""Small PromQL text helpers: which metrics an expression names, and a presence form.

Not a parser: enough of PromQL's lexical structure (strings, label matchers, range
brackets, grouping clauses, function calls) to check dashboards and rules against
what the exporter serves.
"""

from __future__ import annotations

import re

_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
_BRACES = re.compile(r"\{[^{}]*\}")
_BRACKETS = re.compile(r"\[[^\[\]]*\]")
_GROUPING = re.compile(
    r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^()]*\)", re.IGNORECASE
)
_IDENT = re.compile(r"(?<![\w:.])([A-Za-z_:][\w:]*)(\s*\()?")
_KEYWORDS = frozenset(
    {
        "and",
        "or",
        "unless",
        "by",
        "without",
        "on",
        "ignoring",
        "group_left",
        "group_right",
        "bool",
        "offset",
        "inf",
        "nan",
    }
)
_OFFSET = re.compile(r"\s+offset\s+-?[0-9][0-9a-z]*", re.IGNORECASE)
_COMPARISON = re.compile(r"(==|!=|>=|<=|>|<)(?!\s*bool\b)")


def metric_names(expr: str) -> set[str]:
    """Metric names an expression selects (``up``, ``ALERTS`` included).

    Example:
        >>> sorted(metric_names('sum by (tier) (rate(a_total{x="1"}[5m])) / b'))
        ['a_total', 'b']
    """
    text = _STRING.sub('""', expr)
    text = _BRACES.sub("{}", text)
    text = _BRACKETS.sub("[]", text)
    text = _GROUPING.sub(" ", text)
    names = set()
    for match in _IDENT.finditer(text):
        name, call = match.group(1), match.group(2)
        if call or name.lower() in _KEYWORDS:
            continue  # a function or aggregation, or a keyword
        names.add(name)
    return names


def presence_expr(expr: str) -> str:
    """``expr`` rewritten to return a sample for every series it compares.

    Comparisons become ``bool`` comparisons (0 or 1 instead of filtering) and
    ``offset`` modifiers are dropped, so an alert expression returns data from a run
    that is only seconds old whether or not its condition holds. Label matchers and
    strings are left untouched.

    Example:
        >>> presence_expr('up{job!="x"} == 0')
        'up{job!="x"} == bool 0'
    """
    out, pos = [], 0
    # Only rewrite outside strings and label matchers, where != and =~ also occur.
    for m in re.finditer(r'\{[^{}]*\}|"(?:[^"\\]|\\.)*"', expr):
        out.append(_rewrite(expr[pos : m.start()]))
        out.append(m.group(0))
        pos = m.end()
    out.append(_rewrite(expr[pos:]))
    return "".join(out)


def _rewrite(text: str) -> str:
    text = _OFFSET.sub("", text)
    return _COMPARISON.sub(r"\1 bool", text)
