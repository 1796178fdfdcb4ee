"""Storm benchmark: new notifications per second, acknowledged and paged, by store and processes.

    python bench/storm.py [--duration 20] [--connections 64] [--profile]

Cases: SQLite and Redis (appendonly yes, appendfsync always), each with one process and with
`--processes 2` (two processes on one SQLite directory take turns writing). Debian's
`wrk` posts for `--duration` seconds, every post a new notification (its Lua script gives each
a unique groupKey: a repeated body would only exercise the duplicate path). The service runs
with no notifiers, so "paged" means the whole pipeline ran (job claimed, gathered, analysed,
page stored and finished) without the wait on a receiver (bench/notify.py measures that);
with no evidence backends, or with `--backends-ms 20` against bench/gather.py's doubles of
Prometheus, Tempo, Loki and Grafana (every storm alert is the same recorded incident, so the
gatherer's sharing of identical lookups applies, as it would in a real storm).

Reported per case: acknowledged posts/s and acknowledgement latency p50/p99 (wrk), pages/s
over the load and until the backlog drained, receipt-to-page latency p50/p99 (from every
stored page: paged_at - received_at), stored == acknowledged, and for Redis the memory per
stored notification. `--profile` runs py-spy on one service process for part of each run and
prints where its time went (self time of the top functions).
"""

from __future__ import annotations

import argparse
import collections
import json
import multiprocessing as mp
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from datetime import datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.gather import serve_doubles  # noqa: E402
from bench.intake import LUA, payload  # noqa: E402
from tests.realstack import Enricher, RedisServer  # noqa: E402

TOKEN = "bench-token"


def _get(url: str) -> Any:
    req = urllib.request.Request(url, headers={"Authorization": f"Bearer {TOKEN}"})
    with urllib.request.urlopen(req, timeout=30) as resp:
        return json.loads(resp.read())


def _pages(url: str) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    before = None
    while True:
        q = f"{url}/api/v1/pages?limit=500" + (f"&before={before}" if before else "")
        got = _get(q)["pages"]
        out.extend(got)
        if len(got) < 500:
            return out
        before = got[-1]["id"]


def _pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


