"""`enricher lint [options] PATH...`: the command line around the loader, checks and formatters.

Exit codes: 0 when nothing is at or above `--fail-on` (default: error, i.e. only bugs fail the
run; `--profile strict` makes it warning), 1 when something is, 2 for usage errors, unreadable
input, no rule file in a directory, a bad config file, `--changed-since` outside a git
repository or with a bad ref, or an unreachable `--prometheus`. A reader that closes the pipe
early (`| head`) is not an error: the rest of the report is dropped and the exit code is the
one the findings decide.
"""

from __future__ import annotations

import argparse
import gc
import os
import sys
from typing import TextIO

from enricher.lint.config import (
    PROFILES,
    Config,
    ConfigError,
    ConfigResolver,
    load_config,
    parse_version,
)
from enricher.lint.durations import parse_duration
from enricher.lint.model import Severity
from enricher.lint.report import FORMATS, formatter


def _duration(text: str) -> float:
    try:
        return parse_duration(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="enricher lint",
        description="Check Prometheus alert rules for pages worth waking up for.",
        epilog="Exit codes: 0 clean, 1 findings at or above --fail-on, 2 usage or input error.",
    )
    p.add_argument("paths", nargs="*", metavar="PATH", help="rule file, directory, or - for stdin")
    p.add_argument(
        "--config",
        help="one configuration file for every file (default: each file uses the nearest "
        ".enricher-lint.yaml in its directory or above, up to the repository root)",
    )
    p.add_argument(
        "--changed-since",
        metavar="REF",
        help="report only rules changed since this git ref (all files are still read)",
    )
    p.add_argument("--format", choices=FORMATS, default="text", help="output format")
    p.add_argument(
        "--profile",
        choices=PROFILES,
        help="default: policy findings are info, only errors fail; strict: policy is a "
        "warning and warnings fail; mixin: no policy findings (default: default)",
    )
    p.add_argument(
        "--fail-on",
        choices=[s.label for s in Severity],
        help="lowest severity that makes the exit code 1 (default: error; strict: warning)",
    )
    p.add_argument(
        "--prometheus-version",
        metavar="X.Y",
        help="reject PromQL newer than this Prometheus (default: 2.42, what the project tests)",
    )
    p.add_argument(
        "--enable-feature",
        action="append",
        default=[],
        metavar="NAME",
        help="a Prometheus --enable-feature flag the server runs with (repeatable, or a,b)",
    )
    p.add_argument(
        "--thanos",
        action="store_true",
        help="the files are Thanos Ruler rules (accept partial_response_strategy)",
    )
    p.add_argument("--prometheus", metavar="URL", help="also check against a live Prometheus")
    p.add_argument("--lookback", type=_duration, help="live mode: how far back series count")
    p.add_argument("--scrape-interval", type=_duration, help="assumed scrape interval")
    p.add_argument("--disable", action="append", default=[], metavar="CHECK", help="skip a check")
    p.add_argument("--enable", action="append", default=[], metavar="CHECK", help="run only these")
    p.add_argument("--output", "-o", help="write the report to this file instead of stdout")
    p.add_argument("--list-checks", action="store_true", help="list the checks and exit")
    p.add_argument("--explain", metavar="CHECK", help="print why a check exists, with examples")
    return p


def _config_sets_fail_on(args: argparse.Namespace) -> bool:
    return bool(args.fail_on)


