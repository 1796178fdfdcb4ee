"""Syntax verdicts identical to the real `promtool check rules` (Prometheus 2.42 from Debian).

Each case is an expression promql-parser and Go's parser may disagree on: regexps (RE2 under
Go's rules), functions and syntax newer than 2.42 or behind flags, string quoting. All cases go
into one file, one group each, so promtool runs once and names the groups it refuses.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from enricher.lint.config import Config
from tests.lint.conftest import of, run

PROMTOOL = shutil.which("promtool")
needs_promtool = pytest.mark.skipif(PROMTOOL is None, reason="promtool is not installed")

# fmt: off
REGEXPS = [
    "a++", "(?<n>a)", r"\C", "a{1001}", r"\Q.\E", r"\0", r"\08", "(?P<1n>a)", r"\p{^Greek}",
    "[[:alpha:]]", "(?i)abc", "x**", "a{2}{3}", "(a)(?P<x>b)", r"\z", r"\Z", "(?U)a+", "(?s).",
    r"[a-\d]", r"\b", r"\pL", "(?m)^a$", "a{,5}", r"\8", r"[\C]", "a{1000}", "(a{500}){3}",
    r"\x{10FFFF}", r"\x{110000}", "[z-a]", "(?P<n>a)(?P<n>b)", "(?P<n", "a|*", "()", "(|a)",
    r"\pX", "[[:foo:]]", r"\Pn", "(?i:a)", "(?-s:.)", "(?z)", "x{2,1}", r"\1", "5..", "4..|5..",
    ".+", ".*", "kube-.*|node", "[^0-9]+", r"\d+", r"\\C", r"a\\\C", "(", ")", "[", "]", "{", "}",
    "a{", "a{1", "a{1,", "x{0}", "(?i)", "^a$", "$^", r"\A", r"\K", r"\e", r"\cA", "(?#x)",
]
# fmt: on
EXPRESSIONS = [
    # regexps, as the three string quotings spell them
    *(f"up{{job=~`{r}`}}" for r in REGEXPS),
    'up{job=~"a++"}',
    'up{job!~"a++"}',
    'up{job=~"\\\\Q.\\\\E"}',
    'up{job=~"\\\\d+"}',
    "up{job=~'5..'}",
    'up{job=~"\\d"}',
    '{job=~".*"}',
    '{job=~".+"}',
    '{job=~"x?"}',
    '{__name__=~"up|x"}',
    'label_replace(up, "a", "$1", "b", "(")',
    'label_replace(up, "a", "$1", "b", `(\\d+)`)',
    # functions newer than 2.42 or behind flags, and ones 2.42 has
    "limitk(1, up)",
    "limit_ratio(0.5, up)",
    'sort_by_label(up, "job")',
    'sort_by_label_desc(up, "job")',
    "mad_over_time(up[5m])",
    "histogram_avg(up)",
    "histogram_stddev(up)",
    "histogram_stdvar(up)",
    "histogram_count(up)",
    "histogram_sum(up)",
    "histogram_fraction(0, 1, up)",
    "info(up)",
    "double_exponential_smoothing(up[5m], 0.5, 0.5)",
    "holt_winters(up[5m], 0.5, 0.5)",
    "ts_of_max_over_time(up[5m])",
    "ts_of_last_over_time(up[5m])",
    "first_over_time(up[5m])",
    "present_over_time(up[5m])",
    "last_over_time(up[5m])",
    "sgn(up)",
    "clamp(up, 0, 1)",
    "group(up)",
    "quantile_over_time(0.9, up[5m])",
    # syntax
    '{"foo.bar"}',
    '{"foo.bar", job="x"}',
    'up{"a.b"="x"}',
    'sum by ("a.b") (up)',
    'sum by (job, "a.b") (up)',
    "time() - up > 10m",
    "up > 1_000",
    "rate(up[5m] * 2)",
    "rate(up[5m*2])",
    "rate(up[5])",
    "up offset 5",
    "up offset -5m",
    "up @ start()",
    "up @ 1609746000",
    "rate(up[1h:5m])",
    "rate(up[5m:])",
    "up[1d1h]",
    "up[1.5h]",
    "up + fill(0) up",
    'up{job="a" or job="b"}',
    "up # a comment\n > 0",
    'up{job="#"} > 0',
    "0x1F > up",
    "up > Inf",
    "up == bool 1",
    'sum(rate(http_requests_total{status=~"5.."}[5m])) by (job) > 0',
    'absent(up{job="x"})',
]


def _yaml(exprs: list[str]) -> str:
    groups = [{"name": f"g{i}", "rules": [{"record": "x", "expr": e}]} for i, e in enumerate(exprs)]
    return yaml.safe_dump({"groups": groups}, sort_keys=False)


def _promtool_refuses(path: Path) -> set[int]:
    proc = subprocess.run(
        [PROMTOOL, "check", "rules", str(path)], capture_output=True, text=True, timeout=60
    )
    return {int(m) for m in re.findall(r'group "g(\d+)"', proc.stdout + proc.stderr)}


def _we_refuse(exprs: list[str], config: Config | None = None) -> set[int]:
    findings = of(run(_yaml(exprs), config=config, checks=("syntax",)), "syntax")
    lines = {f.line for f in findings if f.severity.label == "error"}
    # safe_dump writes each group on 4 lines (name, rules, record, expr) after `groups:`,
    # longer when the expression wraps: map lines back by reading the file's own layout.
    starts = [i for i, line in enumerate(_yaml(exprs).splitlines(), 1) if "- name: g" in line]
    refused = set()
    for line in lines:
        index = max(i for i, start in enumerate(starts) if start <= line)
        refused.add(index)
    return refused


@needs_promtool
def test_expression_verdicts_equal_promtool_2_42(tmp_path: Path) -> None:
    path = tmp_path / "cases.yml"
    path.write_text(_yaml(EXPRESSIONS))
    theirs = _promtool_refuses(path)
    ours = _we_refuse(EXPRESSIONS)
    assert theirs, "promtool refused nothing: the cases do not exercise it"
    wrong = sorted(ours ^ theirs)
    assert not wrong, "\n".join(
        f"{'we refuse' if i in ours else 'promtool refuses'}: {EXPRESSIONS[i]!r}" for i in wrong
    )


@needs_promtool
@pytest.mark.parametrize(
    "field",
    ["limit: 10", "query_offset: 1m", "labels: {team: a}", "partial_response_strategy: warn"],
)
def test_group_field_verdicts_equal_promtool_2_42(tmp_path: Path, field: str) -> None:
    text = f"groups:\n  - name: g\n    {field}\n    rules:\n      - record: x\n        expr: up\n"
    path = tmp_path / "g.yml"
    path.write_text(text)
    proc = subprocess.run([PROMTOOL, "check", "rules", str(path)], capture_output=True, text=True)
    ours = [f for f in of(run(text, checks=("syntax",)), "syntax") if f.severity.label == "error"]
    assert (proc.returncode != 0) == bool(ours), (proc.stdout + proc.stderr, ours)


def test_newer_prometheus_with_the_flag_accepts_what_2_42_refuses() -> None:
    exprs = [
        "limitk(1, up)",
        'sort_by_label(up, "job")',
        "mad_over_time(up[5m])",
        '{"foo.bar"}',
        "time() - up > 10m",
        "rate(up[5])",
        'up{job=~"(?<n>a)"}',
    ]
    assert _we_refuse(exprs) == set(range(len(exprs)))
    newer = Config(
        prometheus_version=(3, 5), enable_features=frozenset(("promql-experimental-functions",))
    )
    assert _we_refuse(exprs, newer) == set()
    # 3.5 without the flag: the experimental functions only
    plain = Config(prometheus_version=(3, 5))
    assert _we_refuse(exprs, plain) == {0, 1, 2}


def test_holt_winters_is_gone_in_3_0_and_its_successor_needs_the_flag() -> None:
    exprs = ["holt_winters(up[5m], 0.5, 0.5)", "double_exponential_smoothing(up[5m], 0.5, 0.5)"]
    assert _we_refuse(exprs) == {1}
    assert _we_refuse(exprs, Config(prometheus_version=(3, 0))) == {0, 1}


def test_the_reason_names_the_version_and_the_flag() -> None:
    findings = of(run(_yaml(["limitk(1, up)"]), checks=("syntax",)), "syntax")
    assert len(findings) == 1
    assert "limitk" in findings[0].message
    assert "2.54" in findings[0].hint and "promql-experimental-functions" in findings[0].hint
    assert "2.42" in findings[0].hint


def test_regexp_error_is_reported_like_promtool() -> None:
    findings = of(run(_yaml(['up{job=~"a++"}']), checks=("syntax",)), "syntax")
    assert len(findings) == 1 and "error parsing regexp" in findings[0].message


def test_thanos_field_needs_the_thanos_option() -> None:
    text = (
        "groups:\n  - name: g\n    partial_response_strategy: warn\n"
        "    rules:\n      - record: x\n        expr: up\n"
    )
    plain = of(run(text, checks=("syntax",)), "syntax")
    assert len(plain) == 1 and "--thanos" in plain[0].hint
    assert of(run(text, config=Config(thanos=True), checks=("syntax",)), "syntax") == []
    bad = text.replace("warn", "sometimes")
    assert of(run(bad, config=Config(thanos=True), checks=("syntax",)), "syntax")


def test_regexp_values_survive_the_placeholder_swap() -> None:
    from enricher.lint import promql

    q = promql.parse('rate(x{code=~`5..`, path!~"/health\\\\z"}[5m]) > 0')
    sel = q.selectors[0]
    assert sel.name == "x"
    assert {m.name: m.value for m in sel.matchers if m.name != "__name__"} == {
        "code": "5..",
        "path": "/health\\z",
    }
