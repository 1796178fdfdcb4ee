"""The demo stack in compose/: the compose file, the configs it mounts and the images it names.

Docker cannot run here, so this checks what can be checked without it: the compose file
parses, every service is there, images are pinned, ports stay on loopback, every mounted host
path and build context exists, and the Prometheus, Alertmanager and enricher configs pass
their own real validators (promtool 2.42 and amtool 0.25 from Debian, `enricher check-config`).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parent.parent
COMPOSE_DIR = REPO / "compose"
COMPOSE_FILE = COMPOSE_DIR / "docker-compose.yml"
PROMETHEUS_CONFIG = COMPOSE_DIR / "prometheus" / "prometheus.yml"
ALERTMANAGER_CONFIG = COMPOSE_DIR / "alertmanager" / "alertmanager.yml"
ENRICHER_CONFIG = COMPOSE_DIR / "enricher" / "enricher.yaml"
ENRICHER_WEBHOOK = "http://enricher:8080/api/v1/alerts"

PROMTOOL = shutil.which("promtool") or "/usr/bin/promtool"
AMTOOL = shutil.which("amtool") or "/usr/bin/amtool"
needs_promtool = pytest.mark.skipif(
    not Path(PROMTOOL).exists(), reason="needs Debian's promtool (prometheus)"
)
needs_amtool = pytest.mark.skipif(
    not Path(AMTOOL).exists(), reason="needs Debian's amtool (prometheus-alertmanager)"
)

EXPECTED_SERVICES = {
    "prometheus",
    "alertmanager",
    "tempo",
    "loki",
    "grafana",
    "enricher",
    "demo",
    "orders",
    "loadgen",
}
# Host paths outside the repository that a service may mount on purpose.
HOST_MOUNTS = {"/var/run/docker.sock"}


def _compose() -> dict[str, Any]:
    data = yaml.safe_load(COMPOSE_FILE.read_text(encoding="utf-8"))
    assert isinstance(data, dict), "the compose file is a mapping"
    return data


def _services() -> dict[str, dict[str, Any]]:
    services = _compose().get("services") or {}
    assert services, "the compose file defines services"
    return services


def _bind_mounts() -> list[tuple[str, str]]:
    """(service, host path) of every bind mount: short syntax with a path, or type: bind."""
    named = set(_compose().get("volumes") or {})
    out = []
    for name, svc in _services().items():
        for vol in svc.get("volumes") or []:
            if isinstance(vol, str):
                source = vol.split(":", 1)[0]
                if ":" not in vol or source in named:
                    continue
            elif vol.get("type") == "bind":
                source = vol["source"]
            else:
                continue
            out.append((name, source))
    return out


def _resolve(host_path: str) -> Path:
    return (COMPOSE_DIR / host_path).resolve()


def _published_ports() -> list[tuple[str, Any]]:
    return [(n, p) for n, s in _services().items() for p in s.get("ports") or []]


# --- compose file ----------------------------------------------------------------------------


def test_compose_has_no_version_key_and_every_expected_service() -> None:
    data = _compose()
    assert "version" not in data, "the compose spec has no top-level version"
    missing = EXPECTED_SERVICES - set(_services())
    assert not missing, f"services missing from the compose file: {sorted(missing)}"


def test_every_image_is_pinned_to_a_version_tag() -> None:
    images = {n: s["image"] for n, s in _services().items() if "image" in s}
    pulled = {n: i for n, i in images.items() if "build" not in _services()[n]}
    assert pulled, "the stack pulls images"
    for name, image in images.items():
        ref = image.split("@", 1)[0]
        tail = ref.rsplit("/", 1)[-1]
        assert ":" in tail, f"{name}: image {image!r} has no tag"
        tag = tail.split(":", 1)[1]
        assert tag and tag != "latest", f"{name}: image {image!r} is not pinned"
        if name in pulled:
            assert re.search(r"\d", tag), f"{name}: tag {tag!r} of {image!r} is not a version"
    for name in ("prometheus", "alertmanager", "tempo", "loki", "grafana"):
        assert name in pulled, f"{name} runs a pinned upstream image"


def test_every_service_has_an_image_or_a_build() -> None:
    for name, svc in _services().items():
        assert "image" in svc or "build" in svc, f"{name}: neither image nor build"


def test_published_ports_are_bound_to_loopback_only() -> None:
    ports = _published_ports()
    assert ports, "the stack publishes ports"
    for name, port in ports:
        if isinstance(port, dict):
            assert port.get("host_ip") == "127.0.0.1", f"{name}: {port} is not on 127.0.0.1"
        else:
            assert str(port).startswith("127.0.0.1:"), f"{name}: {port!r} is not on 127.0.0.1"
    published = {n for n, _ in ports}
    assert {"grafana", "enricher", "prometheus"} <= published


def test_every_bind_mounted_host_path_exists_in_the_repo() -> None:
    mounts = _bind_mounts()
    assert mounts, "the stack bind-mounts its configs"
    for name, source in mounts:
        if source in HOST_MOUNTS:
            continue
        path = _resolve(source)
        assert path.is_relative_to(REPO), f"{name}: {source} is outside the repository"
        assert path.exists(), f"{name}: bind-mounted {source} ({path}) does not exist"
    sources = {s for _, s in mounts}
    for expected in (
        "./prometheus/prometheus.yml",
        "../rules",
        "./alertmanager/alertmanager.yml",
        "../tempo/tempo.yaml",
        "../loki/loki.yaml",
        "../grafana/provisioning",
        "../grafana/dashboards",
        "./enricher/enricher.yaml",
    ):
        assert expected in sources, f"{expected} is mounted"


def test_grafana_mounts_provisioning_and_dashboards_where_the_provider_looks() -> None:
    vols = _services()["grafana"]["volumes"]
    assert any(v.startswith("../grafana/provisioning:/etc/grafana/provisioning") for v in vols)
    provider = yaml.safe_load(
        (REPO / "grafana/provisioning/dashboards/dashboards.yaml").read_text(encoding="utf-8")
    )
    paths = [p["options"]["path"] for p in provider["providers"]]
    assert paths
    for path in paths:
        assert any(v.startswith(f"../grafana/dashboards:{path}") for v in vols), path


def test_file_secrets_exist_and_are_not_empty() -> None:
    secrets = _compose().get("secrets") or {}
    assert secrets, "the stack has file secrets"
    for name, spec in secrets.items():
        path = _resolve(spec["file"])
        assert path.is_file(), f"secret {name}: {path} does not exist"
        assert path.read_text(encoding="utf-8").strip(), f"secret {name}: {path} is empty"
    for name, svc in _services().items():
        for used in svc.get("secrets") or []:
            key = used if isinstance(used, str) else used["source"]
            assert key in secrets, f"{name} uses undefined secret {key}"


def test_build_contexts_exist() -> None:
    builds = {n: s["build"] for n, s in _services().items() if "build" in s}
    assert {"enricher", "demo", "orders", "loadgen"} <= set(builds)
    for name, build in builds.items():
        if isinstance(build, str):
            build = {"context": build}
        context = _resolve(build["context"])
        dockerfile = context / build.get("dockerfile", "Dockerfile")
        # compose/demo/ is written separately; its Dockerfile is what must be there.
        if _resolve(build["context"]) != COMPOSE_DIR / "demo":
            assert context.is_dir(), f"{name}: build context {context} does not exist"
        assert dockerfile.is_file(), f"{name}: {dockerfile} does not exist"
    assert _resolve(builds["enricher"]["context"]) == REPO


def test_enricher_image_runs_serve_with_the_mounted_config() -> None:
    text = (REPO / "Dockerfile").read_text(encoding="utf-8")
    assert re.search(r"^FROM python:3\.11[\w.-]*-slim", text, re.M), "python:3.11-slim base"
    assert re.search(r"^USER (?!root)\S+", text, re.M), "runs as a non-root user"
    assert 'ENTRYPOINT ["enricher"]' in text
    assert "/etc/enricher/enricher.yaml" in text
    mounts = _services()["enricher"]["volumes"]
    assert "./enricher/enricher.yaml:/etc/enricher/enricher.yaml:ro" in mounts
    ignored = (REPO / ".dockerignore").read_text(encoding="utf-8").split()
    assert {".git", "data"} <= set(ignored)


# --- Prometheus ------------------------------------------------------------------------------


def test_prometheus_stores_exemplars_and_scrapes_demo_and_enricher() -> None:
    command = _services()["prometheus"]["command"]
    assert "--enable-feature=exemplar-storage" in command
    assert "--config.file=/etc/prometheus/prometheus.yml" in command
    config = yaml.safe_load(PROMETHEUS_CONFIG.read_text(encoding="utf-8"))
    targets = {
        t for job in config["scrape_configs"] for sc in job["static_configs"] for t in sc["targets"]
    }
    assert targets
    assert "demo:8000" in targets
    assert "enricher:8080" in targets
    assert config["rule_files"] == ["/etc/prometheus/rules/*.yml"]
    am = [
        t
        for a in config["alerting"]["alertmanagers"]
        for s in a["static_configs"]
        for t in s["targets"]
    ]
    assert am == ["alertmanager:9093"]
    assert any(
        v.startswith("../rules:/etc/prometheus/rules") for v in _services()["prometheus"]["volumes"]
    )


@needs_promtool
def test_promtool_accepts_the_prometheus_config(tmp_path: Path) -> None:
    """The rule_files glob names the container path; the copy points it at the repo's rules."""
    text = PROMETHEUS_CONFIG.read_text(encoding="utf-8")
    assert "/etc/prometheus/rules/*.yml" in text
    copy = tmp_path / "prometheus.yml"
    copy.write_text(text.replace("/etc/prometheus/rules/*.yml", f"{REPO}/rules/*.yml"))
    res = subprocess.run(
        [PROMTOOL, "check", "config", str(copy)], capture_output=True, text=True, timeout=60
    )
    out = res.stdout + res.stderr
    assert res.returncode == 0, out
    assert "rule files found" in out and "SUCCESS" in out, out


