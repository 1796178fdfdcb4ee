"""Which Prometheus accepts which syntax: the table behind `--prometheus-version` and
`--enable-feature`.

Why a table: promql-parser follows the newest Prometheus, and a rule file is loaded by the
Prometheus a team runs, not the newest one. A rule that uses `limitk` passes every parser that
knows it and is refused at reload by a 2.42 server, so every alert in the file stops. Each entry
says since which version a construct parses and which `--enable-feature` flag it needs there.
The 2.42 column (the project's default) was checked against Debian's promtool 2.42; later rows
come from the upstream changelog.
"""

from __future__ import annotations

from typing import NamedTuple

EXPERIMENTAL = "promql-experimental-functions"


class Since(NamedTuple):
    version: tuple[int, int]
    flag: str | None = None  # needed from `version` on; None: on by default
    removed: tuple[int, int] | None = None  # no longer parses from this version
    default_from: tuple[int, int] | None = None  # the flag is no longer needed from here


# Functions and aggregation operators newer than Prometheus 2.0 or behind a flag.
FUNCTIONS: dict[str, Since] = {
    "last_over_time": Since((2, 26)),
    "sgn": Since((2, 26)),
    "clamp": Since((2, 26)),
    "acos": Since((2, 26)),
    "acosh": Since((2, 26)),
    "asin": Since((2, 26)),
    "asinh": Since((2, 26)),
    "atan": Since((2, 26)),
    "atanh": Since((2, 26)),
    "cos": Since((2, 26)),
    "cosh": Since((2, 26)),
    "sin": Since((2, 26)),
    "sinh": Since((2, 26)),
    "tan": Since((2, 26)),
    "tanh": Since((2, 26)),
    "deg": Since((2, 26)),
    "rad": Since((2, 26)),
    "pi": Since((2, 26)),
    "present_over_time": Since((2, 29)),
    "histogram_count": Since((2, 40)),
    "histogram_sum": Since((2, 40)),
    "histogram_fraction": Since((2, 40)),
    "histogram_stddev": Since((2, 44)),
    "histogram_stdvar": Since((2, 44)),
    "histogram_avg": Since((2, 50)),
    "holt_winters": Since((2, 0), removed=(3, 0)),
    "double_exponential_smoothing": Since((3, 0), EXPERIMENTAL),
    "sort_by_label": Since((2, 49), EXPERIMENTAL),
    "sort_by_label_desc": Since((2, 49), EXPERIMENTAL),
    "mad_over_time": Since((2, 49), EXPERIMENTAL),
    "limitk": Since((2, 54), EXPERIMENTAL),
    "limit_ratio": Since((2, 54), EXPERIMENTAL),
    "info": Since((2, 55), EXPERIMENTAL),
    "ts_of_min_over_time": Since((3, 5), EXPERIMENTAL),
    "ts_of_max_over_time": Since((3, 5), EXPERIMENTAL),
    "ts_of_last_over_time": Since((3, 5), EXPERIMENTAL),
    "first_over_time": Since((3, 7), EXPERIMENTAL),
    "ts_of_first_over_time": Since((3, 7), EXPERIMENTAL),
}

# Syntax that is not a function: the key is what `promql.scan` reports.
SYNTAX: dict[str, tuple[str, Since]] = {
    "utf8-names": (
        'quoted metric or label names ({"my.metric"})',
        Since((2, 55), "utf8-names", default_from=(3, 0)),
    ),
    "duration-number": (
        "a duration used as a number (`> 10m`)",
        Since((2, 54)),
    ),
    "unitless-duration": (
        "a number used as a duration (`[300]`, `offset 60`)",
        Since((3, 0)),
    ),
    "duration-expr": (
        "arithmetic in a duration (`[5m * 2]`)",
        Since((3, 4), "promql-duration-expr", default_from=(3, 14)),
    ),
    "fill-modifiers": (
        "fill() modifiers on a binary operator",
        Since((3, 10), "promql-binop-fill-modifiers"),
    ),
    "regexp-named-groups": (
        "a (?<name>...) regexp group (Go 1.22 syntax)",
        Since((2, 51)),
    ),
}

# Rule-file fields newer than 2.0 (a group field, or a Thanos one).
GROUP_FIELDS: dict[str, Since] = {
    "limit": Since((2, 31)),
    "query_offset": Since((2, 53)),
    "labels": Since((3, 0)),
}
THANOS_GROUP_FIELDS = frozenset(("partial_response_strategy",))


def fmt(version: tuple[int, int]) -> str:
    return f"{version[0]}.{version[1]}"


def unsupported(since: Since, version: tuple[int, int], features: frozenset[str]) -> str | None:
    """Why `version` with `features` does not accept a construct, or None when it does."""
    if since.removed is not None and version >= since.removed:
        return f"removed in Prometheus {fmt(since.removed)}"
    if version < since.version:
        need = f"Prometheus {fmt(since.version)}"
        if since.flag and not (since.default_from and since.default_from <= since.version):
            need += f" with --enable-feature={since.flag}"
        return f"needs {need}"
    if since.flag and since.flag not in features:
        if since.default_from is not None and version >= since.default_from:
            return None
        return f"needs --enable-feature={since.flag}"
    return None
