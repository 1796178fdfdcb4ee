"""A lint run split over two processes (the CLI's) finds exactly what one process finds."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from enricher.lint import engine, split
from enricher.lint.config import Config
from enricher.lint.loader import read_inputs

RULES_PER_FILE = 450  # four files: above split.MIN_BYTES


def _file(i: int) -> str:
    out = ["groups:", f"  - name: g{i}", "    rules:"]
    for n in range(RULES_PER_FILE // 3):
        svc = f"svc{i}x{n}"
        out += [
            "      - record: service:http_errors:ratio_rate5m",
            "        expr: |",
            f'          sum by (service) (rate(http_requests_total{{service="{svc}",code=~"5.."}}'
            "[5m]))",
            f'          / sum by (service) (rate(http_requests_total{{service="{svc}"}}[5m]))',
            f"      - alert: HighErrors{n}",
            f'        expr: service:http_errors:ratio_rate5m{{service="{svc}"}} > 0.05',
            "        for: 10m",
            "        labels: {severity: critical, team: t, service: " + svc + "}",
            "        annotations: {summary: errors}",
            # bugs: a count() that is never 0, a rate over a gauge, a label the query drops
            f"      - alert: Broken{n}",
            f'        expr: count(up{{job="{svc}"}}) == 0 or rate(node_load_ratio[5m]) > 1',
            "        labels: {severity: warning, team: t, service: " + svc + "}",
            "        annotations: {summary: '{{ $labels.instance }} broken'}",
        ]
    return "\n".join(out) + "\n"


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    for i in range(4):
        (tmp_path / f"r{i}.yml").write_text(_file(i))
    return tmp_path


def _count_forks(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Two cores, and every fork counted (the list grows by one per fork)."""
    forks: list[int] = []
    real_fork = os.fork

    def counting_fork() -> int:
        forks.append(1)
        return real_fork()

    monkeypatch.setattr(os, "cpu_count", lambda: 2)
    monkeypatch.setattr(os, "fork", counting_fork)
    return forks


def _lint(tree: Path) -> list:
    """One process, as the library is used in-process."""
    inputs = read_inputs([str(tree)], None)  # type: ignore[arg-type]
    return engine.lint(inputs, Config())


@pytest.mark.skipif(not hasattr(os, "fork"), reason="no fork on this platform")
def test_reading_split_over_two_processes_finds_what_one_finds(
    tree: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The CLI's path: each process reads half the files, they swap them, each checks its own."""
    forks = _count_forks(monkeypatch)
    inputs, _, together = split.read_and_lint([str(tree)], None, Config(), None)  # type: ignore[arg-type]
    assert len(forks) == 1
    assert [rf.path for rf in inputs.files] == sorted(str(p) for p in tree.glob("*.yml"))
    alone = _lint(tree)
    assert alone, "the fixture holds bugs: findings expected"
    assert {f.check for f in alone} >= {"impossible", "promql", "annotations"}
    assert together == alone
    monkeypatch.setenv("ENRICHER_LINT_JOBS", "1")
    forks.clear()
    split.read_and_lint([str(tree)], None, Config(), None)  # type: ignore[arg-type]
    assert not forks, "ENRICHER_LINT_JOBS=1 must keep the run in one process"


def test_reading_split_survives_a_child_that_dies(
    tree: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(os, "cpu_count", lambda: 2)
    monkeypatch.setenv("ENRICHER_LINT_JOBS", "1")
    alone = _lint(tree)
    monkeypatch.delenv("ENRICHER_LINT_JOBS")

    def dying_child(*args: object) -> None:
        os._exit(3)

    monkeypatch.setattr(split, "_child", dying_child)
    inputs, _, found = split.read_and_lint([str(tree)], None, Config(), None)  # type: ignore[arg-type]
    assert len(inputs.files) == 4
    assert found == alone
