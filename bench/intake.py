"""Intake benchmark: Debian's `wrk` posts real payloads at the service on loopback.

    python bench/intake.py [--duration 30] [--connections 32]

Two runs, each against a fresh `enricher serve` with its default configuration (SQLite,
synchronous=FULL, group commit, the pipeline running): the recorded single-alert notification,
and a 50-alert group built from it. wrk's Lua script gives every post a unique groupKey, so
each one is a new notification that must reach the disk (no cheap duplicate path). wrk is a
separate C process, which leaves more CPU to the service than a Python load generator.

Reported: posts/s, alerts/s, acknowledgement latency p50 / p99, pages delivered per second
while the load ran and the backlog left at its end, and stored == acknowledged
(the count of notifications in the database against the 2xx answers wrk received; requests
still in flight when wrk stops may be stored without wrk seeing their answer, so stored may
exceed acknowledged by at most the connection count, never fall short).
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.realstack import Enricher  # noqa: E402

FIXTURE = REPO.parent / "shared/fixtures/real/checkout-slow-query/alertmanager-webhook-1.json"
MARK = "@@UNIQUE@@"

LUA = r"""
local counter = 0
local threads = {}
local body_template = nil

function setup(thread)
  thread:set("tid", #threads)
  table.insert(threads, thread)
end

function init(args)
  local f = io.open(args[1], "rb")
  body_template = f:read("*all")
  f:close()
  wrk.method = "POST"
  wrk.headers["Content-Type"] = "application/json"
end

request = function()
  counter = counter + 1
  local body = string.gsub(body_template, "@@UNIQUE@@", tid .. "-" .. counter, 1)
  return wrk.format(nil, "/api/v1/alerts", nil, body)
end

done = function(summary, latency, requests)
  io.write(string.format(
    "WRKJSON {\"requests\": %d, \"duration_us\": %d, \"non2xx\": %d, \"connect\": %d, " ..
    "\"read\": %d, \"write\": %d, \"timeout\": %d, \"p50_us\": %d, \"p90_us\": %d, " ..
    "\"p99_us\": %d, \"max_us\": %d}\n",
    summary.requests, summary.duration, summary.errors.status, summary.errors.connect,
    summary.errors.read, summary.errors.write, summary.errors.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max))
end
"""


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _service_stats(url: str, seconds: float) -> dict[str, float]:
    """From the service's own metrics: group commits, and how far paging kept up."""
    text = urllib.request.urlopen(f"{url}/metrics", timeout=10).read().decode()
    v: dict[str, float] = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            v[name] = float(value)
    n = v.get("enricher_store_commit_seconds_count", 0) or 1
    return {
        "commits": int(n),
        "mean_commit_ms": round(v.get("enricher_store_commit_seconds_sum", 0) / n * 1000, 2),
        "mean_ops_per_commit": round(v.get("enricher_store_commit_batch_size_sum", 0) / n, 1),
        # Pages delivered while wrk ran, and the notifications still waiting when it stopped.
        "pages_per_s": round(v.get('enricher_jobs_total{outcome="done"}', 0) / seconds),
        "backlog_at_end": int(v.get("enricher_backlog_jobs", 0)),
    }


def payload(alerts: int) -> bytes:
    body = json.loads(FIXTURE.read_text())
    body["groupKey"] = '{}:{alertname="CheckoutHighErrorRate", run="' + MARK + '"}'
    template = body["alerts"][0]
    body["alerts"] = []
    for i in range(alerts):
        a = copy.deepcopy(template)
        a["labels"]["pod"] = f"checkout-{i}"
        a["fingerprint"] = f"{i:016x}"
        body["alerts"].append(a)
    return json.dumps(body).encode()


def run_case(name: str, alerts: int, duration: int, connections: int, threads: int) -> dict:
    work = Path(tempfile.mkdtemp(prefix=f"bench-intake-{name}-"))
    try:
        body_file = work / "body.json"
        body_file.write_bytes(payload(alerts))
        (work / "post.lua").write_text(LUA)
        svc = Enricher(work / "svc").start()
        try:
            cpu0 = _cpu_seconds(svc.proc.pid)
            out = subprocess.run(
                [
                    "wrk",
                    f"-t{threads}",
                    f"-c{connections}",
                    f"-d{duration}s",
                    "--timeout",
                    "10s",
                    "-s",
                    str(work / "post.lua"),
                    svc.url,
                    "--",
                    str(body_file),
                ],
                capture_output=True,
                text=True,
                check=True,
                timeout=duration + 60,
            ).stdout
            cpu = _cpu_seconds(svc.proc.pid) - cpu0
            commits = _service_stats(svc.url, duration)
        finally:
            svc.stop()
        line = next(x for x in out.splitlines() if x.startswith("WRKJSON "))
        w = json.loads(line[len("WRKJSON ") :])
        db = sqlite3.connect(svc.data_dir / "enricher.db")
        stored = db.execute("SELECT count(*) FROM notifications").fetchone()[0]
        dups = db.execute("SELECT coalesce(sum(duplicates), 0) FROM notifications").fetchone()[0]
        db.close()
        secs = w["duration_us"] / 1e6
        errors = w["non2xx"] + w["connect"] + w["read"] + w["write"] + w["timeout"]
        acked = w["requests"] - w["non2xx"]
        return {
            "case": name,
            "alerts_per_post": alerts,
            "body_bytes": body_file.stat().st_size,
            "posts_per_s": round(acked / secs),
            "alerts_per_s": round(acked * alerts / secs),
            "ack_p50_ms": round(w["p50_us"] / 1000, 2),
            "ack_p90_ms": round(w["p90_us"] / 1000, 2),
            "ack_p99_ms": round(w["p99_us"] / 1000, 2),
            "ack_max_ms": round(w["max_us"] / 1000, 2),
            # CPU the service spent per acknowledged post, pipeline included: unlike posts/s,
            # it does not move when other processes compete for the two cores.
            "service_cpu_us_per_post": round(cpu / max(acked, 1) * 1e6),
            **commits,
            "acknowledged": acked,
            "stored": stored,
            "duplicates": dups,
            "errors": errors,
            "no_loss": stored >= acked and stored - acked <= connections and dups == 0,
        }
    finally:
        shutil.rmtree(work, ignore_errors=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--duration", type=int, default=30)
    ap.add_argument("--connections", type=int, default=32)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    if not shutil.which("wrk"):
        print("wrk is not installed (apt-get install wrk)", file=sys.stderr)
        return 2
    results = [
        run_case("single-alert", 1, args.duration, args.connections, args.threads),
        run_case("50-alert-group", 50, args.duration, args.connections, args.threads),
    ]
    for r in results:
        print(json.dumps(r))
    return 0 if all(r["no_loss"] and r["errors"] == 0 for r in results) else 1


if __name__ == "__main__":
    raise SystemExit(main())
