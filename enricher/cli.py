"""The `enricher` command. Each subcommand imports only what it needs, so `enricher lint`
starts without loading the server stack."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence


def _serve(args: argparse.Namespace) -> int:
    from enricher.config import ConfigError, load_config

    try:
        config = load_config(
            args.config, overrides={"listen": args.listen, "data_dir": args.data_dir}
        )
    except ConfigError as exc:
        print(f"enricher: invalid configuration:\n{exc}", file=sys.stderr)
        return 2
    if args.processes > 1:
        from enricher import logs
        from enricher.supervisor import run_processes

        logs.setup(config.log_level)
        return run_processes(config, args.processes)
    from enricher.server import run

    return run(config)


def _check_config(args: argparse.Namespace) -> int:
    from enricher.config import ConfigError, load_config

    try:
        load_config(args.file)
    except ConfigError as exc:
        print(f"{args.file}: invalid configuration:\n{exc}", file=sys.stderr)
        return 1
    print(f"{args.file}: ok")
    return 0


def _lint(args: argparse.Namespace) -> int:
    from enricher.lint.cli import main as lint_main

    return lint_main(args.rest)


def _replay(args: argparse.Namespace) -> int:
    from enricher.replay import main as replay_main

    return replay_main(args.rest)


def _eval(args: argparse.Namespace) -> int:
    from enricher.analysis.eval import main as eval_main

    return eval_main(args.rest)


def _pages(args: argparse.Namespace) -> int:
    from enricher.pages.cli import main as pages_main

    return pages_main(args.rest)


def _demo(args: argparse.Namespace) -> int:
    from enricher.demo import main as demo_main

    return demo_main(args.rest)


def build_parser() -> argparse.ArgumentParser:
    from enricher import __version__

    parser = argparse.ArgumentParser(
        prog="enricher", description="Turns Prometheus alerts into pages worth reading."
    )
    parser.add_argument("--version", action="version", version=f"enricher {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the service")
    serve.add_argument("--config", help="YAML configuration file (default: embedded defaults)")
    serve.add_argument("--listen", help="HOST:PORT to listen on (default 127.0.0.1:8080)")
    serve.add_argument("--data-dir", dest="data_dir", help="directory for the durable store")
    serve.add_argument(
        "--processes",
        type=int,
        default=1,
        metavar="N",
        help="run N service processes on one socket and one store (SQLite or Redis)",
    )
    serve.set_defaults(func=_serve)

    check = sub.add_parser("check-config", help="validate a configuration file and exit")
    check.add_argument("file")
    check.set_defaults(func=_check_config)

    for name, func, text in (
        ("lint", _lint, "check alert rule files (enricher lint --help)"),
        ("replay", _replay, "re-run analysis and delivery from a stored bundle"),
        ("eval", _eval, "score the root-cause stage on recorded scenarios"),
        ("pages", _pages, "list the pages a running service sent, or show one"),
        ("demo", _demo, "replay a recorded incident through the pipeline and show its page"),
    ):
        p = sub.add_parser(name, help=text, add_help=False)
        p.add_argument("rest", nargs=argparse.REMAINDER)
        p.set_defaults(func=func)
    return parser


# Subcommands with parsers of their own get their arguments untouched: argparse.REMAINDER
# would reject options placed before the first positional (`enricher lint --format json x`).
_DELEGATED = {"lint": _lint, "replay": _replay, "eval": _eval, "pages": _pages, "demo": _demo}


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in _DELEGATED:
        return int(_DELEGATED[argv[0]](argparse.Namespace(rest=argv[1:])) or 0)
    args = build_parser().parse_args(argv)
    return int(args.func(args) or 0)
