"""syntax: what promtool rejects, reported at the line it is on."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from tests.lint.conftest import GOOD_ALERT, of, rule, rules_yaml, run, run_rules


def syntax(text: str) -> list[tuple[int, str]]:
    return [(f.line, f.message) for f in of(run(text), "syntax")]


def test_good_rule_has_no_syntax_findings() -> None:
    assert of(run_rules(rule()), "syntax") == []


def test_yaml_that_does_not_parse_is_reported_at_its_line() -> None:
    found = syntax(
        """\
        groups:
          - name: a
            rules:
              - alert: X
                expr: up == 0
                labels: {severity: [critical
        """
    )
    assert len(found) == 1
    line, message = found[0]
    assert line >= 6 and "YAML does not parse" in message


def test_unknown_rule_field_is_reported_at_the_field() -> None:
    found = syntax(
        """\
        groups:
          - name: a
            rules:
              - alert: X
                expr: up == 0
                annotation:
                  summary: typo in the key
        """
    )
    assert found == [(6, "field annotation not found in type rulefmt.RuleNode")]


def test_unknown_group_and_top_level_fields_are_reported() -> None:
    found = syntax(
        """\
        groups:
          - name: a
            evaluation_interval: 1m
            rules: []
        extra: 1
        """
    )
    assert (3, "field evaluation_interval not found in type rulefmt.RuleGroup") in found
    assert (5, "field extra not found in type rulefmt.RuleGroups") in found


def test_duplicate_group_names_are_reported() -> None:
    found = syntax("groups:\n  - name: a\n    rules: []\n  - name: a\n    rules: []\n")
    assert found and 'groupname: "a" is repeated in the same file' in found[0][1]
    assert found[0][0] == 4


def test_rule_with_both_alert_and_record_is_reported() -> None:
    found = syntax("groups:\n- name: a\n  rules:\n  - alert: A\n    record: a:b\n    expr: up\n")
    assert (4, "only one of 'record' and 'alert' must be set") in found


def test_rule_with_neither_alert_nor_record_is_reported() -> None:
    found = syntax("groups:\n- name: a\n  rules:\n  - expr: up\n")
    assert (4, "one of 'record' or 'alert' must be set") in found


def test_invalid_recording_rule_name_is_reported() -> None:
    found = syntax("groups:\n- name: a\n  rules:\n  - record: job-errors\n    expr: up\n")
    assert (4, "invalid recording rule name: job-errors") in found


def test_recording_rule_with_for_and_annotations_is_reported() -> None:
    found = syntax(
        "groups:\n- name: a\n  rules:\n  - record: a:b\n    expr: up\n    for: 5m\n"
        "    annotations: {summary: x}\n"
    )
    messages = [m for _, m in found]
    assert "invalid field 'for' in recording rule" in messages
    assert "invalid field 'annotations' in recording rule" in messages


def test_promql_error_points_at_the_expression_line() -> None:
    found = syntax(
        """\
        groups:
          - name: a
            rules:
              - alert: X
                expr: |
                  sum(rate(http_requests_total[5m]) > 1
        """
    )
    assert len(found) == 1
    assert found[0][0] == 6
    assert found[0][1].startswith("could not parse expression:")


def test_invalid_for_duration_is_reported() -> None:
    found = of(run_rules(rule(for_="10minutes")), "syntax")
    assert [f.message for f in found] == [
        "invalid 'for': not a valid duration string: \"10minutes\""
    ]


def test_keep_firing_for_is_accepted_and_checked() -> None:
    assert of(run_rules(rule(keep_firing_for="5m")), "syntax") == []
    bad = of(run_rules(rule(keep_firing_for="5 m")), "syntax")
    assert bad and "keep_firing_for" in bad[0].message


def test_template_that_does_not_parse_is_reported_at_its_annotation() -> None:
    found = syntax(
        """\
        groups:
          - name: a
            rules:
              - alert: X
                expr: up == 0
                annotations:
                  summary: "{{ $labels.instance } is down"
        """
    )
    assert len(found) == 1
    assert found[0][0] == 7
    assert "template in annotation 'summary' does not parse" in found[0][1]


def test_duplicate_keys_are_reported() -> None:
    found = syntax("groups:\n- name: a\n  rules:\n  - alert: A\n    expr: up\n    expr: down\n")
    assert (6, 'mapping key "expr" already defined at line 5') in found


def test_invalid_label_and_annotation_names_are_reported() -> None:
    found = syntax(
        "groups:\n- name: a\n  rules:\n  - alert: A\n    expr: up == 0\n"
        "    labels: {bad-name: x, __name__: y}\n    annotations: {0x: z}\n"
    )
    messages = {m for _, m in found}
    assert {"invalid label name: bad-name", "invalid label name: __name__"} <= messages
    assert "invalid annotation name: 0x" in messages


def test_prometheus_2_functions_the_parser_dropped_still_parse() -> None:
    assert of(run_rules(rule(expr="holt_winters(x[10m], 0.5, 0.5) > 1")), "syntax") == []


# promtool is the reference: for each case, our verdict must be promtool's.
ORACLE_CASES = {
    "good": rules_yaml(GOOD_ALERT),
    "good_record": "groups:\n- name: a\n  rules:\n  - record: job:up:sum\n    expr: sum(up)\n",
    "good_templates": rules_yaml(
        rule(
            annotations={
                "a": '{{ with query "up" }}{{ . | first | value | humanize }}{{ end }}',
                "b": '{{ range $i, $x := query "up" }}{{ $x.Labels.job }}{{ end }}',
                "c": "{{ if gt $value 0.5 }}high{{ else }}low{{ end }}",
                "d": "{{- /* comment */ -}}{{ $externalLabels.cluster }}",
                "e": '{{ reReplaceAll ":.*" "" $labels.instance | toUpper }}',
                "f": "{{ printf \"%.2f\" $value }} {{ 1e3 }} {{ -2 }} {{ 'x' }}",
            }
        )
    ),
    "good_keep_firing_for": rules_yaml(rule(keep_firing_for="10m")),
    "good_empty": "",
    "good_null_rules": "groups:\n- name: a\n  rules:\n",
    "bad_yaml": "groups:\n- name: [a\n",
    "bad_unknown_field": rules_yaml(rule(annotation={"summary": "x"})),
    "bad_top_field": "groups: []\nrules: []\n",
    "bad_dup_group": "groups:\n- name: a\n  rules: []\n- name: a\n  rules: []\n",
    "bad_both": "groups:\n- name: a\n  rules:\n  - alert: A\n    record: a\n    expr: up\n",
    "bad_neither": "groups:\n- name: a\n  rules:\n  - expr: up\n",
    "bad_record_name": "groups:\n- name: a\n  rules:\n  - record: a-b\n    expr: up\n",
    "bad_promql": rules_yaml(rule(expr="sum(rate(x[5m])")),
    "bad_for": rules_yaml(rule(for_="5minutes")),
    "bad_for_order": rules_yaml(rule(for_="5m1h")),
    "bad_no_expr": "groups:\n- name: a\n  rules:\n  - alert: A\n",
    "bad_template_unclosed": rules_yaml(rule(annotations={"s": "{{ $labels.x "})),
    "bad_template_function": rules_yaml(rule(annotations={"s": "{{ nosuchfunc 1 }}"})),
    "bad_template_variable": rules_yaml(rule(annotations={"s": "{{ $nosuchvar }}"})),
    "bad_template_end": rules_yaml(rule(annotations={"s": "{{ if true }}x"})),
    "bad_template_label": rules_yaml(rule(labels={"severity": "{{ end }}"})),
    "bad_label_name": rules_yaml(rule(labels={"bad-name": "x"})),
    "bad_record_for": "groups:\n- name: a\n  rules:\n  - record: a\n    expr: up\n    for: 5m\n",
    "bad_dup_key": "groups:\n- name: a\n  rules:\n  - alert: A\n    expr: up\n    expr: up\n",
    "bad_no_group_name": "groups:\n- rules: []\n",
}


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool is not installed")
def test_syntax_verdicts_match_promtool(tmp_path: Path) -> None:
    files = []
    for name, text in ORACLE_CASES.items():
        path = tmp_path / f"{name}.yml"
        path.write_text(text)
        files.append(path)
    out = subprocess.run(
        ["promtool", "check", "rules", *map(str, files)], capture_output=True, text=True
    )
    report = out.stderr
    promtool_failed = {
        name
        for name in ORACLE_CASES
        if any(line.startswith(f"{tmp_path / name}.yml:") for line in report.splitlines())
    }
    ours_failed = {name for name in ORACLE_CASES if of(run(ORACLE_CASES[name]), "syntax")}
    assert promtool_failed == {n for n in ORACLE_CASES if n.startswith("bad_")}, report
    assert ours_failed == promtool_failed
