"""Checks for the single-binary Tempo and Loki configs (tempo/tempo.yaml, loki/loki.yaml).

Both files are started with ``-config.expand-env=true``, so they are expanded here the
same way (``${VAR}``, ``${VAR:-default}``, ``${VAR-default}``) before YAML parsing.
"""

from __future__ import annotations

import re
from pathlib import Path, PurePosixPath

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
TEMPO = ROOT / "tempo" / "tempo.yaml"
LOKI = ROOT / "loki" / "loki.yaml"

_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?-)([^}]*))?\}")
_PATH_KEY = re.compile(r"(path|dir|directory|path_prefix|location)$")


def expand_env(text: str, env: dict[str, str]) -> str:
    """Expand like envsubst: ``:-`` uses the default when unset or empty, ``-`` only when unset."""

    def sub(m: re.Match[str]) -> str:
        name, op, default = m.group(1), m.group(2), m.group(3)
        value = env.get(name)
        if op == ":-" and not value:
            return default
        if op == "-" and value is None:
            return default
        return value or ""

    return _REF.sub(sub, text)


def load(path: Path, env: dict[str, str] | None = None) -> dict:
    expanded = expand_env(path.read_text(), env or {})
    assert "${" not in expanded, f"unexpanded reference left in {path}"
    data = yaml.safe_load(expanded)
    assert isinstance(data, dict)
    return data


def fs_paths(node, trail: str = "") -> list[tuple[str, str]]:
    """Every (dotted key, value) whose key names a filesystem location."""
    found: list[tuple[str, str]] = []
    if isinstance(node, dict):
        for key, value in node.items():
            here = f"{trail}.{key}" if trail else str(key)
            if isinstance(value, str) and _PATH_KEY.search(str(key)):
                found.append((here, value))
            else:
                found.extend(fs_paths(value, here))
    elif isinstance(node, list):
        for i, item in enumerate(node):
            found.extend(fs_paths(item, f"{trail}[{i}]"))
    return found


def under(path: str, root: str) -> bool:
    p, r = PurePosixPath(path), PurePosixPath(root)
    return p.is_absolute() and ".." not in p.parts and (p == r or r in p.parents)


def test_expand_env_semantics():
    text = "a: ${X:-d}\nb: ${Y}\nc: ${X-d}\n"
    assert expand_env(text, {}) == "a: d\nb: \nc: d\n"
    assert expand_env(text, {"X": ""}) == "a: d\nb: \nc: \n"
    assert expand_env(text, {"X": "v", "Y": "w"}) == "a: v\nb: w\nc: v\n"


CASES = [
    pytest.param(TEMPO, "TEMPO_DATA", "/var/tempo", 6, id="tempo"),
    pytest.param(LOKI, "LOKI_DATA", "/var/loki", 6, id="loki"),
]


@pytest.mark.parametrize(("path", "var", "default", "min_paths"), CASES)
def test_every_path_under_the_data_dir(path, var, default, min_paths):
    paths = fs_paths(load(path))
    assert len(paths) >= min_paths, paths
    outside = [(k, v) for k, v in paths if not under(v, default)]
    assert not outside, f"paths outside {default}: {outside}"


@pytest.mark.parametrize(("path", "var", "default", "min_paths"), CASES)
def test_data_dir_env_moves_every_path(path, var, default, min_paths):
    before = dict(fs_paths(load(path)))
    after = dict(fs_paths(load(path, {var: "/srv/data"})))
    assert before and before.keys() == after.keys()
    for key, value in before.items():
        assert after[key] == "/srv/data" + value[len(default) :], key
        assert under(after[key], "/srv/data"), (key, after[key])


@pytest.mark.parametrize("path", [TEMPO, LOKI], ids=["tempo", "loki"])
def test_every_reference_has_a_default(path):
    refs = _REF.findall(path.read_text())
    assert refs
    assert all(op == ":-" and default for _, op, default in refs), refs


def test_tempo_required_keys():
    cfg = load(TEMPO)
    assert cfg["server"]["http_listen_port"] == 3200
    protocols = cfg["distributor"]["receivers"]["otlp"]["protocols"]
    assert protocols["grpc"]["endpoint"] == "0.0.0.0:4317"
    assert protocols["http"]["endpoint"] == "0.0.0.0:4318"
    trace = cfg["storage"]["trace"]
    assert trace["backend"] == "local"
    assert trace["local"]["path"] and trace["wal"]["path"]
    assert trace["local"]["path"] != trace["wal"]["path"]
    # Tempo 3.x: the live-store and the backend scheduler/worker replace the 2.x
    # ingester and compactor, and a 3.x binary refuses the old blocks.
    assert not {"ingester", "ingester_client", "compactor", "metrics_generator_client"} & set(cfg)
    assert cfg["live_store"]["wal"]["path"].endswith("/live-store/traces")
    scheduler = cfg["backend_scheduler"]["provider"]["compaction"]["compaction"]
    assert scheduler["block_retention"] == "168h"
    assert cfg["backend_worker"]["compaction"]["block_retention"] == "168h"
    gen = cfg["metrics_generator"]["storage"]
    assert gen["remote_write"][0]["url"] == "http://prometheus:9090/api/v1/write"
    processors = cfg["overrides"]["defaults"]["metrics_generator"]["processors"]
    assert set(processors) == {"service-graphs", "span-metrics"}


def test_loki_required_keys():
    cfg = load(LOKI)
    assert cfg["auth_enabled"] is False
    assert cfg["server"]["http_listen_port"] == 3100
    common = cfg["common"]
    assert common["path_prefix"] == "/var/loki"
    fs = common["storage"]["filesystem"]
    assert fs["chunks_directory"] and fs["rules_directory"]
    assert common["replication_factor"] == 1
    assert common["ring"]["kvstore"]["store"] == "inmemory"
    schemas = cfg["schema_config"]["configs"]
    assert schemas
    latest = schemas[-1]
    assert latest["store"] == "tsdb"
    assert latest["object_store"] == "filesystem"
    assert latest["schema"] == "v13"
    assert latest["index"]["period"] == "24h"
    limits = cfg["limits_config"]
    assert limits["allow_structured_metadata"] is True
    assert limits["retention_period"] == "744h"
    compactor = cfg["compactor"]
    assert compactor["retention_enabled"] is True
    assert compactor["delete_request_store"] == "filesystem"
    assert under(compactor["working_directory"], common["path_prefix"])


def test_start_commands_documented():
    for path in (TEMPO, LOKI):
        head = path.read_text().split("\n\n", 1)[0]
        assert "-config.expand-env=true" in head, path
