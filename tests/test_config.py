"""Configuration: defaults, file, environment, secrets from files, errors that name the field."""

from __future__ import annotations

import json
import subprocess
import sys

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
