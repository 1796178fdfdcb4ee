"""The doubles' narrowing indexes never change an answer: every query answers exactly what
a full scan answers (the indexes keep the benchmark's doubles cheap, not different)."""

from __future__ import annotations

import pytest

from tests.doubles.loki import LokiDouble, _Query
from tests.doubles.prometheus import PrometheusDouble

TID = "4912601d02101aa006f6898756c17e1a"


def _push(loki: LokiDouble) -> None:
    t = 1_900_000_000 * 10**9
    loki.push(
        {
            "streams": [
                {
                    "stream": {"service_name": "api", "env": "prod"},
                    "values": [
                        [str(t + 1), f"error trace_id={TID} failed"],
                        [str(t + 2), f"inside a longer hex run ab{TID}cd"],
                        [str(t + 3), "no id here", {"trace_id": TID}],
                        [str(t + 4), f"upper {TID.upper()}"],
                        [str(t + 5), "other 0123456789abcdef0123456789abcdef"],
                    ],
                },
                {
                    "stream": {"service_name": "db", "trace_id": TID},
                    "values": [[str(t + 6), "timeout on SELECT"]],
                },
            ]
        }
    )


@pytest.mark.parametrize(
    "query",
    [
        f'{{service_name=~".+"}} |= "{TID}"',
        f'{{service_name=~".+"}} | trace_id="{TID}"',
        f'{{service_name="api"}} |= "{TID}"',
        '{service_name="api"} |~ "(?i)(error|timeout)"',
        '{service_name=~".+"} |~ "(?i)(error|timeout)"',
        '{env="prod"} != "upper"',
        f'{{service_name=~".+"}} |= "{TID.upper()}"',
    ],
)
def test_loki_index_answers_what_a_full_scan_answers(query: str) -> None:
    loki = LokiDouble()
    _push(loki)
    q = _Query(query)
    scan = [i for i, e in enumerate(loki.entries) if q.matches(e[0], e[2], e[3])]
    # the candidates hold every hit, in insertion order
    assert [i for i in loki._candidates(q) if i in scan] == scan


def test_prometheus_sample_index_keeps_series_an_empty_matcher_selects() -> None:
    prom = PrometheusDouble()
    prom.add_samples({"__name__": "build_info", "service": "a", "version": "1"}, [(1.0, 1.0)])
    prom.add_samples({"__name__": "build_info", "version": "2"}, [(1.0, 1.0)])
    prom.add_samples({"__name__": "up", "service": "a"}, [(1.0, 1.0)])
    assert [s["version"] for s, _ in prom._select('build_info{service=""}')] == ["2"]
    assert [s["version"] for s, _ in prom._select('build_info{service="a"}')] == ["1"]
    assert len(prom._select("build_info")) == 2
