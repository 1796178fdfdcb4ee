"""Benchmark: `enricher lint` against `promtool check rules` on the same generated corpus.

    python bench/lint.py [--files 100] [--rules-per-file 50] [--reps 5] [--keep DIR]

Generates realistic rule files (recording rules, error-ratio, histogram-latency and burn-rate
pages, ticket-severity cause alerts, absent() alerts), checks that promtool accepts them, then
times both tools as subprocesses, start-up included, alternating runs so background load hits
both alike. Prints medians, rules per second and the ratio enricher / promtool (goal: <= 1.0).
"""

from __future__ import annotations

import argparse
import compileall
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

_RULES = [
    # recording rules: error ratio per service over several windows
    """      - record: service:http_request_errors:ratio_rate{w}
        expr: |
          sum by (service) (rate(http_requests_total{{service="{svc}",status=~"5.."}}[{w}]))
          /
          sum by (service) (rate(http_requests_total{{service="{svc}"}}[{w}]))""",
    """      - alert: {Svc}HighErrorRate{n}
        expr: |
          sum by (service) (rate(http_requests_total{{service="{svc}",status=~"5.."}}[5m]))
          /
          sum by (service) (rate(http_requests_total{{service="{svc}"}}[5m])) > 0.05
        for: 10m
        labels:
          severity: critical
          team: {team}
          service: {svc}
        annotations:
          summary: "{{{{ $labels.service }}}}: {{{{ $value | humanizePercentage }}}} fail"
          runbook_url: "https://runbooks.example.com/{team}/{svc}-5xx"
          dashboard_url: "https://grafana.example.com/d/http?var-service={{{{ $labels.service }}}}"
""".rstrip(),
    """      - alert: {Svc}HighLatency{n}
        expr: |
          histogram_quantile(0.99, sum by (le, service) (
            rate(http_request_duration_seconds_bucket{{service="{svc}"}}[5m]))) > 0.5
        for: 10m
        labels:
          severity: critical
          team: {team}
          service: {svc}
        annotations:
          summary: "{{{{ $labels.service }}}} p99 latency is {{{{ $value | humanizeDuration }}}}"
          runbook_url: "https://runbooks.example.com/{team}/{svc}-latency"
          dashboard_url: "https://grafana.example.com/d/http/{svc}-overview\"""",
    """      - alert: {Svc}ErrorBudgetBurn{n}
        expr: |
          (
            service:http_request_errors:ratio_rate1h{{service="{svc}"}} > (14.4 * 0.001)
            and
            service:http_request_errors:ratio_rate5m{{service="{svc}"}} > (14.4 * 0.001)
          )
          or
          (
            service:http_request_errors:ratio_rate6h{{service="{svc}"}} > (6 * 0.001)
            and
            service:http_request_errors:ratio_rate30m{{service="{svc}"}} > (6 * 0.001)
          )
        for: 2m
        labels:
          severity: critical
          team: {team}
          service: {svc}
        annotations:
          summary: "{{{{ $labels.service }}}} burns its error budget fast"
          runbook_url: "https://runbooks.example.com/{team}/{svc}-budget-burn"
          dashboard_url: "https://grafana.example.com/d/slo?var-service={svc}\"""",
    """      - alert: {Svc}HighCPU{n}
        expr: |
          sum by (namespace, pod) (
            rate(container_cpu_usage_seconds_total{{namespace="{svc}"}}[5m])
          ) > 4
        for: 15m
        labels:
          severity: warning
          team: {team}
          service: {svc}
        annotations:
          summary: "pod {{{{ $labels.pod }}}} uses more than 4 CPUs"
          runbook_url: "https://runbooks.example.com/{team}/{svc}-cpu\"""",
    """      - alert: {Svc}MetricsMissing{n}
        expr: absent(up{{job="{svc}"}} == 1)
        for: 10m
        labels:
          severity: warning
          team: {team}
          service: {svc}
        annotations:
          summary: "no {svc} target is up"
          runbook_url: "https://runbooks.example.com/{team}/{svc}-targets\"""",
]
_WINDOWS = ("5m", "30m", "1h", "6h")


def generate(root: Path, files: int, per_file: int) -> int:
    """Write the corpus; returns the number of rules."""
    for old in root.glob("*.yml"):
        old.unlink()
    total = 0
    for f in range(files):
        team = ("payments", "search", "identity", "growth")[f % 4]
        out = ["groups:"]
        n = 0
        group = 0
        while n < per_file:
            svc = f"svc{f:03d}g{group}"
            out.append(f"  - name: {svc}\n    rules:")
            for i in range(min(10, per_file - n)):
                k = n + i
                template = _RULES[0] if k % 10 < 4 else _RULES[1 + k % len(_RULES[1:])]
                out.append(
                    template.format(
                        svc=svc,
                        Svc=svc.capitalize(),
                        team=team,
                        n=k,
                        w=_WINDOWS[k % 10 % len(_WINDOWS)],
                    )
                )
            n += min(10, per_file - n)
            group += 1
        (root / f"rules{f:03d}.yml").write_text("\n".join(out) + "\n")
        total += n
    return total


def _time(cmd: list[str]) -> tuple[float, int]:
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - start, proc.returncode


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--files", type=int, default=100)
    ap.add_argument("--rules-per-file", type=int, default=50)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--keep", help="write the corpus here and keep it")
    args = ap.parse_args()
    promtool = shutil.which("promtool") or "/usr/bin/promtool"
    root = Path(args.keep or tempfile.mkdtemp(prefix="lint-bench-"))
    root.mkdir(parents=True, exist_ok=True)
    try:
        rules = generate(root, args.files, args.rules_per_file)
        files = sorted(str(p) for p in root.glob("*.yml"))
        enricher = [sys.executable, "-m", "enricher", "lint", str(root)]
        check = [promtool, "check", "rules", *files]
        have_promtool = os.access(promtool, os.X_OK)
        if have_promtool:
            _, rc = _time(check)
            if rc != 0:
                print("promtool rejects the generated corpus", file=sys.stderr)
                return 1
        # Byte-compile the package as `pip install` of a wheel does (an editable install under
        # PYTHONDONTWRITEBYTECODE would otherwise recompile every module on every run).
        compileall.compile_dir(str(REPO / "enricher"), quiet=1)
        _, rc = _time(enricher)  # warm the page cache
        ours: list[float] = []
        theirs: list[float] = []
        for _ in range(args.reps):
            ours.append(_time(enricher)[0])
            if have_promtool:
                theirs.append(_time(check)[0])
        e = statistics.median(ours)
        print(f"corpus: {rules} rules in {len(files)} files ({root})")
        print(f"enricher lint exit code {rc}")
        print(f"enricher lint : median {e:.3f}s  ({rules / e:,.0f} rules/s)  runs {_fmt(ours)}")
        if theirs:
            p = statistics.median(theirs)
            print(
                f"promtool      : median {p:.3f}s  ({rules / p:,.0f} rules/s)  runs {_fmt(theirs)}"
            )
            print(f"ratio enricher/promtool: {e / p:.2f}")
        return 0
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)


def _fmt(xs: list[float]) -> str:
    return " ".join(f"{x:.2f}" for x in xs)


if __name__ == "__main__":
    raise SystemExit(main())
