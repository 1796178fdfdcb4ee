"""Score `enricher lint` against the hand-written rule corpus in tests/lint/corpus/.

    python bench/lint_corpus.py [--json] [--rev DIR] [--profile default] [--corpus DIR]

The corpus holds rule files in the styles of real collections (community exporters' alerts,
kubernetes/node mixins, PrometheusRule resources, a company's own pages, a Thanos Ruler file)
and `expected.yaml`, the ground truth written from each rule's intent: every page classified as
symptom or cause, and the planted bugs with the check that should report each. This runs
`python -m enricher.lint --format json` over the corpus (the thanos/ directory with `--thanos`)
and prints, per check: its findings, how many are house policy (`policy: true`, counted apart
and never called false positives), how many land on an expected bug (TP), the unexpected ones
(candidate false positives, listed with file:line and message for a human to review) and the
expected bugs it missed. For `symptom` it prints recall (cause pages reported / cause pages)
and precision (reported pages that are causes / reported).

`--rev DIR` runs the package of another checkout (a `git worktree` of an older commit): the
linter is started with `cwd=DIR` and `PYTHONPATH=DIR`, over this checkout's corpus.
`--json` prints the same results as one JSON document.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parent.parent
CORPUS = REPO / "tests" / "lint" / "corpus"
THANOS_DIRS = ("thanos",)
TIMEOUT = 600


def load_expected(corpus: Path) -> dict[str, Any]:
    data = yaml.safe_load((corpus / "expected.yaml").read_text())
    pages = data.get("pages") or []
    bugs = data.get("bugs") or []
    for entry in pages:
        if entry.get("kind") not in ("symptom", "cause"):
            raise SystemExit(f"expected.yaml: page {entry} needs kind: symptom or cause")
    for entry in bugs:
        if not entry.get("check") or not (entry.get("alert") or entry.get("record")):
            raise SystemExit(f"expected.yaml: bug {entry} needs alert (or record) and check")
    return {"pages": pages, "bugs": bugs}


def rule_name(entry: dict[str, Any]) -> str:
    return str(entry.get("alert") or entry.get("record"))


def run_lint(
    paths: list[Path], *, thanos: bool, profile: str, rev: Path | None
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """One `python -m enricher.lint` run; returns its findings and a record of the run."""
    cmd = [sys.executable, "-m", "enricher.lint", "--format", "json", "--profile", profile]
    env = dict(os.environ)
    cwd = REPO
    if rev is not None:
        cwd = rev
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(rev), env.get("PYTHONPATH")]))
        if not _supports(rev, env, "--profile"):
            # a checkout from before profiles and `paging:`: its defaults, with the corpus'
            # paging as close as its `page_severities` can say it (severity only)
            cmd = [*cmd[:-2], "--config", str(_legacy_config())]
    args = (["--thanos"] if thanos else []) + [str(p) for p in paths]
    proc = subprocess.run(
        cmd + args, cwd=cwd, env=env, capture_output=True, text=True, timeout=TIMEOUT
    )
    if proc.returncode == 2 and thanos and "--thanos" in proc.stderr:
        # an older checkout without the option: lint the files as plain Prometheus rules
        args = [str(p) for p in paths]
        proc = subprocess.run(
            cmd + args, cwd=cwd, env=env, capture_output=True, text=True, timeout=TIMEOUT
        )
        thanos = False
    record = {
        "paths": [str(p) for p in paths],
        "thanos": thanos,
        "exit": proc.returncode,
        "stderr": proc.stderr.strip(),
    }
    if proc.returncode not in (0, 1):
        raise SystemExit(
            f"enricher lint exited {proc.returncode} on {' '.join(args)}:\n{proc.stderr}"
        )
    return json.loads(proc.stdout)["findings"], record


def _supports(rev: Path, env: dict[str, str], flag: str) -> bool:
    proc = subprocess.run(
        [sys.executable, "-m", "enricher.lint", "--help"],
        cwd=rev,
        env=env,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
    )
    return flag in proc.stdout


def _legacy_config() -> Path:
    path = Path(tempfile.gettempdir()) / "enricher-lint-corpus-legacy.yaml"
    path.write_text("page_severities: [critical, page]\n")
    return path


def package_location(rev: Path | None) -> str:
    env = dict(os.environ)
    if rev is not None:
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(rev), env.get("PYTHONPATH")]))
    proc = subprocess.run(
        [sys.executable, "-c", "import enricher.lint as m; print(m.__file__)"],
        cwd=rev or REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    return proc.stdout.strip() or proc.stderr.strip()


def relative(path: str, corpus: Path) -> str:
    p = Path(path)
    if not p.is_absolute():
        p = (REPO / p).resolve()
    try:
        return p.resolve().relative_to(corpus.resolve()).as_posix()
    except ValueError:
        return path


def read_corpus(corpus: Path) -> tuple[set[tuple[str, str]], dict[str, Any]]:
    """(file, alert) of every alert that pages under the corpus config, and rule counts, read
    with this checkout's loader: a check of expected.yaml's completeness, not of the linter."""
    sys.path.insert(0, str(REPO))
    from enricher.lint.config import parse_matchers
    from enricher.lint.loader import read_inputs

    config = yaml.safe_load((corpus / ".enricher-lint.yaml").read_text()) or {}
    paging = [parse_matchers(e) for e in config.get("paging") or ['severity=~"critical|page"']]
    inputs = read_inputs([str(d) for d in style_dirs(corpus)], sys.stdin)
    pages = set()
    per_style: dict[str, int] = defaultdict(int)
    for rf in inputs.files:
        file = relative(rf.path, corpus)
        per_style[file.split("/", 1)[0]] += len(rf.rules)
        for r in rf.rules:
            if r.is_alert and any(all(m.matches(r.labels) for m in e) for e in paging):
                pages.add((file, r.name))
    counts = {
        "files": len(inputs.files),
        "rules": sum(per_style.values()),
        "rules_per_style": dict(sorted(per_style.items())),
    }
    return pages, counts


def style_dirs(corpus: Path) -> list[Path]:
    return sorted(p for p in corpus.iterdir() if p.is_dir() and not p.name.startswith("."))


def check_order() -> list[str]:
    sys.path.insert(0, str(REPO))
    try:
        import importlib

        from enricher.lint.checks import MODULES

        return [importlib.import_module(f"enricher.lint.checks.{m}").ID for m in MODULES]
    except Exception:  # ordering only
        return []


def score(findings: list[dict[str, Any]], expected: dict[str, Any], corpus: Path) -> dict[str, Any]:
    bugs: dict[tuple[str, str, str], dict[str, Any]] = {}
    for b in expected["bugs"]:
        bugs[(b["file"], rule_name(b), b["check"])] = b
    hit: set[tuple[str, str, str]] = set()
    per: dict[str, dict[str, Any]] = defaultdict(
        lambda: {"findings": 0, "policy": 0, "tp": 0, "expected": 0, "unexpected": [], "missed": []}
    )
    symptom_reported: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    for f in findings:
        file = relative(f["path"], corpus)
        check = f["check"]
        row = per[check]
        row["findings"] += 1
        key = (file, f.get("rule", ""), check)
        if check == "symptom":
            symptom_reported[(file, f.get("rule", ""))].append(f)
            row["policy"] += bool(f.get("policy"))
            continue
        if f.get("policy"):
            # house style (owner labels, runbooks, `for` opinions): counted apart, never a
            # true or a false positive
            row["policy"] += 1
        elif key in bugs:
            row["tp"] += 1
            hit.add(key)
        else:
            row["unexpected"].append(
                {
                    "file": file,
                    "line": f["line"],
                    "rule": f.get("rule", ""),
                    "severity": f["severity"],
                    "message": f["message"],
                }
            )
    for key, b in bugs.items():
        if key not in hit:
            per[key[2]]["missed"].append(
                {"file": key[0], "rule": key[1], "note": b.get("note", "")}
            )
    for b in expected["bugs"]:
        per[b["check"]]["expected"] += 1  # every check with expected bugs gets a row

    pages = {(p["file"], rule_name(p)): p for p in expected["pages"]}
    causes = {k for k, p in pages.items() if p["kind"] == "cause"}
    reported = set(symptom_reported)
    tp = reported & causes
    row = per["symptom"]
    row["tp"] = sum(len(symptom_reported[k]) for k in tp)
    row["expected"] = len(causes)
    row["unexpected"] = [
        {
            "file": k[0],
            "line": f["line"],
            "rule": k[1],
            "severity": f["severity"],
            "message": f["message"],
            "page": pages[k]["kind"] if k in pages else "not a page",
        }
        for k in sorted(reported - causes)
        for f in symptom_reported[k]
    ]
    row["missed"] = [
        {"file": k[0], "rule": k[1], "note": pages[k].get("note", "cause page")}
        for k in sorted(causes - reported)
    ]
    symptom = {
        "cause_pages": len(causes),
        "symptom_pages": len(pages) - len(causes),
        "reported_pages": len(reported),
        "reported_causes": len(tp),
        "recall": len(tp) / len(causes) if causes else None,
        "precision": len(tp) / len(reported) if reported else None,
    }
    return {"checks": dict(per), "symptom": symptom}


def print_report(result: dict[str, Any], out: Any = sys.stdout) -> None:
    w = out.write
    w(f"package: {result['package']}\n")
    c = result["corpus"]
    styles = ", ".join(f"{k} {v}" for k, v in c["rules_per_style"].items())
    w(
        f"corpus: {c['rules']} rules in {c['files']} files ({styles}); "
        f"{c['pages']} pages ({c['symptom_pages']} symptom, {c['cause_pages']} cause); "
        f"{c['bugs']} expected bugs\n"
    )
    for run in result["runs"]:
        flag = " --thanos" if run["thanos"] else ""
        dirs = " ".join(Path(x).name + "/" for x in run["paths"])
        w(f"run{flag} {dirs}: exit {run['exit']}\n")
        for line in run["stderr"].splitlines():
            w(f"  stderr: {line}\n")
    for msg in result["warnings"]:
        w(f"warning: {msg}\n")
    w("\n")
    checks = result["checks"]
    order = [c for c in result["order"] if c in checks] + sorted(
        c for c in checks if c not in result["order"]
    )
    cols = ("findings", "policy", "TP", "unexpected", "expected", "missed")
    head = f"{'check':<15}" + "".join(f"{c:>11}" for c in cols)
    w(head + "\n" + "-" * len(head) + "\n")
    totals = [0] * len(cols)
    for c in order:
        r = checks[c]
        vals = [
            r["findings"],
            r["policy"],
            r["tp"],
            len(r["unexpected"]),
            r["expected"],
            len(r["missed"]),
        ]
        totals = [a + b for a, b in zip(totals, vals, strict=True)]
        w(f"{c:<15}" + "".join(f"{v:>11}" for v in vals) + "\n")
    w("-" * len(head) + "\n")
    w(f"{'total':<15}" + "".join(f"{v:>11}" for v in totals) + "\n")
    w(
        "TP: findings on an expected bug (symptom: on a cause page); expected: expected bugs "
        "(symptom: cause pages); missed: expected ones with no finding\n"
    )
    s = result["symptom"]

    def pct(x: float | None) -> str:
        return "n/a" if x is None else f"{100 * x:.0f}%"

    w(
        f"\nsymptom: {s['cause_pages']} cause pages, {s['symptom_pages']} symptom pages; "
        f"{s['reported_pages']} pages reported, {s['reported_causes']} of them causes\n"
        f"symptom: recall {pct(s['recall'])} ({s['reported_causes']}/{s['cause_pages']}), "
        f"precision {pct(s['precision'])} ({s['reported_causes']}/{s['reported_pages']})\n"
    )
    for c in order:
        r = checks[c]
        if r["unexpected"]:
            w(f"\nunexpected {c} (candidate false positives, review by hand):\n")
            for u in r["unexpected"]:
                page = f" [{u['page']}]" if "page" in u else ""
                where = f"{u['file']}:{u['line']} {u['rule']}{page}"
                w(f"  {where} ({u['severity']}): {u['message']}\n")
    for c in order:
        r = checks[c]
        if r["missed"]:
            w(f"\nmissed {c}:\n")
            for m in r["missed"]:
                w(f"  {m['file']} {m['rule']}: {m['note']}\n")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--json", action="store_true", help="print machine-readable results")
    p.add_argument("--rev", type=Path, help="run the linter package of this checkout")
    p.add_argument("--profile", default="default", help="lint profile (default: default)")
    p.add_argument("--corpus", type=Path, default=CORPUS, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    corpus = args.corpus.resolve()
    rev = args.rev.resolve() if args.rev else None
    expected = load_expected(corpus)

    dirs = style_dirs(corpus)
    plain = [d for d in dirs if d.name not in THANOS_DIRS]
    thanos = [d for d in dirs if d.name in THANOS_DIRS]
    findings: list[dict[str, Any]] = []
    runs = []
    for paths, flag in ((plain, False), (thanos, True)):
        if paths:
            got, record = run_lint(paths, thanos=flag, profile=args.profile, rev=rev)
            findings += got
            runs.append(record)

    warnings = []
    listed = {(pg["file"], rule_name(pg)) for pg in expected["pages"]}
    counts: dict[str, Any] = {"files": 0, "rules": 0, "rules_per_style": {}}
    try:
        real, counts = read_corpus(corpus)
    except Exception as exc:  # the completeness check is advisory
        warnings.append(f"could not read the corpus to check expected.yaml: {exc}")
    else:
        for f, a in sorted(real - listed):
            warnings.append(f"expected.yaml does not classify the page {f} {a}")
        for f, a in sorted(listed - real):
            warnings.append(f"expected.yaml lists {f} {a} as a page, but it does not page")
    internal = [f for f in findings if f["message"].startswith("internal error in check")]
    for f in internal:
        warnings.append(f"{relative(f['path'], corpus)}:{f['line']} {f['message']}")

    result = score(findings, expected, corpus)
    kinds = [pg["kind"] for pg in expected["pages"]]
    counts.update(
        pages=len(kinds),
        symptom_pages=kinds.count("symptom"),
        cause_pages=kinds.count("cause"),
        bugs=len(expected["bugs"]),
        bugs_per_check=dict(sorted(Counter(b["check"] for b in expected["bugs"]).items())),
    )
    result.update(
        corpus=counts,
        package=package_location(rev),
        runs=runs,
        warnings=warnings,
        order=check_order(),
    )
    if args.json:
        json.dump(result, sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        print_report(result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
