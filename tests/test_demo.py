"""`enricher demo`: the recorded checkout incident through the real pipeline, as a user runs it.

Run as a subprocess from an empty working directory (not the repository root), so the
command proves it needs neither `tests/` nor the shared fixtures: only the installed package
and its data files.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

ANSI = re.compile(r"\x1b\[")
REPO = Path(__file__).resolve().parent.parent


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ENRICHER_")}
    env.pop("PYTHONPATH", None)  # the installed package, as a user has it
    return env


def _argv(*extra: str) -> list[str]:
    return [sys.executable, "-m", "enricher", "demo", "--port", "0", *extra]


def test_demo_prints_the_enriched_page_and_exits(tmp_path: Path) -> None:
    t0 = time.monotonic()
    proc = subprocess.run(
        _argv("--no-serve"),
        cwd=tmp_path,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    took = time.monotonic() - t0
    print(f"enricher demo --no-serve: {took:.2f} s from start to exit")
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "[CRITICAL] CheckoutHighErrorRate - Checkout 5xx rate is above 5%" in out
    suspect = next(ln for ln in out.splitlines() if ln.startswith("Suspect span"))
    assert "db-primary" in suspect and "SELECT orders" in suspect and "1210 ms" in suspect
    assert "error in 1/1 failing traces, 0/2 healthy" in suspect
    assert "db.rows_affected=1110482" in out and "feature_flag.new_checkout=true" in out
    log = next(ln for ln in out.splitlines() if ln.startswith("Log"))
    assert "slow query: seq scan on orders (1.1M rows), index not used" in log
    deploy = next(ln for ln in out.splitlines() if ln.startswith("Deploy"))
    assert "checkout 2.4.1 (commit 7a3f9c2)" in deploy
    assert "4 min before the alert started" in deploy
    assert "roll back 7a3f9c2" in out
    assert "runbooks.example.com/payments/checkout-5xx" in out
    assert not ANSI.search(out), "colour escapes on a pipe"
    assert "/pages/" not in out, "--no-serve printed a page URL nobody serves"
    assert "Traceback" not in proc.stderr, proc.stderr
    assert not list(tmp_path.iterdir()), "the demo left files in the working directory"
    assert took < 30, f"took {took:.1f} s (goal: under 10 s)"


def test_demo_colours_only_when_asked(tmp_path: Path) -> None:
    proc = subprocess.run(
        _argv("--no-serve", "--color"),
        cwd=tmp_path,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert ANSI.search(proc.stdout)
    assert "SELECT orders" in proc.stdout


def test_demo_serves_the_html_page_until_ctrl_c(tmp_path: Path) -> None:
    proc = subprocess.Popen(
        _argv(),
        cwd=tmp_path,
        env=_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        url = None
        lines = []
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            lines.append(line)
            m = re.search(r"HTML page\s+(http://127\.0\.0\.1:\d+/pages/\d+)", line)
            if m:
                url = m.group(1)
            if line.startswith("Serving"):
                break
        assert url, "".join(lines)
        with urllib.request.urlopen(url, timeout=10) as resp:
            assert resp.status == 200
            assert resp.headers["Content-Type"].startswith("text/html")
            html = resp.read().decode()
        assert "db-primary" in html and "SELECT orders" in html
        assert "seq scan on orders" in html
        proc.send_signal(signal.SIGINT)
        rc = proc.wait(timeout=10)
        rest = proc.stdout.read()
        stderr = proc.stderr.read() if proc.stderr else ""
        assert rc == 0, stderr
        assert "stopped" in rest
        assert "Traceback" not in stderr, stderr
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_the_installed_package_does_not_reach_into_tests_or_shared() -> None:
    for path in (REPO / "enricher" / "demo").rglob("*.py"):
        text = path.read_text()
        assert not re.search(r"^\s*(from|import)\s+tests\b", text, re.M), path
        assert "shared/fixtures" not in text, path


@pytest.mark.parametrize("argv", [["demo", "--help"]])
def test_the_cli_delegates_demo(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    from enricher.cli import main

    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 0
    assert "--no-serve" in capsys.readouterr().out


def test_demo_says_so_when_no_page_comes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import enricher.demo as demo

    async def never(*args: object) -> dict[str, object]:
        raise demo.DemoError("no page appeared within 10 s of the notification")

    monkeypatch.setattr(demo, "_wait_page", never)
    assert demo.main(["--no-serve", "--port", "0", "--data-dir", str(tmp_path / "d")]) == 1
    err = capsys.readouterr().err
    assert "enricher demo: no page appeared within 10 s" in err


def test_demo_runs_from_a_copy_of_the_package_alone(tmp_path: Path) -> None:
    """What an installed package holds (the modules and their package data), away from the
    source tree: no ../shared, no tests/, no repository around it."""
    import shutil

    site = tmp_path / "site"
    shutil.copytree(
        REPO / "enricher",
        site / "enricher",
        ignore=shutil.ignore_patterns("__pycache__", "*.pyc"),
    )
    run = tmp_path / "cwd"
    run.mkdir()
    # -I: isolated mode, so neither the cwd nor an editable install's path hook is searched
    # before the copy (the copy is put first explicitly).
    code = (
        f"import sys; sys.path.insert(0, {str(site)!r}); import enricher; "
        f"assert enricher.__file__.startswith({str(site)!r}), enricher.__file__; "
        "from enricher.cli import main; sys.exit(main(['demo', '--port', '0', '--no-serve']))"
    )
    proc = subprocess.run(
        [sys.executable, "-I", "-c", code],
        cwd=run,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert "db-primary" in proc.stdout and "7a3f9c2" in proc.stdout and "2.4.1" in proc.stdout
