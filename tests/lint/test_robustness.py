"""Never a traceback: garbled input gives findings or exit 2, a crashing check gives a finding."""

from __future__ import annotations

import io
from pathlib import Path

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from enricher.lint.checks import labels as labels_check
from enricher.lint.cli import main
from tests.lint.conftest import GOOD_ALERT, of, rule, rules_yaml, run, run_rules

VALID = rules_yaml(GOOD_ALERT, {"record": "job:x:rate5m", "expr": "sum(rate(x_total[5m]))"})
KEYS = [
    "groups",
    "name",
    "rules",
    "alert",
    "record",
    "expr",
    "for",
    "labels",
    "annotations",
    "interval",
    "limit",
    "keep_firing_for",
    "spec",
    "kind",
    "severity",
    "summary",
    "<<",
]
EXPRS = [
    "up",
    "up == 0",
    "sum(rate(x_total[5m])) > 1",
    "sum(",
    "{{",
    "histogram_quantile(0.9,",
    'absent(x{a="b"})',
    "x > bool 1",
    "rate(sum(x)[5m:])",
    "",
    "1",
    "a and b or c",
]


def lint_text(text: str) -> int:
    out, err = io.StringIO(), io.StringIO()
    code = main(["-"], stdin=io.StringIO(text), stdout=out, stderr=err)
    assert "Traceback" not in out.getvalue() + err.getvalue()
    return code


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    cuts=st.lists(
        st.tuples(st.integers(0, len(VALID)), st.integers(0, 8), st.text(max_size=6)),
        max_size=6,
    )
)
def test_garbled_rule_file_never_crashes(cuts: list[tuple[int, int, str]]) -> None:
    text = VALID
    for at, length, insert in cuts:
        text = text[:at] + insert + text[at + length :]
    assert lint_text(text) in (0, 1, 2)


@settings(max_examples=150, deadline=None)
@given(st.text(alphabet=st.sampled_from(list("{}[]:-#&*!|>'\"\n\t ,.$%@`abc01")), max_size=200))
def test_random_yaml_like_text_never_crashes(text: str) -> None:
    assert lint_text(text) in (0, 1, 2)


scalars = st.one_of(
    st.none(), st.booleans(), st.integers(), st.sampled_from(EXPRS), st.text(max_size=10)
)
trees = st.recursive(
    scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=4),
        st.dictionaries(st.sampled_from(KEYS), children, max_size=5),
    ),
    max_leaves=25,
)


@settings(max_examples=200, deadline=None)
@given(trees)
def test_random_rule_shaped_documents_never_crash(tree: object) -> None:
    assert lint_text(yaml.safe_dump({"groups": tree} if isinstance(tree, list) else tree)) in (
        0,
        1,
        2,
    )


def test_a_crashing_check_becomes_a_finding_on_that_rule(monkeypatch) -> None:
    def boom(rule, ctx):
        raise KeyError("unexpected")

    monkeypatch.setattr(labels_check, "check", boom)
    findings = run_rules(rule(), rule(alert="Other"))
    crashed = of(findings, "labels")
    assert [f.rule for f in crashed] == ["CheckoutHighErrorRate", "Other"]
    assert crashed[0].message == "internal error in check labels: KeyError: 'unexpected'"


def test_binary_and_non_utf8_files_are_findings_not_crashes(tmp_path: Path) -> None:
    path = tmp_path / "bin.yml"
    path.write_bytes(b"groups:\n- name: \xff\xfe\x00\n")
    out, err = io.StringIO(), io.StringIO()
    assert main([str(path)], stdout=out, stderr=err) == 1
    assert "not valid UTF-8" in out.getvalue()


def test_absurdly_deep_expression_is_a_note_not_a_crash() -> None:
    # promql-parser overflows the native stack on a few thousand chained operators.
    expr = " + ".join(["up"] * 20_000) + " > 1"
    findings = of(run_rules(rule(expr=expr)), "syntax")
    assert [(f.severity.label, f.message) for f in findings] == [
        ("info", "expression not checked: more than 1000 operators and parentheses")
    ]


def test_deep_but_reasonable_expression_is_checked() -> None:
    expr = " or ".join(f'up{{job="j{i}"}} == 0' for i in range(300))
    assert of(run_rules(rule(expr=expr, labels={"severity": "warning"})), "syntax") == []


def test_deeply_nested_yaml_is_a_finding_not_a_crash() -> None:
    # libyaml's composer recurses on the native stack; 10^6 brackets would crash it.
    text = "groups: " + "[" * 1_000_000 + "]" * 1_000_000
    found = of(run(text), "syntax")
    assert [f.message for f in found] == ["YAML is nested more than 5000 levels deep"]