def summary_line(
    inputs: object, config: object, findings: list, configs: dict | None = None
) -> str:
    """`14 rules in 2 files, 9 alerts (3 treated as pages by {...}): 1 error, 4 info`."""
    files = inputs.files  # type: ignore[attr-defined]
    configs = configs or {}
    rules = sum(len(f.rules) for f in files)
    alerts = [r for f in files for r in f.rules if r.is_alert]
    pages = sum(
        1
        for r in alerts
        if configs.get(r.path, config).is_page(r.labels)  # type: ignore[attr-defined]
    )
    counts = []
    for sev in reversed(Severity):
        n = sum(f.severity == sev for f in findings)
        if n:
            policy = sum(f.severity == sev and f.policy for f in findings)
            counts.append(f"{n} {sev.label}" + (f" ({policy} policy)" if policy else ""))
    paging = config.paging_text()  # type: ignore[attr-defined]
    texts = {c.paging_text() for c in configs.values()} - {paging}
    if texts:
        paging = f"{paging} and {len(texts)} other definition(s) in per-directory configs"
    head = f"{rules} rules in {len(files)} files"
    if alerts:
        head += f", {len(alerts)} alerts ({pages} treated as pages by {paging})"
    return f"{head}: {', '.join(counts) or 'no problems'}"


def main(
    argv: list[str],
    stdin: TextIO | None = None,
    stdout: TextIO | None = None,
    stderr: TextIO | None = None,
) -> int:
    # Composing YAML and converting queries allocate hundreds of thousands of small objects
    # that all live until the end; the cyclic collector would rescan them over and over (it
    # doubled the run time on 5,000 rules). Nothing here builds cycles worth collecting.
    enabled, limit = gc.isenabled(), sys.getrecursionlimit()
    gc.disable()
    # Query trees are walked recursively; promql.MAX_NESTING keeps them well inside this.
    sys.setrecursionlimit(max(limit, 6000))
    try:
        return _main(argv, stdin or sys.stdin, stdout or sys.stdout, stderr or sys.stderr)
    finally:
        sys.setrecursionlimit(limit)
        if enabled:
            gc.enable()


def _main(argv: list[str], stdin: TextIO, stdout: TextIO, stderr: TextIO) -> int:
    parser = build_parser()
    if argv[:1] == ["--"]:
        # `enricher lint -- --format json rules/`: the top-level parser hands options that come
        # before the first path over behind a `--`.
        argv = argv[1:]
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse exits 2 on usage errors and 0 after --help
        return int(exc.code or 0)
    from enricher.lint.checks import load_checks, option_names

    if args.explain:
        module = next((m for m in load_checks() if args.explain == m.ID), None)
        if module is None:
            stderr.write(f"enricher lint: unknown check {args.explain!r}\n")
            return 2
        stdout.write((module.__doc__ or "").strip() + "\n")
        return 0
    if args.list_checks:
        for m in load_checks():
            summary = (m.__doc__ or "").strip().split("\n", 1)[0].split(": ", 1)[-1]
            stdout.write(f"{m.ID:12} {m.SEVERITY.label:8} {summary}\n")
        return 0
    if not args.paths:
        parser.print_usage(stderr)
        stderr.write("enricher lint: error: give at least one PATH (a file, a directory or -)\n")
        return 2
    known = option_names()
    for check in args.disable + args.enable:
        if check not in known:
            stderr.write(
                f"enricher lint: unknown check {check!r} (known: {', '.join(sorted(known))})\n"
            )
            return 2

    def adjust(cfg: Config) -> None:
        """The command line wins over every configuration file."""
        try:
            if args.profile:
                cfg.apply_profile(args.profile, explicit_fail_on=_config_sets_fail_on(args))
            if args.prometheus_version:
                cfg.prometheus_version = parse_version(args.prometheus_version)
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
        if args.fail_on:
            cfg.fail_on = Severity.parse(args.fail_on)
        cfg.enable_features = cfg.enable_features | features
        if args.thanos:
            cfg.thanos = True
        if args.scrape_interval is not None:
            cfg.scrape_interval = args.scrape_interval
        if args.lookback is not None:
            cfg.lookback = args.lookback
        cfg.disable = cfg.disable | set(args.disable)
        if args.enable:
            cfg.enable = frozenset(args.enable)

    features = {f.strip() for arg in args.enable_feature for f in arg.split(",") if f.strip()}
    resolver = None
    try:
        if args.config:
            config = load_config(args.config, known)
            adjust(config)
        else:
            resolver = ConfigResolver(known, adjust)
            config = resolver.base
    except ConfigError as exc:
        stderr.write(f"enricher lint: {exc}\n")
        return 2

    from enricher.lint.split import read_and_lint

    live = None
    if args.prometheus:
        from enricher.lint.live import Live, LiveError

        live = Live(args.prometheus, config.lookback)
        try:
            live.ping()
        except LiveError as exc:
            stderr.write(f"enricher lint: {exc}\n")
            return 2
    try:
        inputs, configs, findings = read_and_lint(
            args.paths,
            stdin,
            config,
            resolver.for_files if resolver is not None else None,
            live,
        )
    except ConfigError as exc:
        stderr.write(f"enricher lint: {exc}\n")
        return 2
    for problem in inputs.unreadable:
        stderr.write(f"enricher lint: cannot read {problem}\n")
    for path in inputs.empty:
        stderr.write(f"enricher lint: no rule files found in {path}\n")
    changes = None
    if args.changed_since is not None:
        from enricher.lint.vcs import GitError, changed_lines

        try:
            changes = changed_lines(
                [rf.path for rf in inputs.files if rf.path != "<stdin>"], args.changed_since
            )
        except GitError as exc:
            stderr.write(f"enricher lint: {exc}\n")
            return 2
    if changes is not None:
        findings = only_changed(findings, inputs, changes)
    if live is not None and live.errors:
        stderr.write(f"enricher lint: some Prometheus queries failed, e.g. {live.errors[0]}\n")
    failed = any(f.severity >= configs.get(f.path, config).fail_on for f in findings)
    code = 2 if inputs.unreadable or inputs.empty else 1 if failed else 0
    write = formatter(args.format)
    if args.output:
        try:
            with open(args.output, "w", encoding="utf-8") as fh:
                write(findings, fh)
        except OSError as exc:
            stderr.write(f"enricher lint: cannot write {args.output}: {exc.strerror or exc}\n")
            return 2
    else:
        try:
            write(findings, stdout)
            stdout.flush()
        except BrokenPipeError:
            _silence(stdout)
            return code
    if args.format == "text":
        try:
            stderr.write(summary_line(inputs, config, findings, configs) + "\n")
        except BrokenPipeError:
            _silence(stderr)
    return code


