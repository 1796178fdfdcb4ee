"""The hand-written rule corpus (tests/lint/corpus/) is valid and the linter survives it.

Per-check precision and recall against `expected.yaml` are measured by
`bench/lint_corpus.py`, not asserted here: these tests only keep the corpus honest (Prometheus
accepts every file, the loader reads the same rules as promtool, expected.yaml names real
rules) and the linter robust on it (no crash, exit 0 or 1).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from enricher.lint.loader import load_text

REPO = Path(__file__).resolve().parents[2]
CORPUS = Path(__file__).resolve().parent / "corpus"
STYLES = ("community", "mixin", "crd", "company", "thanos")
PROMTOOL = shutil.which("promtool")
needs_promtool = pytest.mark.skipif(PROMTOOL is None, reason="promtool is not installed")


def corpus_files(*styles: str) -> list[Path]:
    return sorted(p for s in styles for p in (CORPUS / s).glob("*.y*ml"))


def rule_count(path: Path) -> int:
    rf, _ = load_text(str(path), path.read_text())
    assert rf is not None, f"{path} is not read as a rule file"
    return len(rf.rules)


def promtool_rules(path: Path) -> int:
    """Rules promtool counts; `--lint=none` because its duplicate-rule lint prints no count
    (the corpus plants duplicates on purpose; that lint never fails the run anyway)."""
    assert PROMTOOL is not None
    proc = subprocess.run(
        [PROMTOOL, "check", "rules", "--lint=none", str(path)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, f"promtool rejects {path.name}:\n{out}"
    m = re.search(r"SUCCESS: (\d+) rules found", out)
    assert m, out
    return int(m.group(1))


def lint(*args: str) -> tuple[int, dict, str]:
    proc = subprocess.run(
        [sys.executable, "-m", "enricher.lint", "--format", "json", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert "Traceback" not in proc.stderr, proc.stderr
    doc = json.loads(proc.stdout) if proc.stdout.strip() else {}
    return proc.returncode, doc, proc.stderr


def test_corpus_has_every_style() -> None:
    for style in STYLES:
        assert corpus_files(style), f"no rule files under corpus/{style}/"
    assert (CORPUS / "expected.yaml").is_file()
    assert (CORPUS / ".enricher-lint.yaml").is_file()


@needs_promtool
@pytest.mark.parametrize(
    "path", corpus_files("community", "mixin", "company"), ids=lambda p: p.name
)
def test_promtool_accepts_file_and_counts_the_same_rules(path: Path) -> None:
    assert promtool_rules(path) == rule_count(path)


@needs_promtool
@pytest.mark.parametrize("path", corpus_files("crd"), ids=lambda p: p.name)
def test_promtool_accepts_prometheusrule_spec(path: Path, tmp_path: Path) -> None:
    """promtool cannot read a PrometheusRule; its `spec` is a rule file, so check that."""
    docs = [
        d for d in yaml.safe_load_all(path.read_text()) if d and d.get("kind") == "PrometheusRule"
    ]
    assert docs
    spec = tmp_path / "spec.yml"
    spec.write_text(yaml.safe_dump({"groups": [g for d in docs for g in d["spec"]["groups"]]}))
    assert promtool_rules(spec) == rule_count(path)


@needs_promtool
def test_promtool_rejects_the_thanos_file() -> None:
    (path,) = corpus_files("thanos")
    proc = subprocess.run(
        [PROMTOOL, "check", "rules", str(path)], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode != 0
    assert "partial_response_strategy" in proc.stdout + proc.stderr


@pytest.mark.parametrize(
    "path", corpus_files("community", "mixin", "crd", "company"), ids=lambda p: p.name
)
def test_loader_reads_file_without_problems(path: Path) -> None:
    rf, _ = load_text(str(path), path.read_text())
    assert rf is not None
    assert rf.rules
    assert not rf.problems
    assert not [(r.name, r.problems) for r in rf.rules if r.problems]


def test_linter_survives_the_whole_corpus() -> None:
    code, doc, stderr = lint("--profile", "default", str(CORPUS))
    assert code in (0, 1), stderr
    internal = [f for f in doc["findings"] if f["message"].startswith("internal error")]
    assert not internal
    # the thanos file is linted as Prometheus rules here: the unknown field is reported
    assert doc["findings"]


def test_linter_survives_each_style_and_profile() -> None:
    for profile in ("default", "strict", "mixin"):
        for style in STYLES:
            extra = ["--thanos"] if style == "thanos" else []
            code, doc, stderr = lint("--profile", profile, *extra, str(CORPUS / style))
            assert code in (0, 1), f"{style} --profile {profile}: {stderr}"
            assert isinstance(doc.get("findings"), list)


def thanos_syntax(*args: str) -> list[dict]:
    code, doc, stderr = lint(*args, str(CORPUS / "thanos"))
    assert code in (0, 1), stderr
    return [
        f
        for f in doc["findings"]
        if f["check"] == "syntax" and "partial_response_strategy" in f["message"]
    ]


def test_thanos_file_fails_without_thanos() -> None:
    assert thanos_syntax()


def test_thanos_file_loads_with_thanos() -> None:
    assert thanos_syntax("--thanos") == []


def test_expected_names_rules_that_exist() -> None:
    expected = yaml.safe_load((CORPUS / "expected.yaml").read_text())
    names: dict[str, set[str]] = {}
    for path in corpus_files(*STYLES):
        rf, _ = load_text(str(path), path.read_text())
        assert rf is not None
        names[path.relative_to(CORPUS).as_posix()] = {r.name for r in rf.rules}
    assert expected["pages"] and expected["bugs"]
    for entry in expected["pages"] + expected["bugs"]:
        name = entry.get("alert") or entry.get("record")
        assert entry["file"] in names, entry
        assert name in names[entry["file"]], entry
    assert {p["kind"] for p in expected["pages"]} == {"symptom", "cause"}
    pages = [(p["file"], p["alert"]) for p in expected["pages"]]
    assert len(pages) == len(set(pages)), "a page is classified twice"
