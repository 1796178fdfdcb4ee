"""`# enricher-lint` comments: snooze, ignore, dangling comments, comments inside strings."""

from __future__ import annotations

from tests.lint.conftest import of, run

# Two alerts with no `team`/`service` labels: each gets `labels` findings on its first line.
TWO = """\
groups:
  - name: a
    rules:
{comment_a}      - alert: A
        expr: up{{job="a"}} == 0
        for: 5m
        annotations: {{summary: x}}
{comment_b}      - alert: B
        expr: up{{job="b"}} == 0
        for: 5m
        annotations: {{summary: x}}
"""


def text(a: str = "", b: str = "") -> str:
    return TWO.format(comment_a=a, comment_b=b)


def labelled(findings: list) -> list[str]:
    return sorted({f.rule for f in of(findings, "labels")})


def test_snooze_before_its_date_disables_the_check_for_that_rule() -> None:
    findings = run(text(a="      # enricher-lint snooze labels until 2999-01-01\n"))
    assert labelled(findings) == ["B"]
    assert of(findings, "directives") == []


def test_snooze_names_several_checks() -> None:
    findings = run(text(a="      # enricher-lint snooze promql,labels until 2999-01-01\n"))
    assert labelled(findings) == ["B"]


def test_expired_snooze_no_longer_applies_and_says_so() -> None:
    findings = run(text(a="      # enricher-lint snooze labels until 2001-02-03\n"))
    assert labelled(findings) == ["A", "B"]
    (expired,) = of(findings, "directives")
    assert expired.line == 4 and "expired on 2001-02-03" in expired.message
    assert expired.severity.label == "info"


def test_snooze_with_a_malformed_date_is_a_finding_naming_the_line() -> None:
    findings = run(text(a="      # enricher-lint snooze labels until 31/12/2999\n"))
    assert labelled(findings) == ["A", "B"]  # not applied
    (bad,) = of(findings, "directives")
    assert bad.line == 4 and "line 4" in bad.message and "'31/12/2999'" in bad.message
    findings = run(text(a="      # enricher-lint snooze labels\n"))
    assert "until YYYY-MM-DD" in of(findings, "directives")[0].message


def test_ignore_next_line_drops_findings_on_the_next_line_only() -> None:
    findings = run(text(a="      # enricher-lint ignore/next-line labels\n"))
    assert labelled(findings) == ["B"]
    findings = run(text(a="      # enricher-lint ignore/next-line\n"))
    assert [f for f in findings if f.line == 5] == []  # every check on that line
    assert labelled(findings) == ["B"]
    findings = run(text(a="      # enricher-lint ignore/next-line promql\n"))
    assert labelled(findings) == ["A", "B"]  # another check: labels stays


def test_ignore_line_at_the_end_of_a_line() -> None:
    src = text().replace("      - alert: A\n", "      - alert: A  # enricher-lint ignore/line\n")
    findings = run(src)
    assert labelled(findings) == ["B"]
    assert of(findings, "directives") == []


def test_ignore_line_alone_on_its_line_is_dangling() -> None:
    findings = run(text(a="      # enricher-lint ignore/line labels\n"))
    (dangling,) = of(findings, "directives")
    assert dangling.line == 4 and "dangling" in dangling.message


def test_disable_separated_by_a_blank_line_still_applies() -> None:
    findings = run(text(b="      # enricher-lint disable labels\n\n"))
    assert labelled(findings) == ["A"]
    assert of(findings, "directives") == []


def test_disable_that_applies_to_no_rule_is_reported_as_dangling() -> None:
    src = text() + "      # enricher-lint disable labels\n"
    findings = run(src)
    assert labelled(findings) == ["A", "B"]
    (dangling,) = of(findings, "directives")
    assert dangling.line == 12 and dangling.severity.label == "warning"
    assert "applies to no rule" in dangling.message


def test_disable_above_a_group_header_is_dangling() -> None:
    src = "groups:\n  # enricher-lint disable labels\n" + text().split("\n", 1)[1]
    findings = run(src)
    assert labelled(findings) == ["A", "B"]
    assert [f.line for f in of(findings, "directives")] == [2]


def test_disable_inside_a_quoted_string_is_not_obeyed() -> None:
    src = text().replace(
        "annotations: {summary: x}\n",
        'annotations: {summary: x, description: "see # enricher-lint disable labels"}\n',
        1,
    )
    findings = run(src)
    assert labelled(findings) == ["A", "B"]
    assert of(findings, "directives") == []


def test_disable_inside_a_block_scalar_is_not_obeyed() -> None:
    src = text().replace(
        "        annotations: {summary: x}\n",
        "        annotations:\n"
        "          summary: x\n"
        "          description: |\n"
        "            to silence: # enricher-lint disable labels\n"
        "            # enricher-lint file/disable labels\n",
        1,
    )
    findings = run(src)
    assert labelled(findings) == ["A", "B"]


def test_real_comment_after_a_block_scalar_is_obeyed() -> None:
    src = text(b="      # enricher-lint disable labels\n").replace(
        "        annotations: {summary: x}\n",
        "        annotations:\n          summary: |\n            x\n",
        1,
    )
    assert labelled(run(src)) == ["A"]


def test_directives_check_can_be_disabled() -> None:
    from enricher.lint.config import Config

    src = text() + "      # enricher-lint disable labels\n"
    assert of(run(src, config=Config(disable=frozenset({"directives"}))), "directives") == []
