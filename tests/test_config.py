"""Configuration: defaults, file, environment, secrets from files, errors that name the field."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from enricher.config import ConfigError, load_config
from tests.realstack import REPO


def test_no_file_at_all_gives_working_defaults():
    cfg = load_config(environ={})
    assert cfg.listen == "127.0.0.1:8080"
    assert cfg.intake.max_body_bytes == 8 * 1024 * 1024
    assert cfg.pipeline.deadline_for("critical") == 30.0
    assert cfg.notifiers.log.enabled


def test_invalid_url_names_the_field(tmp_path):
    f = tmp_path / "c.yml"
    f.write_text("notifiers:\n  webhook:\n    url: not a url\n")
    with pytest.raises(ConfigError) as err:
        load_config(f, environ={})
    assert err.value.problems[0].startswith("notifiers.webhook.url: invalid URL")


def test_unknown_field_and_bad_duration_are_both_reported(tmp_path):
    f = tmp_path / "c.yml"
    f.write_text("pipeline:\n  deadlines: {critical: soon}\n  wrokers: 3\n")
    with pytest.raises(ConfigError) as err:
        load_config(f, environ={})
    text = str(err.value)
    assert "pipeline.deadlines.critical: expected a duration" in text
    assert "pipeline.wrokers: Extra inputs are not permitted" in text


def test_environment_overrides_file_and_parses_scalars(tmp_path):
    f = tmp_path / "c.yml"
    f.write_text("listen: 127.0.0.1:9000\nintake:\n  max_body_bytes: 10000\n")
    cfg = load_config(
        f,
        environ={
            "ENRICHER_LISTEN": "0.0.0.0:9100",
            "ENRICHER_INTAKE__MAX_BODY_BYTES": "20000",
            "ENRICHER_NOTIFIERS__LOG__ENABLED": "false",
            "ENRICHER_PIPELINE__DEADLINES__CRITICAL": "10s",
        },
    )
    assert cfg.listen == "0.0.0.0:9100"
    assert cfg.intake.max_body_bytes == 20000
    assert cfg.notifiers.log.enabled is False
    assert cfg.pipeline.deadline_for("critical") == 10.0
    assert cfg.pipeline.deadline_for("warning") == 30.0


def test_secret_files_are_read_and_missing_ones_named(tmp_path):
    tok = tmp_path / "token"
    tok.write_text("abc123\n")
    cfg = load_config(environ={}, overrides={"intake": {"auth": {"bearer_token_file": str(tok)}}})
    assert cfg.intake.auth.bearer_token == "abc123"
    with pytest.raises(ConfigError) as err:
        load_config(
            environ={},
            overrides={"intake": {"auth": {"bearer_token_file": str(tmp_path / "nope")}}},
        )
    assert str(err.value).startswith("intake.auth: cannot read bearer_token_file")


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "enricher", *args],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=60,
    )


def test_check_config_command_exit_codes(tmp_path):
    good = tmp_path / "good.yml"
    good.write_text("pipeline:\n  workers: 4\n")
    bad = tmp_path / "bad.yml"
    bad.write_text("intake:\n  max_body_bytes: -1\n")
    ok = _cli("check-config", str(good))
    assert ok.returncode == 0 and "ok" in ok.stdout
    fail = _cli("check-config", str(bad))
    assert fail.returncode == 1
    assert "intake.max_body_bytes" in fail.stderr


def test_serve_refuses_to_start_on_invalid_config(tmp_path):
    bad = tmp_path / "bad.yml"
    bad.write_text("store:\n  synchronous: SOMETIMES\n")
    res = _cli("serve", "--config", str(bad), "--data-dir", str(tmp_path / "d"))
    assert res.returncode == 2
    assert "store.synchronous" in res.stderr


def test_the_example_configuration_is_valid():
    cfg = load_config(REPO / "enricher.example.yaml", environ={})
    assert cfg.pipeline.workers == 256


def test_delegated_subcommands_take_options_before_paths(tmp_path):
    res = _cli("lint", "--format", "json", str(REPO / "rules"))
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout)["counts"]["error"] == 0
    res = _cli("replay", "--no-deliver", str(tmp_path / "missing.json"))
    assert res.returncode == 2 and "cannot read" in res.stderr


def test_the_readme_example_notification_is_valid():
    from enricher.intake.webhook import WebhookMessage

    msg = WebhookMessage.model_validate_json(
        (REPO / "examples/alertmanager-webhook.json").read_bytes()
    )
    assert msg.commonLabels["alertname"] == "CheckoutHighErrorRate"


def _problems(environ=None, text=None, tmp_path=None, **overrides) -> list[str]:
    path = None
    if text is not None:
        path = tmp_path / "c.yml"
        path.write_text(text)
    with pytest.raises(ConfigError) as err:
        load_config(path, environ=environ or {}, overrides=overrides or None)
    return err.value.problems


def test_listen_refuses_ports_that_would_wrap_and_unbracketed_ipv6():
    [p] = _problems(listen="127.0.0.1:99999")
    assert p.startswith("listen: port must be 1 to 65535, got 99999")
    assert "--listen option" in p
    [p] = _problems(listen="127.0.0.1:0")
    assert "port must be 1 to 65535" in p
    [p] = _problems(listen="::1:8080")
    assert "[::1]:8080" in p
    cfg = load_config(environ={}, overrides={"listen": "[::1]:8080"})
    assert cfg.host_port == ("::1", 8080)


def test_durations_that_cannot_work_are_refused_with_the_reason(tmp_path):
    problems = _problems(
        text=(
            "pipeline:\n  deadlines: {default: 0s}\n  timeouts: {gather: 0}\n"
            "notifiers:\n  webhook: {url: 'http://x.example/', timeout: 0s}\n"
        ),
        tmp_path=tmp_path,
    )
    text = "\n".join(problems)
    assert "pipeline.deadlines.default: must be longer than 0s" in text
    assert "pipeline.timeouts.gather: must be longer than 0s" in text
    assert "notifiers.webhook.timeout: must be longer than 0s" in text
    assert all(p.endswith(f"(in {tmp_path / 'c.yml'})") for p in problems)
    [p] = _problems(
        text="pipeline:\n  deadlines: {critical: 10s}\n  delivery_reserve: 10s\n", tmp_path=tmp_path
    )
    assert "delivery_reserve (10s) must be shorter than every deadline" in p
    assert "deadlines.critical is 10s" in p
    [p] = _problems(text="pipeline:\n  timeouts: {gather: .inf}\n", tmp_path=tmp_path)
    assert "pipeline.timeouts.gather: expected a duration" in p


def test_an_invalid_environment_override_is_blamed_on_the_variable_not_the_file(tmp_path):
    f = tmp_path / "c.yml"
    f.write_text("pipeline:\n  workers: 4\n")
    with pytest.raises(ConfigError) as err:
        load_config(f, environ={"ENRICHER_PIPELINE__DEADLINES__CRITICAL": "soon"})
    [p] = err.value.problems
    assert p.startswith("pipeline.deadlines.critical: expected a duration")
    assert p.endswith("(from environment variable ENRICHER_PIPELINE__DEADLINES__CRITICAL)")
    assert str(f) not in p


def test_synchronous_off_explains_the_yaml_boolean_trap(tmp_path):
    [p] = _problems(text="store:\n  synchronous: OFF\n", tmp_path=tmp_path)
    assert p.startswith("store.synchronous: must be FULL, NORMAL or EXTRA: YAML read an unquoted")
    assert "quote" in p and "power loss" in p
    [p] = _problems(text="store:\n  synchronous: 'OFF'\n", tmp_path=tmp_path)
    assert "power loss can corrupt" in p
    assert load_config(environ={"ENRICHER_STORE__SYNCHRONOUS": "normal"}).store.synchronous == (
        "NORMAL"
    )


def test_a_missing_or_empty_secret_file_is_named_by_its_path(tmp_path):
    missing = tmp_path / "secrets" / "slack-token"
    [p] = _problems(notifiers={"slack": {"bot_token_file": str(missing), "channel": "#x"}})
    assert str(missing) in p and "No such file" in p
    empty = tmp_path / "empty"
    empty.write_text("\n")
    [p] = _problems(intake={"auth": {"bearer_token_file": str(empty)}})
    assert f"bearer_token_file {empty} is empty" in p


def test_version_flag():
    from enricher import __version__

    res = _cli("--version")
    assert res.returncode == 0 and res.stdout.strip() == f"enricher {__version__}"


def test_a_port_in_use_is_one_line_and_exit_1(tmp_path):
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        res = _cli("serve", "--listen", f"127.0.0.1:{port}", "--data-dir", str(tmp_path / "d"))
    assert res.returncode == 1
    assert f"enricher: cannot listen on 127.0.0.1:{port}: the address is already in use" in (
        res.stderr
    )
    assert "Traceback" not in res.stderr


AMTOOL = shutil.which("amtool") or "/usr/bin/amtool"


@pytest.mark.skipif(not Path(AMTOOL).exists(), reason="needs Debian's amtool")
def test_the_readme_alertmanager_snippet_passes_amtool_0_25(tmp_path):
    """A newcomer pastes this first: it must load on the Alertmanager version we name."""
    readme = (REPO / "README.md").read_text()
    section = readme.split("## Pointing Alertmanager at it", 1)[1]
    block = re.search(r"```yaml\n(.*?)```", section, re.S)
    assert block is not None
    config = tmp_path / "alertmanager.yml"
    (tmp_path / "token").write_text("t\n")
    # The snippet names /etc/alertmanager/enricher-token; point it at a file that exists.
    config.write_text(
        block.group(1).replace("/etc/alertmanager/enricher-token", str(tmp_path / "token"))
    )
    check = subprocess.run(
        [AMTOOL, "check-config", str(config)], capture_output=True, text=True, timeout=30
    )
    assert check.returncode == 0, check.stdout + check.stderr
    assert "webhook_configs" in block.group(1) and "/api/v1/alerts" in block.group(1)
