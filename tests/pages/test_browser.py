"""The HTML page in a real browser: headless Chromium opens pages served by the running
service and checks what a person would see (the hypothesis, the highlighted culprit bar, the
evidence item an anchor jumps to), that the CSP does not break the page's own stylesheet,
and that a page whose labels carry script never runs it.

Chromium is driven over the DevTools protocol with aiohttp's websocket client, so the test
needs no dependency beyond the Debian package `chromium`; without it the test is skipped.
Screenshots go to tests/artifacts/; UPDATE_SCREENSHOT=1 (or a missing file) also writes
docs/page.png, the one the README shows.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from enricher.bundle.model import EvidenceBundle, EvidenceItem
from enricher.pipeline.stages import GatherInput, GatherOutput
from enricher.sources.loki import LogLine
from tests.conftest import REPO, MakeClient, Recorder, post, wait_pages
from tests.pages.test_html import SCENARIO, scenario_bundle

CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = REPO / "tests" / "artifacts"
DOCS_SHOT = REPO / "docs" / "page.png"
PWN = ["<script>window.__pwned=1</script>", '<img src=x onerror="window.__pwned=1">']

pytestmark = pytest.mark.skipif(
    not CHROMIUM.exists(), reason="needs /usr/bin/chromium (apt-get install chromium)"
)


class Chromium:
    """One headless Chromium and one DevTools session on its first tab."""

    def __init__(self) -> None:
        self.profile = tempfile.mkdtemp(prefix="enricher-chromium-")
        self.proc: subprocess.Popen[bytes] | None = None
        self.http: aiohttp.ClientSession | None = None
        self.ws: aiohttp.ClientWebSocketResponse | None = None
        self.events: list[dict[str, Any]] = []
        self._id = 0

    async def start(self, timeout: float = 10.0) -> None:
        # Port 0: Chromium picks a free port and writes it to DevToolsActivePort, so two
        # test runs at once never race for one.
        self.proc = subprocess.Popen(
            [
                str(CHROMIUM),
                "--headless=new",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--no-first-run",
                "--no-default-browser-check",
                "--disable-extensions",
                "--disable-background-networking",
                "--hide-scrollbars",
                "--window-size=1200,1900",
                "--remote-debugging-port=0",
                f"--user-data-dir={self.profile}",
                "about:blank",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        loop = asyncio.get_running_loop()
        end = loop.time() + timeout
        port_file = Path(self.profile) / "DevToolsActivePort"
        while not (port_file.exists() and port_file.read_text().strip()):
            if self.proc.poll() is not None or loop.time() > end:
                raise RuntimeError("chromium did not open its DevTools port")
            await asyncio.sleep(0.05)
        port = int(port_file.read_text().split()[0])
        self.http = aiohttp.ClientSession()
        while True:
            try:
                async with self.http.get(f"http://127.0.0.1:{port}/json/list") as resp:
                    targets = await resp.json()
                page = next(t for t in targets if t.get("type") == "page")
                break
            except (aiohttp.ClientError, StopIteration):
                if loop.time() > end:
                    raise
                await asyncio.sleep(0.05)
        self.ws = await self.http.ws_connect(page["webSocketDebuggerUrl"], max_msg_size=0)
        await self.send("Page.enable")
        await self.send("Runtime.enable")

    async def send(self, method: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
        assert self.ws is not None
        self._id += 1
        mine = self._id
        await self.ws.send_json({"id": mine, "method": method, "params": params or {}})
        while True:
            msg = json.loads(await asyncio.wait_for(self.ws.receive_str(), 10))
            if msg.get("id") == mine:
                if "error" in msg:
                    raise RuntimeError(f"{method}: {msg['error']}")
                return dict(msg.get("result", {}))
            if "method" in msg:
                self.events.append(msg)

    async def _event(self, name: str, timeout: float = 10.0) -> dict[str, Any]:
        assert self.ws is not None
        end = asyncio.get_running_loop().time() + timeout
        while True:
            for n, ev in enumerate(self.events):
                if ev["method"] == name:
                    return self.events.pop(n)
            left = end - asyncio.get_running_loop().time()
            msg = json.loads(await asyncio.wait_for(self.ws.receive_str(), max(left, 0.01)))
            if "method" in msg:
                self.events.append(msg)

    async def open(self, url: str) -> None:
        self.events.clear()
        answer = await self.send("Page.navigate", {"url": url})
        assert "errorText" not in answer, answer
        await self._event("Page.loadEventFired")

    async def js(self, expression: str) -> Any:
        answer = await self.send(
            "Runtime.evaluate", {"expression": expression, "returnByValue": True}
        )
        assert "exceptionDetails" not in answer, answer
        return answer["result"].get("value")

    async def screenshot(self, path: Path, full_page: bool = False) -> None:
        params: dict[str, Any] = {"format": "png"}
        if full_page:
            size = (await self.send("Page.getLayoutMetrics"))["cssContentSize"]
            params["captureBeyondViewport"] = True
            params["clip"] = {
                "x": 0,
                "y": 0,
                "width": size["width"],
                "height": min(size["height"], 12_000),
                "scale": 1,
            }
        data = (await self.send("Page.captureScreenshot", params))["data"]
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(base64.b64decode(data))

    async def close(self) -> None:
        if self.ws is not None:
            with contextlib.suppress(Exception):
                await self.ws.close()
        if self.http is not None:
            await self.http.close()
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                await asyncio.to_thread(self.proc.wait, 5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                await asyncio.to_thread(self.proc.wait, 5)
        shutil.rmtree(self.profile, ignore_errors=True)


@pytest.fixture
async def chromium() -> AsyncIterator[Chromium]:
    c = Chromium()
    try:
        await c.start()
        yield c
    finally:
        await c.close()


class _Gatherer:
    """The recorded checkout evidence for the checkout alert; hostile log lines otherwise."""

    def __init__(self, bundle: EvidenceBundle) -> None:
        self.bundle = bundle

    async def gather(self, inp: GatherInput) -> GatherOutput:
        b = self.bundle.model_copy(deep=True)
        if inp.message.commonLabels.get("alertname") != "CheckoutHighErrorRate":
            for n, text in enumerate(PWN):
                b.items.append(
                    EvidenceItem(
                        id=f"log:{text}",
                        kind="log",
                        source="loki",
                        priority=2,
                        summary=text,
                        log=LogLine(ts_ns=n, line=text, service=text),
                    )
                )
        return GatherOutput(bundle=b)


VISIBLE = """(() => {
  const seen = (el) => {
    if (!el) return null;
    const r = el.getBoundingClientRect(), cs = getComputedStyle(el);
    return {w: r.width, h: r.height, display: cs.display, visibility: cs.visibility,
            opacity: cs.opacity, fill: cs.fill, text: el.textContent};
  };
  return {hypothesis: seen(document.getElementById('hypothesis')),
          culprit: seen(document.querySelector('[data-culprit="true"]')),
          culprits: document.querySelectorAll('[data-culprit="true"]').length,
          bg: getComputedStyle(document.body).backgroundColor,
          scripts: document.scripts.length, images: document.images.length};
})()"""


async def test_the_page_in_a_real_browser(make_client: MakeClient, chromium: Chromium) -> None:
    bundle = await scenario_bundle()
    client = await make_client(notifiers=[Recorder()], gatherer=_Gatherer(bundle))
    body = json.loads((SCENARIO / "alert.json").read_text())
    assert (await post(client, body)).status == 200
    hostile = json.loads(json.dumps(body))
    labels = {"alertname": "Hostile" + PWN[0], "service": PWN[1], "x": PWN[0] + PWN[1]}
    hostile.update(groupKey="hostile", commonLabels=labels, groupLabels=labels)
    hostile["commonAnnotations"] = {"summary": PWN[1], "runbook_url": "javascript:__pwned=1"}
    hostile["alerts"][0].update(labels=labels, annotations=hostile["commonAnnotations"])
    assert (await post(client, hostile)).status == 200
    pages = await wait_pages(client, 2)
    by_name = {p["labels"]["alertname"]: p["id"] for p in pages}

    await chromium.open(str(client.make_url(f"/pages/{by_name['CheckoutHighErrorRate']}")))
    seen = await chromium.js(VISIBLE)
    h, c = seen["hypothesis"], seen["culprit"]
    assert h is not None and h["w"] > 0 and h["h"] > 0, seen
    assert h["display"] != "none" and h["visibility"] == "visible" and h["opacity"] == "1"
    assert "SELECT orders" in h["text"] and "new_checkout" in h["text"]
    assert c is not None and c["w"] > 0 and c["h"] > 0, seen
    assert c["display"] != "none" and c["visibility"] == "visible"
    assert c["fill"] == "rgb(245, 165, 36)", c  # the culprit's highlight fill
    assert seen["culprits"] == 1 and seen["scripts"] == 0 and seen["images"] == 0
    # the inline stylesheet applies under the page's CSP
    assert seen["bg"] == "rgb(247, 248, 250)", seen
    shot = ARTIFACTS / "page-checkout.png"
    await chromium.screenshot(shot)
    await chromium.screenshot(ARTIFACTS / "page-checkout-full.png", full_page=True)
    if os.environ.get("UPDATE_SCREENSHOT") or not DOCS_SHOT.exists():
        shutil.copyfile(shot, DOCS_SHOT)

    # an evidence link jumps to its item, which :target highlights
    first = await chromium.js(
        "document.querySelector('#hypothesis ~ .cites a.evid').getAttribute('href')"
    )
    assert first.startswith("#ev-")
    await chromium.js(f"document.querySelector('a[href=\"{first}\"]').click()")
    target = await chromium.js(
        "(() => { const t = document.querySelector(':target'); return t && "
        "{id: t.id, outline: getComputedStyle(t).outlineStyle, "
        "top: t.getBoundingClientRect().top}; })()"
    )
    assert target is not None and "#" + target["id"] == first, target
    assert target["outline"] == "solid" and 0 <= target["top"] < 1900, target

    await chromium.open(str(client.make_url(f"/pages/{by_name['Hostile' + PWN[0]]}")))
    await asyncio.sleep(0.2)  # an onerror handler would have fired by now
    assert await chromium.js("typeof window.__pwned") == "undefined"
    hostile_seen = await chromium.js(VISIBLE)
    assert hostile_seen["scripts"] == 0 and hostile_seen["images"] == 0
    assert await chromium.js("document.getElementById('alertname').textContent") == (
        "Hostile" + PWN[0]
    )
    await chromium.screenshot(ARTIFACTS / "page-hostile.png")

    await chromium.open(str(client.make_url("/pages")))
    assert await chromium.js("document.querySelectorAll('a[href^=\"/pages/\"]').length") >= 2
