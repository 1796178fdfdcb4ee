"""The example rules in rules/: valid for promtool, clean under `enricher lint`, and every
alert covered by a `promtool test rules` unit test in rules/tests/ that passes."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from enricher.lint.cli import main as lint_main
from tests.realstack import REPO

RULES = REPO / "rules"
PROMTOOL = shutil.which("promtool") or "/usr/bin/promtool"
needs_promtool = pytest.mark.skipif(
    not Path(PROMTOOL).exists(), reason="needs Debian's promtool (prometheus)"
)


def _rule_files() -> list[Path]:
    files = sorted(RULES.glob("*.yml"))
    assert files, "rules/ holds rule files"
    return files


def _alerts() -> set[str]:
    names = set()
    for f in _rule_files():
        for group in yaml.safe_load(f.read_text())["groups"]:
            names |= {r["alert"] for r in group["rules"] if "alert" in r}
    return names


def _unit_tests() -> list[Path]:
    files = sorted((RULES / "tests").glob("*_test.yml"))
    assert files, "rules/tests/ holds promtool unit tests"
    return files


@needs_promtool
def test_promtool_accepts_every_rule_file() -> None:
    res = subprocess.run(
        [PROMTOOL, "check", "rules", *map(str, _rule_files())],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert res.returncode == 0, res.stdout + res.stderr


@needs_promtool
def test_promtool_unit_tests_pass() -> None:
    for f in _unit_tests():
        res = subprocess.run(
            [PROMTOOL, "test", "rules", f.name],
            capture_output=True,
            text=True,
            timeout=120,
            cwd=f.parent,
        )
        assert res.returncode == 0, f"{f.name}:\n{res.stdout}{res.stderr}"


def test_every_alert_has_a_firing_and_a_quiet_unit_test() -> None:
    firing: set[str] = set()
    quiet: set[str] = set()
    for f in _unit_tests():
        for case in yaml.safe_load(f.read_text())["tests"]:
            for check in case.get("alert_rule_test", []):
                (firing if check.get("exp_alerts") else quiet).add(check["alertname"])
    alerts = _alerts()
    assert len(alerts) >= 5
    assert alerts - firing == set(), "alerts with no test that expects them to fire"
    assert alerts - quiet == set(), "alerts with no test that expects them to stay quiet"


def test_enricher_lint_is_clean_on_the_example_rules(capsys: pytest.CaptureFixture[str]) -> None:
    code = lint_main([str(RULES / f.name) for f in _rule_files()])
    out = capsys.readouterr().out
    assert code == 0, out