def _silence(stream: TextIO) -> None:
    """The reader went away (`| head`): send what is still buffered to /dev/null, so neither
    this write nor the interpreter's final flush prints a BrokenPipeError traceback (the
    recipe of Python's `signal` documentation)."""
    try:
        fd = stream.fileno()
    except (AttributeError, OSError, ValueError):
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, fd)
    finally:
        os.close(devnull)


def only_changed(findings: list, inputs: object, changes: dict) -> list:
    """`--changed-since`: findings on rules whose lines (with the comments directly above
    them) overlap a change; findings outside any rule (the file does not load) when the file
    changed at all. stdin counts as changed."""
    from enricher.lint.vcs import overlaps

    spans: dict[str, list[tuple[int, int, bool]]] = {}
    for rf in inputs.files:  # type: ignore[attr-defined]
        if rf.path == "<stdin>":
            spans[rf.path] = []
            continue
        if rf.path not in changes:
            continue
        changed = changes[rf.path]
        try:
            with open(rf.path, encoding="utf-8", errors="replace") as fh:
                lines = fh.read().split("\n")
        except OSError:
            lines = []
        out = []
        for rule in rf.rules:
            first = rule.line
            while (
                first > 1 and first - 2 < len(lines) and lines[first - 2].lstrip().startswith("#")
            ):
                first -= 1
            last = max(rule.end_line, rule.line)
            out.append((first, last, overlaps(changed, first, last)))
        spans[rf.path] = out
    kept = []
    for f in findings:
        file_spans = spans.get(f.path)
        if file_spans is None:
            continue  # the file did not change
        hit = next((ok for first, last, ok in file_spans if first <= f.line <= last), None)
        if hit is None or hit:
            kept.append(f)
    return kept