def _profile(pid: int, seconds: int, out: Path) -> subprocess.Popen[bytes] | None:
    if not shutil.which("py-spy"):
        return None
    return subprocess.Popen(
        ["py-spy", "record", "--pid", str(pid), "--duration", str(seconds), "--rate", "200",
         "--format", "raw", "--output", str(out), "--nonblocking"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip


def _top_self(raw: Path, n: int = 12) -> list[str]:
    """Self time by function from py-spy's collapsed stacks ("a;b;c count")."""
    counts: collections.Counter[str] = collections.Counter()
    total = 0
    for line in raw.read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack:
            continue
        c = int(count)
        total += c
        counts[stack.split(";")[-1]] += c
    return [f"{c / total:5.1%} {frame}" for frame, c in counts.most_common(n)] if total else []


def run_case(
    name: str,
    backend: str,
    processes: int,
    duration: int,
    connections: int,
    profile: bool,
    sources: dict[str, Any] | None = None,
) -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix=f"bench-storm-{name}-"))
    redis = None
    try:
        config: dict[str, Any] = {
            "intake": {"auth": {"bearer_token": TOKEN}},
            "notifiers": {"log": {"enabled": False}},
            "log_level": "WARNING",
        }
        if sources:
            config["sources"] = sources
        if backend == "redis":
            redis = RedisServer(work / "redis").start()
            config["store"] = {
                "backend": "redis",
                "redis": {"url": redis.url, "prefix": f"bench-{uuid.uuid4().hex[:6]}:"},
            }
        body_file = work / "body.json"
        body_file.write_bytes(payload(1))
        (work / "post.lua").write_text(
            LUA.replace(
                'wrk.headers["Content-Type"] = "application/json"',
                'wrk.headers["Content-Type"] = "application/json"\n'
                f'  wrk.headers["Authorization"] = "Bearer {TOKEN}"',
            )
        )
        svc = Enricher(work / "svc", config=config)
        if processes > 1:
            svc.extra_args = ["--processes", str(processes)]
        svc.start()
        used0 = _redis_memory(redis) if redis else 0
        spy = None
        try:
            if profile:
                pid = _service_pid(svc.proc.pid)
                spy = _profile(pid, max(5, duration // 2), work / "profile.txt")
            start = time.monotonic()
            wall_start = time.time()
            out = subprocess.run(
                ["wrk", "-t2", f"-c{connections}", f"-d{duration}s", "--timeout", "10s",
                 "-s", str(work / "post.lua"), svc.url, "--", str(body_file)],
                capture_output=True, text=True, check=True, timeout=duration + 60,
            ).stdout  # fmt: skip
            load_s = time.monotonic() - start
            load_end = wall_start + load_s
            line = next(x for x in out.splitlines() if x.startswith("WRKJSON "))
            w = json.loads(line[len("WRKJSON ") :])
            acked = w["requests"] - w["non2xx"]
            # Let the backlog drain (every acknowledged notification must become a page).
            deadline = time.monotonic() + 300
            pages: list[dict[str, Any]] = []
            while time.monotonic() < deadline:
                pages = _pages(svc.url)
                if len(pages) >= acked:
                    break
                time.sleep(1)
            if spy is not None:
                spy.wait(60)
            latency = []
            done_during = 0
            last_paged = wall_start
            for p in pages:
                paged = datetime.fromisoformat(p["paged_at"]).timestamp()
                latency.append(paged - datetime.fromisoformat(p["received_at"]).timestamp())
                done_during += paged <= load_end
                last_paged = max(last_paged, paged)
            # Drained when the last page was stored, not when this loop noticed: polling the
            # pages API is slow and would count against the service.
            drained_s = max(last_paged - wall_start, 1e-3)
            used = (_redis_memory(redis) - used0) if redis else 0
        finally:
            svc.stop()
        secs = w["duration_us"] / 1e6
        result = {
            "case": name,
            "acked_per_s": round(acked / secs),
            "ack_p50_ms": round(w["p50_us"] / 1000, 2),
            "ack_p99_ms": round(w["p99_us"] / 1000, 2),
            "paged_per_s_during_load": round(done_during / load_s),
            "paged_per_s_until_drained": round(len(pages) / drained_s),
            "receipt_to_page_p50_s": round(_pct(latency, 0.50), 3),
            "receipt_to_page_p99_s": round(_pct(latency, 0.99), 3),
            "acknowledged": acked,
            "paged": len(pages),
            "degraded": sum(1 for p in pages if p.get("degraded")),
            "with_culprit": sum(1 for p in pages if (p.get("evidence") or {}).get("culprit")),
            "errors": w["non2xx"] + w["connect"] + w["read"] + w["write"] + w["timeout"],
            "no_loss": len(pages) >= acked,
        }
        if redis:
            result["redis_bytes_per_notification"] = round(used / max(acked, 1))
        if profile and (work / "profile.txt").exists():
            result["profile_top_self"] = _top_self(work / "profile.txt")
        return result
    finally:
        if redis:
            redis.stop()
        shutil.rmtree(work, ignore_errors=True)


def _service_pid(pid: int) -> int:
    """The process that does the work: the first child under `--processes`, else pid."""
    try:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        children = []
    return int(children[0]) if children else pid


def _redis_memory(redis: RedisServer) -> int:
    import redis as redis_py

    client = redis_py.Redis.from_url(redis.url)
    try:
        return int(client.info("memory")["used_memory"])
    finally:
        client.close()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--duration", type=int, default=20)
    ap.add_argument("--connections", type=int, default=64)
    ap.add_argument("--profile", action="store_true", help="py-spy one service process")
    ap.add_argument("--only", help="run one case: sqlite-1, sqlite-2, redis-1 or redis-2")
    ap.add_argument(
        "--backends-ms",
        type=float,
        default=0,
        help="evidence from Prometheus, Tempo, Loki and Grafana doubles answering in this many "
        "ms (bench/gather.py's, loaded with the recorded incidents); 0: no evidence backends",
    )
    args = ap.parse_args()
    sources = None
    doubles = None
    if args.backends_ms:
        parent, child = mp.Pipe()
        doubles = mp.Process(
            target=serve_doubles, args=(args.backends_ms / 1000, child), daemon=True
        )
        doubles.start()
        urls = parent.recv()
        sources = {
            name: {"url": url}
            for name, url in zip(("prometheus", "tempo", "loki", "grafana"), urls, strict=True)
        }
    if not shutil.which("wrk"):
        print("wrk is not installed (apt-get install wrk)", file=sys.stderr)
        return 2
    cases = [
        ("sqlite-1", "sqlite", 1),
        ("sqlite-2", "sqlite", 2),
        ("redis-1", "redis", 1),
        ("redis-2", "redis", 2),
    ]
    results = []
    for name, backend, processes in cases:
        if args.only and name != args.only:
            continue
        r = run_case(
            name, backend, processes, args.duration, args.connections, args.profile, sources
        )
        results.append(r)
        print(json.dumps(r), flush=True)
    if doubles is not None:
        doubles.terminate()
    return 0 if all(r["no_loss"] for r in results) else 1


if __name__ == "__main__":
    raise SystemExit(main())
