"""Reading rule files: inputs, line numbers, custom resources, directories, disable comments."""

from __future__ import annotations

import io
from pathlib import Path

from enricher.lint.loader import load_text, read_inputs
from tests.lint.conftest import of, rule, rules_yaml, run

FIXTURES = Path(__file__).parent / "fixtures"


def test_every_rule_keeps_its_file_and_lines() -> None:
    text = (
        "groups:\n"
        "  - name: a\n"
        "    rules:\n"
        "      - alert: A\n"
        "        expr: |\n"
        "          up == 0\n"
        "        labels:\n"
        "          severity: critical\n"
        "        annotations:\n"
        "          summary: down\n"
    )
    rf, _ = load_text("x.yml", text)
    assert rf is not None
    (r,) = rf.rules
    assert (r.path, r.group, r.line, r.expr_line) == ("x.yml", "a", 4, 6)
    assert r.keys == {"alert": 4, "expr": 5, "labels": 7, "annotations": 9}
    assert r.label_lines == {"severity": 8}
    assert r.annotation_lines == {"summary": 10}


def test_prometheus_rule_resources_are_read_from_spec_groups() -> None:
    inputs = read_inputs([str(FIXTURES / "prometheusrule.yaml")], io.StringIO())
    (rf,) = inputs.files
    assert [r.name for r in rf.rules] == ["CheckoutHighErrorRate", "CheckoutDown"]
    assert rf.rules[0].line == 19  # line numbers are the file's, across documents
    assert rf.problems == []  # partial_response_strategy is a valid field of the resource


def test_directories_are_searched_for_rule_files_only() -> None:
    inputs = read_inputs([str(FIXTURES / "tree")], io.StringIO())
    paths = sorted(Path(f.path).name for f in inputs.files)
    # good.yml and nested/bad.yaml; not the Deployment, the Helm template, README or .hidden/
    assert paths == ["bad.yaml", "good.yml"]
    assert inputs.unreadable == []


def test_a_missing_path_is_unreadable() -> None:
    inputs = read_inputs(["/nonexistent/rules.yml"], io.StringIO())
    assert inputs.files == []
    assert inputs.unreadable == ["/nonexistent/rules.yml: No such file or directory"]


def test_stdin_is_read_for_a_dash() -> None:
    inputs = read_inputs(["-"], io.StringIO(rules_yaml(rule())))
    (rf,) = inputs.files
    assert rf.path == "<stdin>" and len(rf.rules) == 1


def test_a_named_file_that_is_not_a_rule_file_is_reported() -> None:
    found = of(run("just: a mapping\n"), "syntax")
    assert [f.message for f in found] == ["field just not found in type rulefmt.RuleGroups"]


def test_yaml_merge_keys_are_applied() -> None:
    text = """\
    groups:
      - name: a
        rules:
          - alert: A
            expr: sum by (service) (rate(x_total{service="checkout",status=~"5.."}[5m])) > 1
            for: 10m
            labels: &owner
              severity: warning
              team: payments
              service: checkout
            annotations: {summary: x}
          - alert: B
            expr: sum by (service) (rate(x_total{service="checkout",status=~"5.."}[5m])) > 2
            for: 10m
            labels:
              <<: *owner
              severity: info
            annotations: {summary: x}
    """
    findings = run(text)
    assert findings == []


def test_disable_comment_above_a_rule_silences_that_check_for_that_rule() -> None:
    text = """\
    groups:
      - name: a
        rules:
          # enricher-lint disable labels
          - alert: A
            expr: up{job="a"} == 0
            for: 5m
            annotations: {summary: x}
          - alert: B
            expr: up{job="b"} == 0
            for: 5m
            annotations: {summary: x}
    """
    found = of(run(text), "labels")
    assert [f.rule for f in found] == ["B"]


def test_disable_comment_inside_a_rule_and_with_several_ids() -> None:
    text = """\
    groups:
      - name: a
        rules:
          - alert: A
            expr: up{job="a"}  # enricher-lint disable promql, labels
            for: 5m
            annotations: {summary: x}
    """
    assert run(text) == []


def test_file_disable_comment_silences_the_check_in_the_whole_file() -> None:
    text = """\
    # enricher-lint file/disable labels
    groups:
      - name: a
        rules:
          - alert: A
            expr: up{job="a"} == 0
            for: 5m
            annotations: {summary: x}
    """
    assert run(text) == []


def test_disable_comment_with_an_unknown_check_is_reported() -> None:
    text = "# enricher-lint file/disable lables\ngroups: []\n"
    found = run(text)
    assert [(f.line, f.message) for f in found] == [
        (1, "disable comment names unknown check(s): lables")
    ]


def test_a_directory_without_rule_files_is_recorded_as_empty(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "r.yml").write_text(rules_yaml(rule()))
    inputs = read_inputs([str(tmp_path / "empty"), str(tmp_path / "full")], io.StringIO())
    assert inputs.empty == [str(tmp_path / "empty")]
    assert len(inputs.files) == 1


def test_directives_inside_strings_are_not_read_but_comments_are() -> None:
    from enricher.lint.loader import _directives

    text = (
        "# enricher-lint file/disable labels\n"
        'a: "x # enricher-lint disable symptom"\n'
        "b: |\n"
        "  # enricher-lint disable promql\n"
        "c: 1  # enricher-lint ignore/line\n"
        "d: e# enricher-lint disable for\n"
    )
    import yaml

    docs = list(yaml.compose_all(text))
    found = [(d.line, d.kind, d.checks) for d in _directives(text, docs)]
    assert found == [(1, "file/disable", ("labels",)), (5, "ignore/line", ())]
