"""Benchmark of the notifiers: what rendering a page costs, and a 429 storm on one Slack channel.

Run: `python bench/notify.py [--part render|slack|all] [--iterations 3000]
[--pages 1000] [--rate 1.0] [--no-detail] [--min-interval S]` from the repository root.
A quick check of the storm: `python bench/notify.py --part slack --pages 50 --rate 20`.

1. render: the pure builders every notifier calls, each with the serialisation it sends
   (`json.dumps` with the notifier's own options, then `.encode()`), per page:
     slack message   `post_body(build_message(page, public_url, edits=True), channel)` (bot mode)
     slack detail    `post_body(build_detail(page), channel, thread_ts)` (the thread reply)
     slack resolved  `update_body(build_resolved(prior, resolved, public_url), channel, ts)`
     pagerduty       `build_event(page, key, severities, default, public_url).body()`
     alertmanager    `build_alerts(page, config, public_url)` as `AlertmanagerForwarder` posts it
     webhook         `page.model_dump_json()` (the webhook notifier has no other builder)
     log             `LogNotifier.send` formatted by the service's `JsonFormatter`
     html            `render_page(page)` (the page people open from every notifier's link)
   for two pages: the shared checkout incident (the golden-file page of tests/notify, with
   its stage timings), and a hostile one (a 200-alert group whose label and annotation values
   are 100 KB each, 100 KB alertname, summary and service on the page, 60 hypotheses of 100 KB,
   30 deploy verdicts, 40 missing-evidence entries, 60 log lines of which one is 100 KB,
   mentions, markup, control and bidi characters everywhere: the hostile tests' content).
   Warm-up first, then `--iterations` rounds; gc as is. Reported per builder and for the
   total of all of them ("a page for every notifier", the resolve edit included): p50, p99
   and max in ms, and the payload size. Goals: total p99 <= 2 ms for the checkout page,
   <= 250 ms for the hostile one (a bound on how long such a group holds a worker).

2. slack: `--pages` distinct pages (alertname `CheckoutStormNNNN`, own group key) to ONE
   channel through the real delivery path: each notification is accepted by the SQLite store
   and claimed as a worker claims it, its page saved with its delivery row, then handed to
   the `Outbox` (as `Pipeline._process` does; leases renewed as `Pipeline._renew` does), which
   delivers through the real `SlackBotNotifier` (its per-channel queue, spacing
   `--min-interval`, default 1/rate: Slack's documented 1 msg/s for the production default)
   to the Slack double on its own thread, which allows `--rate` writes per second per channel
   (burst 1) and answers HTTP 429 with Retry-After (>= 1 s) above that. All pages are
   submitted at once. Checked at the end: the channel holds exactly one top-level message per
   page and nothing else; each page's detail reply is there at most once (exactly once with
   thread detail); every delivery row is `sent` with the receipt naming that message (and its
   reply); every job is done; nothing was given up. Reported: the 429s the double answered,
   wall time, achieved writes/s against `--rate`, attempts per delivery (rate-limited retries
   do not count against `max_delivery_attempts`: the max shows whether that held), and each
   page's latency from submit to its job being marked done, p50/p99/max.
   Goals: no page lost, none posted twice, every row delivered.
   With thread detail each page is two posts (three Slack writes when a 429 hits its reply:
   the retry edits the message first), so at 1 msg/s 1,000 pages take well over 2,000 s;
   `--no-detail` is one write per page. Figures quoted in reviews must say which was used.

Exit status 1 when a goal is missed.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import re
import shutil
import sqlite3
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from enricher.analysis.hypotheses import analyse_bundle
from enricher.analysis.model import Analysis, DeployVerdict, Hypothesis
from enricher.bundle.model import EvidenceItem, Link, Missing
from enricher.config import AlertmanagerForwardConfig, PagerDutyNotifierConfig, load_config
from enricher.intake.webhook import WebhookMessage, severity_rank
from enricher.logs import JsonFormatter
from enricher.metrics import Metrics
from enricher.notify import build_notifiers
from enricher.notify.alertmanager import build_alerts
from enricher.notify.base import SendContext
from enricher.notify.log import LogNotifier
from enricher.notify.page import Page, build_page
from enricher.notify.pagerduty import build_event
from enricher.notify.routing import Router, Target
from enricher.notify.slack import build_detail, build_message, build_resolved
from enricher.notify.slack_bot import SlackBotNotifier, post_body, update_body
from enricher.pages.html import render_page
from enricher.pipeline.outbox import MAX_RATE_LIMITED, Outbox
from enricher.sources.loki import LogLine
from enricher.store.base import DeliveryRecord, Job, NewNotification, PageRecord, StoreError
from enricher.store.sqlite import SQLiteStore
from tests.conftest import checkout_bundle, webhook_body
from tests.doubles.slack import TOKEN, SlackDouble

PUBLIC = "https://enricher.example"
CHANNEL = "#payments-oncall"
CHANNEL_ID = "C0PAYMENTS"
THREAD_TS = "1700000000.000100"
PD_KEY = "0123456789abcdef0123456789abcdef"
ENDS = "2026-11-27T17:02:37.704Z"  # 42 min after the checkout alert started
RENDER_GOAL_MS = 2.0
HOSTILE_GOAL_MS = 250.0
OWNER = "bench-notify"
HOSTILE = (
    "<!channel> <!here> <@U123> <https://evil|click> @here @everyone",
    '"><img src=x onerror=alert(1)></style><script>alert(1)</script>',
    "\u202egnp.exe\u202c \x1b[31m\x1b[2J\x00\x07\u2066",
    "```*bold* _it_ ~st~ &amp; &lt;",
)
_PAGE_ID = re.compile(r"page (\d+) · alert-enricher")


def pct(xs: list[float], q: float) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, round(q * (len(s) - 1)))]


def _dumps(doc: Any) -> bytes:
    """As the Slack bot and the Alertmanager forwarder serialise what they post."""
    return json.dumps(doc, ensure_ascii=False, separators=(",", ":")).encode()


# --- the pages ---------------------------------------------------------------------------


def checkout_page(**body_changes: Any) -> Page:
    """The page of tests/notify (`_page()`): the recorded checkout alert and evidence."""
    msg = WebhookMessage.model_validate(webhook_body(**body_changes))
    bundle = checkout_bundle()
    page = build_page(
        7,
        msg,
        received_at=1_900_000_000.0,
        deadline=1_900_000_030.0,
        reasons=[],
        evidence=bundle,
        analysis=analyse_bundle(bundle),
    )
    page.timings = {"gather": 812.4, "analyse": 40.2}
    return page


def resolved_page() -> Page:
    """Its resolution 42 minutes later, as the pipeline builds it (nothing gathered)."""
    page = checkout_page(status="resolved", alert={"status": "resolved", "endsAt": ENDS})
    page.id, page.resolves, page.timings = 8, 7, {}
    page.evidence, page.analysis = None, None
    return page


def hostile_page() -> Page:
    """A large page whose every sender-controlled field is hostile (see the docstring)."""
    huge = "".join(HOSTILE) + "y" * 100_000
    base = webhook_body()
    labels = {**base["commonLabels"], "huge": huge, "evil": HOSTILE[0], HOSTILE[1]: "key"}
    annotations = {
        **base["commonAnnotations"],
        "summary": HOSTILE[0] + huge,
        "description": huge,
        "runbook_url": "javascript:alert(1)",
        "dashboard_url": 'https://ok.example/"><script>alert(1)</script>',
    }
    alerts = []
    for i in range(200):
        a = json.loads(json.dumps(base["alerts"][0]))
        a["labels"] = {**labels, "pod": f"checkout-{i}-{HOSTILE[2]}"}
        a["annotations"] = annotations
        a["fingerprint"] = f"{i:016x}"
        a["generatorURL"] = "javascript:alert(2)"
        alerts.append(a)
    page = checkout_page(
        alerts=alerts,
        commonLabels=labels,
        commonAnnotations=annotations,
        externalURL="data:text/html,<script>alert(1)</script>",
    )
    # What the builders get from elsewhere than the message is not clipped by build_page:
    # set it on the page, as the hostile tests do.
    page.labels = {**page.labels, "alertname": "<!channel> " + huge, "service": huge}
    page.annotations = {**page.annotations, "summary": "@here <@U123> " + huge}
    b, a = page.evidence, page.analysis
    assert b is not None and a is not None
    log_ids = []
    for i in range(60):
        log_ids.append(f'log:{HOSTILE[i % 4][:30]}"{i}')
        line = (huge if i == 0 else f"{HOSTILE[i % 4]} order {i} failed " * 20)[:100_200]
        b.items.append(
            EvidenceItem(
                id=log_ids[-1],
                kind="log",
                source="loki",
                priority=2 + i % 5,
                summary=line[:300],
                query=HOSTILE[i % 4],
                log=LogLine(ts_ns=1_900_000_000_000_000_000 + i, line=line, service=line[:50]),
            )
        )
    assert b.culprit is not None
    b.culprit.log_item_ids = [log_ids[0], *b.culprit.log_item_ids]  # the 100 KB line first
    b.links += [
        Link(kind="runbook", title=HOSTILE[0], url="javascript:alert(3)", from_alert=True),
        Link(kind="dashboard", title="d", url=" javascript:alert(4)", from_alert=True),
        Link(kind="grafana_trace", title=HOSTILE[1], url="https://grafana.example/x?a=1&b=2"),
    ]
    b.missing = [Missing(what=HOSTILE[i % 4], source="loki", reason=huge) for i in range(40)]
    a.hypotheses = [
        Hypothesis(
            statement=f"<!here> *bold* <https://evil|click> {huge}",
            confidence=0.5,
            evidence_ids=[f"span:`{huge[:2000]}`", "<@U123>", HOSTILE[1]],
            actions=["<!channel> run " + HOSTILE[2]],
        )
        for _ in range(60)
    ]
    a.deploys = [
        DeployVerdict(service=huge, version="<!channel>", verdict="suspect", reason=huge)
        for _ in range(30)
    ]
    page.reasons = [HOSTILE[0], huge]
    page.degraded = True
    page.timings = {huge: 1.0, "gather": 3.0}
    return page


# --- 1. render cost ----------------------------------------------------------------------


class _Sink(logging.Handler):
    """Formats each record as the service's log handler does, and keeps only its size."""

    def __init__(self) -> None:
        super().__init__()
        self.setFormatter(JsonFormatter())
        self.size = 0

    def emit(self, record: logging.LogRecord) -> None:
        self.size = len(self.format(record).encode())