# --- Alertmanager ----------------------------------------------------------------------------


def _webhook_urls(config: dict[str, Any], receiver: str) -> list[str]:
    for r in config["receivers"]:
        if r["name"] == receiver:
            return [w["url"] for w in r.get("webhook_configs") or []]
    raise AssertionError(f"no receiver {receiver!r}")


def test_alertmanager_routes_every_alert_to_the_enricher() -> None:
    config = yaml.safe_load(ALERTMANAGER_CONFIG.read_text(encoding="utf-8"))
    receiver = config["route"]["receiver"]
    assert _webhook_urls(config, receiver) == [ENRICHER_WEBHOOK]
    hooks = [w for r in config["receivers"] for w in r.get("webhook_configs") or []]
    assert hooks
    for hook in hooks:
        assert "timeout" not in hook, "Alertmanager 0.25 refuses webhook_configs timeout"
    (hook,) = [h for h in hooks if h["url"] == ENRICHER_WEBHOOK]
    assert hook["send_resolved"] is True
    assert hook["max_alerts"] == 0
    # The token Alertmanager sends is the compose secret the enricher reads.
    cred = hook["http_config"]["authorization"]["credentials_file"]
    enricher = _services()["enricher"]
    assert enricher["environment"]["ENRICHER_INTAKE__AUTH__BEARER_TOKEN_FILE"] == cred
    secret = Path(cred).name
    assert secret in _services()["alertmanager"]["secrets"]
    assert secret in enricher["secrets"]


