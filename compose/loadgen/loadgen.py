"""Tiny load generator for the alert-enricher demo stack (standard library only).

Sends steady traffic at the checkout demo, then after FLAG_AFTER seconds turns the
`new_checkout` feature flag on (POST FLAG_URL with body FLAG_BODY) and keeps the load going,
so the slow, failing path drives CheckoutHighErrorRate / CheckoutHighLatency to fire.

Environment:
  TARGET_URL    request URL (default http://demo:8000/checkout)
  TARGET_METHOD GET or POST (default POST; POST sends a small JSON order)
  RPS           requests per second (default 10)
  CONCURRENCY   worker threads (default 8)
  FLAG_URL      flag endpoint (default http://demo:8000/flags/new_checkout); empty: never flip
  FLAG_BODY     body posted to FLAG_URL (default "on")
  FLAG_AFTER    seconds of normal traffic before the flip (default 300)
  DURATION      total seconds to run, 0 = forever (default 0)
  TIMEOUT       per-request timeout in seconds (default 5)
"""

from __future__ import annotations

import json
import os
import queue
import random
import sys
import threading
import time
import urllib.error
import urllib.request
from collections import Counter


def _env_float(name: str, default: float) -> float:
    raw = os.environ.get(name, "")
    try:
        return float(raw) if raw.strip() else default
    except ValueError:
        sys.exit(f"loadgen: {name}={raw!r} is not a number")


TARGET_URL = os.environ.get("TARGET_URL", "http://demo:8000/checkout")
TARGET_METHOD = os.environ.get("TARGET_METHOD", "POST").upper()
RPS = _env_float("RPS", 10.0)
CONCURRENCY = max(1, int(_env_float("CONCURRENCY", 8)))
FLAG_URL = os.environ.get("FLAG_URL", "http://demo:8000/flags/new_checkout")
FLAG_BODY = os.environ.get("FLAG_BODY", "on")
FLAG_AFTER = _env_float("FLAG_AFTER", 300.0)
DURATION = _env_float("DURATION", 0.0)
TIMEOUT = _env_float("TIMEOUT", 5.0)


def log(event: str, **fields: object) -> None:
    print(json.dumps({"ts": time.time(), "event": event, **fields}), flush=True)


def request(method: str, url: str, body: bytes | None = None, ctype: str = "") -> int:
    """The HTTP status, or 0 when the request failed before a response."""
    headers = {"User-Agent": "alert-enricher-loadgen/1"}
    if ctype:
        headers["Content-Type"] = ctype
    req = urllib.request.Request(url, data=body, method=method, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=TIMEOUT) as resp:
            resp.read()
            return resp.status
    except urllib.error.HTTPError as exc:
        exc.read()
        return exc.code
    except (urllib.error.URLError, OSError):
        return 0


def order_body() -> bytes:
    order = {
        "user_id": random.randint(1, 50_000),
        "items": [
            {"sku": f"sku-{random.randint(1, 500)}", "qty": random.randint(1, 3)}
            for _ in range(random.randint(1, 4))
        ],
    }
    return json.dumps(order).encode()


def wait_for_target(deadline_s: float = 300.0) -> None:
    """Block until the demo answers at all (any HTTP status), so start-up is not counted."""
    start = time.monotonic()
    while time.monotonic() - start < deadline_s:
        if request("GET", TARGET_URL) != 0:
            log("target_up", url=TARGET_URL)
            return
        time.sleep(2)
    log("target_not_up", url=TARGET_URL, waited_s=deadline_s)


def flip_flag() -> None:
    for attempt in range(1, 11):
        status = request("POST", FLAG_URL, FLAG_BODY.encode(), "text/plain")
        log("flag_flip", url=FLAG_URL, body=FLAG_BODY, status=status, attempt=attempt)
        if 200 <= status < 300:
            return
        time.sleep(3)


def main() -> None:
    log(
        "start",
        target=TARGET_URL,
        method=TARGET_METHOD,
        rps=RPS,
        concurrency=CONCURRENCY,
        flag_url=FLAG_URL,
        flag_after_s=FLAG_AFTER,
    )
    wait_for_target()
    interval = 1.0 / RPS if RPS > 0 else 1.0
    stats: Counter[int] = Counter()
    lock = threading.Lock()
    stop = threading.Event()
    # Ticks waiting for a free worker; when every worker is stuck on slow requests the
    # extra ticks are dropped (counted as `dropped`) instead of piling up into a burst.
    ticks: queue.Queue[None] = queue.Queue(maxsize=CONCURRENCY * 2)
    dropped = 0

    def worker() -> None:
        while not stop.is_set():
            try:
                ticks.get(timeout=1)
            except queue.Empty:
                continue
            if TARGET_METHOD == "POST":
                status = request("POST", TARGET_URL, order_body(), "application/json")
            else:
                status = request(TARGET_METHOD, TARGET_URL)
            with lock:
                stats[status] += 1

    threads = [threading.Thread(target=worker, daemon=True) for _ in range(CONCURRENCY)]
    for t in threads:
        t.start()

    start = time.monotonic()
    next_send = start
    next_report = start + 30
    flipped = not FLAG_URL
    try:
        while not DURATION or time.monotonic() - start < DURATION:
            now = time.monotonic()
            if not flipped and now - start >= FLAG_AFTER:
                threading.Thread(target=flip_flag, daemon=True).start()
                flipped = True
            if now >= next_report:
                with lock:
                    snapshot = {str(k): v for k, v in sorted(stats.items())}
                    stats.clear()
                log("stats", window_s=30, statuses=snapshot, dropped=dropped, flag_on=flipped)
                dropped = 0
                next_report += 30
            try:
                ticks.put_nowait(None)
            except queue.Full:
                dropped += 1
            next_send += interval
            delay = next_send - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            elif delay < -5:  # far behind (everything is slow): do not burst to catch up
                next_send = time.monotonic()
    except KeyboardInterrupt:
        pass
    finally:
        stop.set()
        log("stop")


if __name__ == "__main__":
    main()