def _run_sync(coro: Coroutine[Any, Any, None]) -> None:
    """Run a coroutine that never waits (LogNotifier.send) without an event loop."""
    try:
        coro.send(None)
    except StopIteration:
        return
    coro.close()
    raise RuntimeError("the coroutine waited")


def builders(page: Page, resolved: Page) -> dict[str, Callable[[], int]]:
    """Each builder with its serialisation; each returns the payload's size in bytes."""
    pd = PagerDutyNotifierConfig(routing_key=PD_KEY)
    am = AlertmanagerForwardConfig.model_validate({"url": "http://am:9093"})
    lognotifier, sink = LogNotifier(), _Sink()
    logger = logging.getLogger("enricher.page")
    logger.handlers[:] = [sink]
    logger.setLevel(logging.INFO)
    logger.propagate = False
    ctx = SendContext(target=Target(name="log", notifier="log"))

    def log_line() -> int:
        _run_sync(lognotifier.send(page, ctx))
        return sink.size

    def pagerduty() -> int:
        body = build_event(page, PD_KEY, pd.severities, pd.default_severity, PUBLIC).body()
        return len(body.encode())  # the notifier checks the size in bytes, then posts them

    return {
        "slack message": lambda: len(
            _dumps(post_body(build_message(page, PUBLIC, edits=True), CHANNEL_ID))
        ),
        "slack detail": lambda: len(_dumps(post_body(build_detail(page), CHANNEL_ID, THREAD_TS))),
        "slack resolved": lambda: len(
            _dumps(update_body(build_resolved(page, resolved, PUBLIC), CHANNEL_ID, THREAD_TS))
        ),
        "pagerduty": pagerduty,
        "alertmanager": lambda: len(_dumps(build_alerts(page, am, PUBLIC))),
        "webhook": lambda: len(page.model_dump_json().encode()),
        "log": log_line,
        "html": lambda: len(render_page(page).encode()),
    }


