"""`enricher demo`: the recorded checkout incident through the real pipeline, no infrastructure.

What runs: the replay backends (`enricher.demo.backends`: Prometheus, Tempo and Loki answering
from recordings of a real stack, moved to the present) on a loopback port, and the real service
(`enricher.server.serve`) in the same process, configured to use them. The demo then does what
CI and Alertmanager would: posts the deploy of checkout 2.4.1 to `POST /api/v1/deploys` and the
recorded Alertmanager notification to `POST /api/v1/alerts`, both over HTTP. The pipeline
gathers (exemplars -> trace -> logs -> deploy context), analyses and stores the page; the demo
prints it and serves the HTML page until Ctrl-C (`--no-serve`: print and exit). Nothing is left
behind: the store lives in a temporary directory unless `--data-dir` is given.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import errno
import socket
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import aiohttp

PAGE_TIMEOUT_S = 10.0


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="enricher demo",
        description="Replay a recorded incident through the real pipeline and show its page.",
    )
    p.add_argument(
        "--no-serve", action="store_true", help="print the page and exit (no HTML server)"
    )
    p.add_argument(
        "--port",
        type=int,
        default=8080,
        help="port for the service on 127.0.0.1 (default 8080; a free one if that is taken)",
    )
    p.add_argument("--data-dir", type=Path, help="keep the store here (default: a temporary one)")
    colour = p.add_mutually_exclusive_group()
    colour.add_argument("--color", dest="colour", action="store_true", default=None)
    colour.add_argument("--no-color", dest="colour", action="store_false")
    return p


def _port(wanted: int) -> int:
    """`wanted` if it can be bound on loopback now, else a free port (0: always free)."""
    for port in (wanted, 0) if wanted else (0,):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return int(s.getsockname()[1])
    raise OSError(errno.EADDRINUSE, "no free port on 127.0.0.1")


def _iso(ts: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ts)) + f".{int(ts * 1000) % 1000:03d}Z"


def _webhook(starts_at: float) -> dict[str, Any]:
    """The recorded Alertmanager notification, its alert started at `starts_at`."""
    from enricher.demo.backends import load

    doc = load("alertmanager-webhook-1.json")
    for alert in doc["alerts"]:
        alert["startsAt"] = _iso(starts_at)
    return dict(doc)


def _deploy_event(starts_at: float) -> dict[str, Any]:
    """What CI reports: checkout 2.4.1 (the version and commit the recorded trace's resource
    names) deployed four minutes before the alert started."""
    return {
        "service": "checkout",
        "version": "2.4.1",
        "commit": "7a3f9c2",
        "environment": "prod",
        "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(starts_at - 240)),
    }


def _config(data_dir: Path, port: int, backends_url: str) -> Any:
    from enricher.config import load_config

    return load_config(
        None,
        environ={},
        overrides={
            "listen": f"127.0.0.1:{port}",
            "data_dir": str(data_dir),
            "log_level": "WARNING",
            "public_url": f"http://127.0.0.1:{port}",
            "sources": {
                "prometheus": {"url": backends_url},
                "tempo": {"url": backends_url},
                "loki": {"url": backends_url},
                # No Grafana: its Explore links would lead nowhere here.
            },
            "pipeline": {"shutdown_grace": 2.0},
        },
    )


class DemoError(Exception):
    pass


async def _post(session: aiohttp.ClientSession, url: str, body: dict[str, Any]) -> None:
    async with session.post(url, json=body) as resp:
        if resp.status >= 300:
            raise DemoError(f"POST {url}: HTTP {resp.status}: {(await resp.text())[:300]}")


async def _wait_ready(session: aiohttp.ClientSession, url: str, server: asyncio.Task[None]) -> None:
    loop = asyncio.get_running_loop()
    until = loop.time() + PAGE_TIMEOUT_S
    while loop.time() < until:
        if server.done():
            server.result()  # raises what stopped it
            raise DemoError("the service stopped while starting")
        with contextlib.suppress(aiohttp.ClientError, OSError):
            async with session.get(f"{url}/readyz") as resp:
                if resp.status == 200:
                    return
        await asyncio.sleep(0.02)
    raise DemoError(f"the service did not become ready within {PAGE_TIMEOUT_S:g} s")


async def _page_ids(session: aiohttp.ClientSession, url: str) -> list[dict[str, Any]]:
    async with session.get(f"{url}/api/v1/pages") as resp:
        return list((await resp.json()).get("pages", [])) if resp.status == 200 else []


async def _wait_page(
    session: aiohttp.ClientSession, url: str, deadline: float, after: int = 0
) -> dict[str, Any]:
    """The first page with an id above `after` (a kept `--data-dir` holds earlier runs')
    once it has its evidence, analysis and deliveries."""
    loop = asyncio.get_running_loop()
    while loop.time() < deadline:
        for p in await _page_ids(session, url):
            if p["id"] <= after:
                continue
            if p.get("evidence") and p.get("analysis") and p.get("deliveries"):
                return dict(p)
        await asyncio.sleep(0.05)
    raise DemoError(
        f"no page appeared within {PAGE_TIMEOUT_S:g} s of the notification "
        "(is the machine very busy?)"
    )


async def _demo(args: argparse.Namespace, data_dir: Path, out: Any) -> int:
    from enricher import logs
    from enricher.demo.backends import ReplayBackends, load_incident
    from enricher.demo.render import render
    from enricher.server import serve

    t0 = time.monotonic()
    logs.setup("WARNING")
    # The failing request ended a minute ago: older than Tempo's ingest lag, so the page
    # reads as it would once every trace has arrived.
    incident = load_incident(time.time() - 60.0)
    backends = ReplayBackends(incident)
    await backends.start()
    port = _port(args.port)
    url = f"http://127.0.0.1:{port}"
    config = _config(data_dir, port, backends.url)
    stop = asyncio.Event()
    server = asyncio.ensure_future(serve(config, stop=stop))
    try:
        timeout = aiohttp.ClientTimeout(total=PAGE_TIMEOUT_S)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            await _wait_ready(session, url, server)
            await _post(session, f"{url}/api/v1/deploys", _deploy_event(incident.starts_at))
            after = max((p["id"] for p in await _page_ids(session, url)), default=0)
            deadline = asyncio.get_running_loop().time() + PAGE_TIMEOUT_S
            await _post(session, f"{url}/api/v1/alerts", _webhook(incident.starts_at))
            page = await _wait_page(session, url, deadline, after)
        colour = out.isatty() if args.colour is None else args.colour
        html_url = f"{url}/pages/{page['id']}"
        lines = render(page, colour=colour, html_url=None if args.no_serve else html_url)
        took = time.monotonic() - t0
        print("\n".join(lines), file=out)
        print(f"\n(the recorded incident, replayed through the pipeline in {took:.1f} s)", file=out)
        if args.no_serve:
            out.flush()
            return 0
        print("Serving the HTML page above until Ctrl-C.", file=out, flush=True)
        await server  # until SIGINT/SIGTERM: serve() sets `stop` and shuts down cleanly
        print("stopped", file=out, flush=True)
        return 0
    finally:
        stop.set()
        if not server.done():
            with contextlib.suppress(Exception):
                await asyncio.wait_for(server, 10)
        await backends.stop()


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(list(sys.argv[1:] if argv is None else argv))
    try:
        import uvloop

        loop_factory: Any = uvloop.new_event_loop
    except ImportError:
        loop_factory = None
    with contextlib.ExitStack() as stack:
        if args.data_dir is not None:
            data_dir = args.data_dir
            data_dir.mkdir(parents=True, exist_ok=True)
        else:
            data_dir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="enricher-")))
        try:
            with asyncio.Runner(loop_factory=loop_factory) as runner:
                return runner.run(_demo(args, data_dir, sys.stdout))
        except DemoError as exc:
            print(f"enricher demo: {exc}", file=sys.stderr)
            return 1
        except KeyboardInterrupt:  # before the service took over SIGINT
            print("enricher demo: interrupted", file=sys.stderr)
            return 130
        except OSError as exc:
            print(f"enricher demo: {exc}", file=sys.stderr)
            return 1
    return 1


__all__ = ["main"]