@needs_amtool
def test_amtool_accepts_the_alertmanager_config(tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text("test-token\n")
    text = ALERTMANAGER_CONFIG.read_text(encoding="utf-8")
    text, n = re.subn(r"(credentials_file:\s*)\S+", rf"\g<1>{token}", text)
    assert n >= 1
    copy = tmp_path / "alertmanager.yml"
    copy.write_text(text)
    res = subprocess.run(
        [AMTOOL, "check-config", str(copy)], capture_output=True, text=True, timeout=60
    )
    out = res.stdout + res.stderr
    assert res.returncode == 0, out
    assert "SUCCESS" in out and "1 receivers" in out, out


# --- enricher --------------------------------------------------------------------------------


def _check_config(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "enricher", "check-config", str(ENRICHER_CONFIG)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
        env=env,
    )


def test_enricher_check_config_accepts_the_compose_config() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ENRICHER_")}
    res = _check_config(env)
    assert res.returncode == 0, res.stdout + res.stderr
    config = yaml.safe_load(ENRICHER_CONFIG.read_text(encoding="utf-8"))
    assert config["listen"] == "0.0.0.0:8080"
    assert config["data_dir"] == "/data"
    sources = config["sources"]
    assert sources["prometheus"]["url"] == "http://prometheus:9090"
    assert sources["tempo"]["url"] == "http://tempo:3200"
    assert sources["loki"]["url"] == "http://loki:3100"
    assert sources["grafana"]["url"] == "http://grafana:3000"


def test_enricher_accepts_the_compose_environment_with_the_secrets(tmp_path: Path) -> None:
    """The ENRICHER_* variables the compose file sets, with its secrets at temp paths."""
    svc = _services()["enricher"]
    secrets = _compose()["secrets"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("ENRICHER_")}
    overrides = {k: str(v) for k, v in svc["environment"].items() if k.startswith("ENRICHER_")}
    assert overrides
    for key, value in overrides.items():
        if value.startswith("/run/secrets/"):
            name = value.removeprefix("/run/secrets/")
            local = tmp_path / name
            shutil.copy(_resolve(secrets[name]["file"]), local)
            value = str(local)
        env[key] = value
    res = _check_config(env)
    assert res.returncode == 0, res.stdout + res.stderr


# --- load generator --------------------------------------------------------------------------


def test_loadgen_flips_the_flag_it_is_told_to() -> None:
    env = _services()["loadgen"]["environment"]
    assert env["FLAG_URL"].startswith("http://demo:8000/")
    assert env["TARGET_URL"].startswith("http://demo:8000/")
    source = (COMPOSE_DIR / "loadgen" / "loadgen.py").read_text(encoding="utf-8")
    imports = set(re.findall(r"^(?:from|import) (\w+)", source, re.M))
    assert imports
    assert imports <= set(sys.stdlib_module_names), imports - set(sys.stdlib_module_names)
    for name in ("FLAG_URL", "FLAG_AFTER", "TARGET_URL", "RPS"):
        assert f'"{name}"' in source