def render_one(name: str, page: Page, resolved: Page, iterations: int, goal_ms: float) -> bool:
    fns = builders(page, resolved)
    sizes = {k: fn() for k, fn in fns.items()}
    for _ in range(max(50, iterations // 20)):  # warm-up
        for fn in fns.values():
            fn()
    per: dict[str, list[float]] = {k: [] for k in fns}
    total: list[float] = []
    clock = time.perf_counter_ns
    for _ in range(iterations):
        s = 0
        for k, fn in fns.items():
            t0 = clock()
            fn()
            dt = clock() - t0
            per[k].append(dt / 1e6)
            s += dt
        total.append(s / 1e6)
    print(f"{name}: {iterations} rounds")
    for k, xs in per.items():
        print(
            f"  {k:<16} p50 {pct(xs, 0.5):7.3f} ms  p99 {pct(xs, 0.99):7.3f} ms  "
            f"max {max(xs):7.3f} ms  {sizes[k]:>9,} B"
        )
    p99 = pct(total, 0.99)
    ok = p99 <= goal_ms
    print(
        f"  {'total':<16} p50 {pct(total, 0.5):7.3f} ms  p99 {p99:7.3f} ms  "
        f"max {max(total):7.3f} ms  {sum(sizes.values()):>9,} B  "
        f"(goal p99 <= {goal_ms:g} ms: {'met' if ok else 'MISSED'})"
    )
    return ok


def render(iterations: int) -> bool:
    resolved = resolved_page()
    ok = render_one("checkout incident page", checkout_page(), resolved, iterations, RENDER_GOAL_MS)
    # The hostile page is no page the pipeline builds (its evidence is unclipped, 17 MB as
    # JSON): its goal only bounds how long a pathological group can hold one worker.
    hostile = hostile_page()
    return (
        render_one("hostile 200-alert page", hostile, resolved, iterations, HOSTILE_GOAL_MS) and ok
    )


# --- 2. the Slack 429 storm --------------------------------------------------------------


class _Count(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.levels: Counter[str] = Counter()
        self.messages: Counter[str] = Counter()

    def emit(self, record: logging.LogRecord) -> None:
        self.levels[record.levelname] += 1
        if record.levelno >= logging.WARNING:
            self.messages[record.getMessage()] += 1


def storm_message(i: int) -> bytes:
    name = f"CheckoutStorm{i:04d}"
    labels = {"alertname": name, "service": "checkout", "severity": "critical", "team": "payments"}
    body = webhook_body(
        groupKey=f'{{}}:{{alertname="{name}", service="checkout"}}',
        groupLabels={"alertname": name, "service": "checkout"},
        commonLabels=labels,
        alert={"labels": labels, "fingerprint": f"{i:016x}"},
    )
    return json.dumps(body).encode()


async def _prepare(
    store: SQLiteStore, router: Router, n: int, lease: float
) -> tuple[list[tuple[Job, Page, list[DeliveryRecord]]], dict[int, int]]:
    """Accept n notifications, claim them, build and save their pages: what the intake and
    the workers do before a page reaches the outbox."""
    now = time.time()
    msgs: dict[int, WebhookMessage] = {}
    index: dict[int, int] = {}
    bodies = [storm_message(i) for i in range(n)]
    parsed = [WebhookMessage.model_validate_json(b) for b in bodies]
    results = await asyncio.gather(
        *(
            store.accept(
                NewNotification(
                    idem_key=m.idempotency_key(),
                    group_key=m.groupKey,
                    status=m.status,
                    severity=m.severity(),
                    priority=severity_rank(m.severity()),
                    alert_count=len(m.alerts),
                    received_at=now,
                    deadline=now + 30,
                    body=b,
                )
            )
            for m, b in zip(parsed, bodies, strict=True)
        )
    )
    assert not any(r.duplicate for r in results)
    for i, (r, m) in enumerate(zip(results, parsed, strict=True)):
        msgs[r.id], index[r.id] = m, i
    jobs = await store.claim(OWNER, lease, n, 1_000)
    assert len(jobs) == n, f"claimed {len(jobs)} of {n} jobs"
    bundle = checkout_bundle()
    analysis: Analysis = analyse_bundle(bundle)
    out: list[tuple[Job, Page, list[DeliveryRecord]]] = []
    saves = []
    for job in jobs:
        page = build_page(
            job.id,
            msgs[job.id],
            received_at=job.received_at,
            deadline=job.deadline,
            reasons=[],
            evidence=bundle,
            analysis=analysis,
        )
        page.timings = {"gather": 812.4, "analyse": 40.2}
        targets = [t.name for t in router.targets(page.labels)]
        record = PageRecord.model_construct(
            id=page.id,
            group_key=page.group_key,
            status=page.status,
            paged_at=page.paged_at.timestamp(),
            degraded=page.degraded,
            doc=page.model_dump_json(),
            resolved_at=None,
            resolved_by=None,
            deliveries=[],
        )
        saves.append(store.save_page(record, targets))
        rows = [DeliveryRecord(page_id=page.id, notifier=t) for t in targets]
        out.append((job, page, rows))
    await asyncio.gather(*saves)
    return out, index


async def _renew(store: SQLiteStore, outbox: Outbox, lease: float) -> None:
    """As `Pipeline._renew`: one lease renewal of every job in the outbox per lease/3."""
    while True:
        await asyncio.sleep(max(0.5, lease / 3))
        held = list(outbox.inflight)
        if held:
            with contextlib.suppress(StoreError):
                await store.renew(held, OWNER, lease)


async def storm(pages: int, rate: float, detail: bool, min_interval: float, timeout: float) -> bool:
    slack = SlackDouble(
        token=TOKEN,
        channels={CHANNEL: CHANNEL_ID},
        rate_per_channel=rate,
        burst=1,
        retry_after=1,
    )
    slack.start_in_thread()
    work = Path(tempfile.mkdtemp(prefix="bench-notify-"))
    counted = _Count()
    enricher_log = logging.getLogger("enricher")
    enricher_log.addHandler(counted)
    enricher_log.setLevel(logging.INFO)
    enricher_log.propagate = False
    store = SQLiteStore(work / "data")
    await store.open()
    config = load_config(
        environ={},
        overrides={
            "public_url": PUBLIC,
            "notifiers": {
                "log": {"enabled": False},
                "slack": {
                    "bot_token": TOKEN,
                    "channel": CHANNEL,
                    "api_url": slack.api_url,
                    "min_interval": min_interval,
                    "thread_detail": detail,
                },
            },
        },
    )
    [notifier] = build_notifiers(config)
    assert isinstance(notifier, SlackBotNotifier)
    router = Router(config, available=[notifier.name])
    pc = config.pipeline
    submitted: dict[int, float] = {}
    done_at: dict[int, float] = {}
    all_done = asyncio.Event()

    def on_done(job_id: int) -> None:
        done_at[job_id] = time.perf_counter()
        if len(done_at) >= pages:
            all_done.set()

    outbox = Outbox(store, pc, {notifier.name: notifier}, router, Metrics(), OWNER, on_done)
    renewer: asyncio.Task[None] | None = None
    try:
        t_prep = time.perf_counter()
        work_items, index = await _prepare(store, router, pages, pc.lease)
        prep = time.perf_counter() - t_prep
        print(
            f"slack storm: {pages} pages to {CHANNEL} ({'with' if detail else 'no'} thread "
            f"detail), double {rate:g} writes/s per channel burst 1 (429 + Retry-After above), "
            f"min_interval {min_interval:g} s; {prep:.1f} s to accept, claim and save them",
            flush=True,
        )
        renewer = asyncio.create_task(_renew(store, outbox, pc.lease))
        t0 = time.perf_counter()
        for job, page, rows in work_items:
            submitted[job.id] = time.perf_counter()
            outbox.submit(job, page, rows)
        deadline = t0 + timeout
        last = t0
        while not all_done.is_set() and time.perf_counter() < deadline:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(all_done.wait(), 1.0)
            if time.perf_counter() - last >= 30:
                last = time.perf_counter()
                print(
                    f"  ... {last - t0:5.0f} s: {len(done_at)}/{pages} done, "
                    f"{slack.posts} posts, {slack.updates} updates, "
                    f"{slack.rate_limited} answered 429",
                    file=sys.stderr,
                    flush=True,
                )
        wall = time.perf_counter() - t0
        timed_out = not all_done.is_set()
        outbox.stop()
        if outbox.inflight:
            await asyncio.wait(list(outbox.inflight.values()), timeout=10)
        return await _verify(
            slack, store, work_items, index, submitted, done_at, wall, timed_out, detail, rate
        ) and _report_logs(counted)
    finally:
        if renewer is not None:
            renewer.cancel()
        await notifier.close()
        await store.close()
        slack.stop_thread()
        enricher_log.removeHandler(counted)
        shutil.rmtree(work, ignore_errors=True)


async def _verify(
    slack: SlackDouble,
    store: SQLiteStore,
    work_items: list[tuple[Job, Page, list[DeliveryRecord]]],
    index: dict[int, int],
    submitted: dict[int, float],
    done_at: dict[int, float],
    wall: float,
    timed_out: bool,
    detail: bool,
    rate: float,
) -> bool:
    pages = len(work_items)
    messages = slack.bot_messages(CHANNEL_ID)
    by_page: dict[int, list[Any]] = {}
    mismatched = 0
    for m in messages:
        found = _PAGE_ID.search(json.dumps(m.blocks, ensure_ascii=False))
        pid = int(found.group(1)) if found else -1
        by_page.setdefault(pid, []).append(m)
        # the alertname names the same page as the id in its context line
        if pid not in index or f"CheckoutStorm{index[pid]:04d}" not in m.text:
            mismatched += 1
    ids = {job.id for job, _, _ in work_items}
    lost = sorted(ids - by_page.keys())
    twice = sorted(pid for pid, ms in by_page.items() if len(ms) > 1)
    strangers = sorted(by_page.keys() - ids)
    replies = Counter(len(m.replies) for m in messages)
    want_replies = 1 if detail else 0
    reply_ok = all(n == want_replies for n in replies) and (not detail or bool(replies))
    n_replies = sum(len(m.replies) for m in messages)
    other_posts = slack.posts - len(messages) - n_replies  # anything anywhere else

    states: Counter[str] = Counter()
    attempts: list[int] = []
    receipt_bad = 0
    for job, _, _ in work_items:
        ms = by_page.get(job.id, [])
        for d in await store.deliveries(job.id):
            states[d.state] += 1
            attempts.append(d.attempts)
            r = d.receipt or {}
            good = len(ms) == 1 and r.get("ts") == ms[0].ts and r.get("channel") == CHANNEL_ID
            if detail and good:
                good = [x.ts for x in ms[0].replies] == [r.get("detail_ts")]
            receipt_bad += not good
    jobs = _job_states(store.path)
    delivered = states.get("sent", 0)
    writes = slack.posts + slack.updates
    lat = [done_at[j] - submitted[j] for j in submitted if j in done_at]
    over = sum(1 for a in attempts if a > 1)
    ok = (
        not timed_out
        and not lost
        and not twice
        and not strangers
        and not mismatched
        and reply_ok
        and other_posts == 0
        and delivered == pages
        and receipt_bad == 0
        and jobs == {"done": pages}
    )
    print(
        f"  pages: {pages} submitted, {len(by_page.keys() & ids)} in the channel, "
        f"lost {len(lost)}{(' ' + str(lost[:10])) if lost else ''}, "
        f"posted twice {len(twice)}{(' ' + str(twice[:10])) if twice else ''}, "
        f"unknown {len(strangers)}, text not matching its page {mismatched}"
    )
    print(
        f"  thread replies per message {dict(sorted(replies.items()))} (want {want_replies}); "
        f"posts {slack.posts} = {len(messages)} messages + {n_replies} replies"
        f"{f' + {other_posts} ELSEWHERE' if other_posts else ''}; "
        f"edits {slack.updates} (retries after a saved receipt)"
    )
    print(
        f"  store: deliveries {dict(states)}, receipts not naming their message {receipt_bad}, "
        f"jobs {jobs}; attempts per delivery max {max(attempts, default=0)}, "
        f"{over} needed more than one (max_delivery_attempts 8, "
        f"{MAX_RATE_LIMITED} rate-limited in a row)"
    )
    print(
        f"  double answered 429 {slack.rate_limited} times; wall {wall:.1f} s"
        f"{' (TIMED OUT)' if timed_out else ''}; {writes} writes = {writes / wall:.2f}/s "
        f"of {rate:g}/s allowed ({writes / wall / rate:.0%}), "
        f"{len(done_at) / wall:.2f} pages/s"
    )
    if lat:
        print(
            f"  latency submit -> job done: p50 {pct(lat, 0.5):.1f} s  p99 {pct(lat, 0.99):.1f} s"
            f"  max {max(lat):.1f} s  (bound for the last page: {writes / rate:.0f} s)"
        )
    print(f"  goals (none lost, none twice, every row delivered): {'met' if ok else 'MISSED'}")
    return ok


def _job_states(db: Path) -> dict[str, int]:
    """Read by a connection of our own, as an operator would look at the database."""
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        return dict(conn.execute("SELECT state, count(*) FROM jobs GROUP BY state").fetchall())
    finally:
        conn.close()


def _report_logs(counted: _Count) -> bool:
    levels = dict(counted.levels)
    worst = counted.messages.most_common(3)
    print(f"  enricher log records by level {levels}" + (f"; warnings {worst}" if worst else ""))
    return counted.levels.get("ERROR", 0) == 0 and counted.levels.get("CRITICAL", 0) == 0


def main() -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    ap.add_argument("--part", choices=("render", "slack", "all"), default="all")
    ap.add_argument("--iterations", type=int, default=3000, help="render rounds per page")
    ap.add_argument("--pages", type=int, default=1000)
    ap.add_argument("--rate", type=float, default=1.0, help="the double's writes/s per channel")
    ap.add_argument("--no-detail", action="store_true", help="thread_detail off")
    ap.add_argument(
        "--min-interval", type=float, default=None, help="the notifier's spacing (1/rate)"
    )
    ap.add_argument("--timeout", type=float, default=None, help="give up on the storm after")
    args = ap.parse_args()
    ok = True
    if args.part in ("render", "all"):
        ok = render(args.iterations) and ok
    if args.part in ("slack", "all"):
        detail = not args.no_detail
        min_interval = args.min_interval if args.min_interval is not None else 1.0 / args.rate
        writes = args.pages * (2 if detail else 1)
        timeout = args.timeout if args.timeout is not None else 60 + 4 * writes / args.rate
        ok = asyncio.run(storm(args.pages, args.rate, detail, min_interval, timeout)) and ok
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
