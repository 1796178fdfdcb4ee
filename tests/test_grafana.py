"""The shipped grafana/ provisioning: it parses, its cross-links resolve, and the alert rules'
dashboard_url annotations land on dashboards (and template variables) that exist."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import pytest
import yaml

from enricher.sources.config import GrafanaSourceConfig

REPO = Path(__file__).resolve().parent.parent
GRAFANA = REPO / "grafana"
DATASOURCES = GRAFANA / "provisioning" / "datasources" / "datasources.yaml"
PROVIDERS = GRAFANA / "provisioning" / "dashboards" / "dashboards.yaml"
DASHBOARDS = GRAFANA / "dashboards"
RULES = REPO / "rules"

# Data source references that are not provisioned data sources: Grafana's built-in annotation /
# "-- Grafana --" source, and the special mixed / dashboard sources.
BUILTIN_UIDS = {"-- Grafana --", "grafana", "-- Mixed --", "-- Dashboard --"}


def _load_yaml(path: Path) -> Any:
    with path.open(encoding="utf-8") as f:
        return yaml.safe_load(f)


def _load_json(path: Path) -> Any:
    with path.open(encoding="utf-8") as f:
        return json.load(f)


def _datasources() -> list[dict[str, Any]]:
    doc = _load_yaml(DATASOURCES)
    assert doc["apiVersion"] == 1
    sources = doc["datasources"]
    assert isinstance(sources, list) and sources
    return sources


def _by_type(kind: str) -> dict[str, Any]:
    matches = [ds for ds in _datasources() if ds["type"] == kind]
    assert len(matches) == 1, f"expected one {kind} data source, got {len(matches)}"
    return matches[0]


def _dashboards() -> dict[str, dict[str, Any]]:
    files = sorted(DASHBOARDS.glob("*.json"))
    assert files, "no dashboards in grafana/dashboards/"
    out: dict[str, dict[str, Any]] = {}
    for path in files:
        dash = _load_json(path)
        uid = dash.get("uid")
        assert isinstance(uid, str) and uid, f"{path.name}: dashboard without uid"
        assert uid not in out, f"duplicate dashboard uid {uid!r}"
        out[uid] = dash
    return out


def _panels(dash: dict[str, Any]) -> list[dict[str, Any]]:
    """All panels, including those nested in collapsed rows."""
    out: list[dict[str, Any]] = []
    for p in dash.get("panels", []):
        out.append(p)
        out.extend(p.get("panels", []))
    return out


def _exprs(dash: dict[str, Any]) -> list[str]:
    return [t["expr"] for p in _panels(dash) for t in p.get("targets", []) if "expr" in t]


def _variables(dash: dict[str, Any]) -> set[str]:
    return {v["name"] for v in dash.get("templating", {}).get("list", [])}


def _datasource_uid_refs(node: Any, where: str = "") -> list[tuple[str, str]]:
    """Every `"datasource": {"uid": ...}` in a dashboard, as (where, uid)."""
    found: list[tuple[str, str]] = []
    if isinstance(node, dict):
        ds = node.get("datasource")
        if isinstance(ds, dict) and isinstance(ds.get("uid"), str):
            found.append((where, ds["uid"]))
        for key, value in node.items():
            found.extend(_datasource_uid_refs(value, f"{where}.{key}"))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            found.extend(_datasource_uid_refs(value, f"{where}[{i}]"))
    return found


def _alert_rules() -> list[dict[str, Any]]:
    files = sorted([*RULES.glob("*.yml"), *RULES.glob("*.yaml")])
    assert files, "no rule files in rules/"
    rules = [
        rule
        for path in files
        for group in (_load_yaml(path) or {}).get("groups", [])
        for rule in group.get("rules", [])
        if "alert" in rule
    ]
    assert rules
    return rules


# --- everything parses --------------------------------------------------------------------


def test_every_grafana_file_parses() -> None:
    files = sorted(p for p in GRAFANA.rglob("*") if p.is_file())
    parsed = []
    for path in files:
        if path.suffix in (".yaml", ".yml"):
            doc = _load_yaml(path)
        elif path.suffix == ".json":
            doc = _load_json(path)
        else:
            continue
        assert isinstance(doc, dict) and doc, f"{path.relative_to(REPO)} is empty"
        parsed.append(path.relative_to(GRAFANA).as_posix())
    assert "provisioning/datasources/datasources.yaml" in parsed
    assert "provisioning/dashboards/dashboards.yaml" in parsed
    assert "dashboards/checkout.json" in parsed


# --- data sources -------------------------------------------------------------------------


def test_datasources_have_explicit_uids_and_compose_urls() -> None:
    sources = _datasources()
    for ds in sources:
        assert ds.get("uid"), f"{ds.get('name')}: set uid explicitly, cross-links use it"
    uids = [ds["uid"] for ds in sources]
    assert len(uids) == len(set(uids)), f"duplicate data source uids: {uids}"
    assert {(ds["type"], ds["uid"], ds["url"]) for ds in sources if ds["type"] != "other"} >= {
        ("prometheus", "prometheus", "http://prometheus:9090"),
        ("tempo", "tempo", "http://tempo:3200"),
        ("loki", "loki", "http://loki:3100"),
    }
    # The enricher's Explore links default to these uids.
    cfg = GrafanaSourceConfig()
    assert cfg.tempo_datasource_uid in uids
    assert cfg.loki_datasource_uid in uids


def test_cross_links_point_at_provisioned_datasources() -> None:
    uids = {ds["uid"] for ds in _datasources()}
    prom = _by_type("prometheus")["jsonData"]
    tempo = _by_type("tempo")["jsonData"]
    loki = _by_type("loki")["jsonData"]

    refs: list[tuple[str, str]] = []
    exemplar = prom["exemplarTraceIdDestinations"]
    assert exemplar
    refs += [("prometheus.exemplarTraceIdDestinations", d["datasourceUid"]) for d in exemplar]
    refs.append(("tempo.tracesToLogsV2", tempo["tracesToLogsV2"]["datasourceUid"]))
    refs.append(("tempo.serviceMap", tempo["serviceMap"]["datasourceUid"]))
    refs.append(("tempo.tracesToMetrics", tempo["tracesToMetrics"]["datasourceUid"]))
    derived = loki["derivedFields"]
    assert derived
    refs += [("loki.derivedFields", d["datasourceUid"]) for d in derived]

    missing = [(where, uid) for where, uid in refs if uid not in uids]
    assert not missing, f"references to data sources that are not provisioned: {missing}"
    # And they point where the chain needs them to.
    assert {uid for where, uid in refs if where.startswith("prometheus.")} == {"tempo"}
    assert tempo["tracesToLogsV2"]["datasourceUid"] == "loki"
    assert tempo["serviceMap"]["datasourceUid"] == "prometheus"
    assert tempo["tracesToMetrics"]["datasourceUid"] == "prometheus"
    assert {d["datasourceUid"] for d in derived} == {"tempo"}


def test_exemplar_destination_uses_trace_id_label() -> None:
    (dest,) = _by_type("prometheus")["jsonData"]["exemplarTraceIdDestinations"]
    assert dest["name"] == "trace_id"
    assert dest["datasourceUid"] == "tempo"


def test_traces_to_logs_filters_by_trace_and_maps_service_name() -> None:
    t2l = _by_type("tempo")["jsonData"]["tracesToLogsV2"]
    assert t2l["filterByTraceID"] is True
    assert not t2l.get("customQuery", False), "customQuery makes Grafana ignore filterByTraceID"
    tags = {t["key"]: t.get("value", t["key"]) for t in t2l["tags"]}
    assert tags.get("service.name") in ("service_name", "service")


def test_traces_to_metrics_queries_use_the_demo_metrics() -> None:
    t2m = _by_type("tempo")["jsonData"]["tracesToMetrics"]
    queries = [q["query"] for q in t2m["queries"]]
    assert queries
    assert any("http_request_duration_seconds_bucket" in q for q in queries)
    # Each query is scoped by the span's tags (written $$__tags: Grafana expands $ in files).
    assert all("$$__tags" in q for q in queries), queries
    tags = {t["key"]: t.get("value", t["key"]) for t in t2m["tags"]}
    assert tags.get("service.name") == "service"


def test_loki_derived_field_extracts_trace_id_from_json_log_line() -> None:
    derived = _by_type("loki")["jsonData"]["derivedFields"]
    regex_fields = [d for d in derived if d.get("matcherType", "regex") == "regex"]
    assert regex_fields
    trace_id = "4bf92f3577b34da6a3ce929d0e0e4736"
    line = json.dumps(
        {"level": "error", "msg": "payment timeout", "trace_id": trace_id}, separators=(",", ":")
    )
    for field in regex_fields:
        pattern = re.compile(field["matcherRegex"])
        assert pattern.groups == 1, f"{field['name']}: a derived field needs one capture group"
        match = pattern.search(line)
        assert match and match.group(1) == trace_id, (field["matcherRegex"], line)
    for field in derived:
        # Internal link: the url is the Tempo query, and the $ is escaped for provisioning.
        assert field["datasourceUid"] == "tempo"
        assert field["url"] == "$${__value.raw}"


def test_literal_dollars_are_escaped_in_provisioning_files() -> None:
    files = sorted((GRAFANA / "provisioning").rglob("*.yaml"))
    assert files
    lines_with_dollar = 0
    for path in files:
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            code = line.split("#", 1)[0] if line.lstrip().startswith("#") else line
            if "$" not in code:
                continue
            lines_with_dollar += 1
            single = re.sub(r"\$\$", "", code)
            assert "$" not in single, f"{path.name}:{n}: unescaped $ (write $$): {line.strip()}"
    assert lines_with_dollar, "expected $$-escaped variables in the provisioning files"


# --- dashboards ---------------------------------------------------------------------------


def test_dashboard_provider_loads_the_dashboards_directory() -> None:
    doc = _load_yaml(PROVIDERS)
    assert doc["apiVersion"] == 1
    providers = doc["providers"]
    assert providers
    for p in providers:
        assert p["type"] == "file"
        assert p["options"]["path"] in ("/var/lib/grafana/dashboards", "/etc/grafana/dashboards")


def test_dashboard_datasource_refs_are_provisioned() -> None:
    uids = {ds["uid"] for ds in _datasources()}
    refs = [
        (f"{uid_}{where}", ref)
        for uid_, dash in _dashboards().items()
        for where, ref in _datasource_uid_refs(dash)
    ]
    concrete = [(w, u) for w, u in refs if u not in BUILTIN_UIDS and not u.startswith("$")]
    assert concrete, "dashboards reference no data source by uid"
    missing = [(w, u) for w, u in concrete if u not in uids]
    assert not missing, f"dashboard references to unknown data sources: {missing}"
    # Every panel target names its data source (no reliance on the default data source).
    for uid_, dash in _dashboards().items():
        for p in _panels(dash):
            for t in p.get("targets", []):
                assert isinstance(t.get("datasource"), dict), f"{uid_} panel {p.get('title')!r}"


def test_alert_dashboard_urls_resolve_to_dashboards_and_variables() -> None:
    dashboards = _dashboards()
    linked = [
        (rule["alert"], rule["annotations"]["dashboard_url"])
        for rule in _alert_rules()
        if "dashboard_url" in rule.get("annotations", {})
    ]
    assert linked, "no alert rule carries a dashboard_url annotation"
    for alert, url in linked:
        parts = urlsplit(url)
        m = re.match(r"^/d/([^/]+)(?:/|$)", parts.path)
        assert m, f"{alert}: dashboard_url path is not /d/<uid>/...: {url}"
        uid = m.group(1)
        assert uid in dashboards, f"{alert}: no dashboard with uid {uid!r} in grafana/dashboards"
        params = [k for k, _ in parse_qsl(parts.query, keep_blank_values=True)]
        var_names = [k.removeprefix("var-") for k in params if k.startswith("var-")]
        missing = set(var_names) - _variables(dashboards[uid])
        assert not missing, f"{alert}: dashboard {uid!r} has no template variable(s) {missing}"


def test_linked_dashboards_chart_the_metrics_their_alerts_use() -> None:
    dashboards = _dashboards()
    checked = 0
    for rule in _alert_rules():
        url = rule.get("annotations", {}).get("dashboard_url")
        if not url:
            continue
        uid = re.match(r"^/d/([^/]+)", urlsplit(url).path).group(1)  # type: ignore[union-attr]
        metrics = set(re.findall(r"([a-zA-Z_:][\w:]*)\{", rule["expr"]))
        assert metrics, f"{rule['alert']}: no metric selector found in expr"
        charted = " ".join(_exprs(dashboards[uid]))
        assert any(m in charted for m in metrics), (
            f"{rule['alert']}: dashboard {uid!r} charts none of {sorted(metrics)}"
        )
        checked += 1
    assert checked


@pytest.fixture
def service_dashboard() -> dict[str, Any]:
    """The dashboard the checkout latency alert links to."""
    (rule,) = [r for r in _alert_rules() if r["alert"] == "CheckoutHighLatency"]
    uid = re.match(r"^/d/([^/]+)", urlsplit(rule["annotations"]["dashboard_url"]).path)
    assert uid
    dashboards = _dashboards()
    assert uid.group(1) in dashboards, f"no dashboard with uid {uid.group(1)!r}"
    return dashboards[uid.group(1)]


def test_service_dashboard_has_rate_errors_and_latency_panels(
    service_dashboard: dict[str, Any],
) -> None:
    assert "service" in _variables(service_dashboard)
    (var,) = [v for v in service_dashboard["templating"]["list"] if v["name"] == "service"]
    query = var["query"]["query"] if isinstance(var["query"], dict) else var["query"]
    assert re.fullmatch(r"label_values\(\s*http_requests_total\s*,\s*service\s*\)", query)
    exprs = _exprs(service_dashboard)
    assert any("rate(http_requests_total" in e and "5.." not in e for e in exprs)
    assert any('status=~"5.."' in e and "/" in e for e in exprs)
    assert any("histogram_quantile(0.99" in e for e in exprs)
    assert all('service="$service"' in e for e in exprs), exprs


def test_latency_panel_shows_exemplars(service_dashboard: dict[str, Any]) -> None:
    latency_targets = [
        t
        for p in _panels(service_dashboard)
        for t in p.get("targets", [])
        if "histogram_quantile" in t.get("expr", "")
        and "http_request_duration_seconds_bucket" in t.get("expr", "")
    ]
    assert latency_targets, "no latency panel built from http_request_duration_seconds_bucket"
    for t in latency_targets:
        assert t.get("exemplar") is True, f"exemplars off on latency target {t['refId']}"


def test_service_dashboard_shows_deploy_annotations(service_dashboard: dict[str, Any]) -> None:
    deploy_tag = GrafanaSourceConfig().deploy_tag
    queries = [
        a
        for a in service_dashboard["annotations"]["list"]
        if a.get("enable") and deploy_tag in a.get("target", {}).get("tags", [])
    ]
    assert queries, f"no enabled annotation query on tag {deploy_tag!r}"
    for a in queries:
        assert a["datasource"]["uid"] in BUILTIN_UIDS
        assert a["target"]["type"] == "tags"
