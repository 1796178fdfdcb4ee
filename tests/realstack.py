"""Real components for tests: Prometheus, Alertmanager and the enricher as processes.

Each runs on a free loopback port with a generated configuration in a temporary directory,
is waited on until it reports ready, and is stopped when its context ends. Nothing here is
a fake: the binaries are Debian's `prometheus` and `prometheus-alertmanager`.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml

PROMETHEUS = shutil.which("prometheus") or "/usr/bin/prometheus"
ALERTMANAGER = shutil.which("prometheus-alertmanager") or "/usr/bin/prometheus-alertmanager"
REPO = Path(__file__).resolve().parent.parent


def have(binary: str) -> bool:
    return os.path.exists(binary) and os.access(binary, os.X_OK)


# For tests that run Prometheus and Alertmanager: marked `e2e`, skipped with the reason where
# the Debian packages are missing (CI installs them; see .ci/run).
REAL_STACK = [
    pytest.mark.e2e,
    pytest.mark.skipif(
        not (have(PROMETHEUS) and have(ALERTMANAGER)),
        reason="needs Debian's prometheus and prometheus-alertmanager (see .ci/run)",
    ),
]


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def http_get(url: str, timeout: float = 5.0, headers: Mapping[str, str] | None = None) -> Any:
    req = urllib.request.Request(url, headers=dict(headers or {}))
    with urllib.request.urlopen(req, timeout=timeout) as resp:
        body = resp.read()
    return json.loads(body) if body[:1] in (b"{", b"[") else body.decode()


def http_post(
    url: str,
    body: bytes,
    content_type: str = "application/json",
    headers: Mapping[str, str] | None = None,
    timeout: float = 10.0,
) -> tuple[int, bytes]:
    h = {"Content-Type": content_type, **(headers or {})}
    req = urllib.request.Request(url, data=body, headers=h, method="POST")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def wait_until(check: Any, timeout: float, interval: float = 0.1, what: str = "condition") -> Any:
    """Poll `check()` until it returns something truthy; the value is returned."""
    deadline = time.monotonic() + timeout
    last_exc: Exception | None = None
    while time.monotonic() < deadline:
        try:
            value = check()
            if value:
                return value
        except Exception as exc:
            last_exc = exc
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout}s waiting for {what} (last error: {last_exc})")


class _Process:
    name = "process"

    def __init__(self, workdir: Path) -> None:
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = self.workdir / f"{self.name}.log"

    def _spawn(self, argv: list[str], env: Mapping[str, str] | None = None) -> None:
        log = open(self.log_path, "ab")  # noqa: SIM115 - owned by the child for its lifetime
        self.proc = subprocess.Popen(
            argv,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=self.workdir,
            env={**os.environ, **(env or {})},
            start_new_session=True,
        )
        log.close()

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15.0) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        return self.proc.returncode

    def kill9(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)

    def _wait_ready(self, url: str, timeout: float) -> None:
        def ready() -> bool:
            if not self.alive():
                return True  # exited: stop waiting (wait_until would retry an exception)
            try:
                with urllib.request.urlopen(url, timeout=1) as resp:
                    return resp.status == 200
            except (urllib.error.URLError, OSError):
                return False

        try:
            wait_until(ready, timeout, what=f"{self.name} ready at {url}")
            if not self.alive():
                raise RuntimeError(f"{self.name} exited")
        except (TimeoutError, RuntimeError):
            self.stop()
            raise RuntimeError(f"{self.name} did not become ready:\n{self.log()[-3000:]}") from None

    def __exit__(self, *exc: object) -> None:
        self.stop()


class Prometheus(_Process):
    """Debian's Prometheus 2.42 with exemplar storage, rules and scrape targets of the test."""

    name = "prometheus"

    def __init__(
        self,
        workdir: Path,
        *,
        rules_yaml: str | None = None,
        scrape_targets: list[str] | tuple[str, ...] = (),
        alertmanager_url: str | None = None,
        scrape_interval: str = "1s",
        evaluation_interval: str = "1s",
    ) -> None:
        super().__init__(workdir)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config: dict[str, Any] = {
            "global": {
                "scrape_interval": scrape_interval,
                "evaluation_interval": evaluation_interval,
            },
            "scrape_configs": [],
        }
        if scrape_targets:
            config["scrape_configs"].append(
                {"job_name": "test", "static_configs": [{"targets": list(scrape_targets)}]}
            )
        if rules_yaml is not None:
            (self.workdir / "rules.yml").write_text(rules_yaml)
            config["rule_files"] = ["rules.yml"]
        if alertmanager_url:
            host = alertmanager_url.split("://", 1)[-1].rstrip("/")
            config["alerting"] = {"alertmanagers": [{"static_configs": [{"targets": [host]}]}]}
        (self.workdir / "prometheus.yml").write_text(yaml.safe_dump(config))

    def __enter__(self) -> Prometheus:
        self._spawn(
            [
                PROMETHEUS,
                f"--config.file={self.workdir / 'prometheus.yml'}",
                f"--storage.tsdb.path={self.workdir / 'tsdb'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
                "--enable-feature=exemplar-storage",
                "--web.enable-lifecycle",
                # The first evaluation may precede Alertmanager discovery; resend soon.
                "--rules.alert.resend-delay=1s",
            ]
        )
        self._wait_ready(f"{self.url}/-/ready", 30)
        return self


class Alertmanager(_Process):
    """Debian's Alertmanager 0.25 routing everything to one webhook receiver."""

    name = "alertmanager"

    def __init__(
        self,
        workdir: Path,
        *,
        webhook_url: str,
        bearer_token: str | None = None,
        basic_auth: tuple[str, str] | None = None,
        group_wait: str = "1s",
        group_interval: str = "2s",
        repeat_interval: str = "1h",
    ) -> None:
        super().__init__(workdir)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        webhook: dict[str, Any] = {"url": webhook_url, "send_resolved": True, "max_alerts": 0}
        if bearer_token:
            webhook["http_config"] = {
                "authorization": {"type": "Bearer", "credentials": bearer_token}
            }
        elif basic_auth:
            webhook["http_config"] = {
                "basic_auth": {"username": basic_auth[0], "password": basic_auth[1]}
            }
        config = {
            "route": {
                "receiver": "enricher",
                "group_by": ["alertname", "service"],
                "group_wait": group_wait,
                "group_interval": group_interval,
                "repeat_interval": repeat_interval,
            },
            "receivers": [{"name": "enricher", "webhook_configs": [webhook]}],
        }
        (self.workdir / "alertmanager.yml").write_text(yaml.safe_dump(config))

    def __enter__(self) -> Alertmanager:
        self._spawn(
            [
                ALERTMANAGER,
                f"--config.file={self.workdir / 'alertmanager.yml'}",
                f"--storage.path={self.workdir / 'am-data'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
                # A single instance: no gossip, so no 10 s wait for the cluster to settle.
                "--cluster.listen-address=",
            ]
        )
        self._wait_ready(f"{self.url}/-/ready", 30)
        return self


class Enricher(_Process):
    """The service itself, started as `python -m enricher serve` like an operator would."""

    name = "enricher"

    def __init__(
        self,
        workdir: Path,
        *,
        config: Mapping[str, Any] | None = None,
        data_dir: Path | None = None,
        port: int | None = None,
        env: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(workdir)
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.data_dir = data_dir or (self.workdir / "data")
        self.config_path: Path | None = None
        self.env = dict(env or {})
        self.extra_args: list[str] = []
        # Pages need the read credentials: the intake's bearer token unless api.auth is set.
        auth = dict(config or {}).get("api", {}).get("auth") or dict(config or {}).get(
            "intake", {}
        ).get("auth", {})
        token = (auth or {}).get("bearer_token")
        self.read_headers = {"Authorization": f"Bearer {token}"} if token else {}
        if config is not None:
            self.config_path = self.workdir / "enricher.yml"
            self.config_path.write_text(yaml.safe_dump(dict(config)))

    def start(self) -> Enricher:
        argv = [
            sys.executable,
            "-m",
            "enricher",
            "serve",
            "--listen",
            f"127.0.0.1:{self.port}",
            "--data-dir",
            str(self.data_dir),
        ]
        if self.config_path:
            argv += ["--config", str(self.config_path)]
        argv += self.extra_args
        self._spawn(argv, env={"PYTHONPATH": str(REPO), **self.env})
        self._wait_ready(f"{self.url}/readyz", 30)
        return self

    def __enter__(self) -> Enricher:
        return self.start()

    def pages(self) -> list[dict[str, Any]]:
        return list(http_get(f"{self.url}/api/v1/pages", headers=self.read_headers)["pages"])

    def get(self, path: str) -> Any:
        return http_get(f"{self.url}{path}", headers=self.read_headers)


@contextlib.contextmanager
def running(*procs: _Process) -> Iterator[None]:
    """Enter several components in order and stop them in reverse."""
    with contextlib.ExitStack() as stack:
        for p in procs:
            stack.enter_context(p)  # type: ignore[arg-type]
        yield


def stop_all(procs: Iterable[subprocess.Popen[Any]], timeout: float = 10.0) -> None:
    """SIGTERM every process first (so they shut down in parallel), then wait; kill stragglers."""
    procs = list(procs)
    for p in procs:
        p.terminate()
    for p in procs:
        try:
            p.wait(timeout)
        except subprocess.TimeoutExpired:
            p.kill()


REDIS_SERVER = shutil.which("redis-server")
START_TIMEOUT_S = 20.0


class RedisServer:
    """One redis-server process; `kill` and `start` again keep its port and directory."""

    def __init__(self, directory: Path, *extra: str) -> None:
        self.dir = directory
        self.dir.mkdir(parents=True, exist_ok=True)
        self.extra = extra
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        assert REDIS_SERVER is not None
        args = [
            REDIS_SERVER,
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--dir", str(self.dir),
            "--appendonly", "yes",
            "--appendfsync", "always",
            "--save", "",
            *self.extra,
        ]  # fmt: skip
        with open(self.dir / "redis.log", "ab") as out:
            self.proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT)
        end = time.monotonic() + START_TIMEOUT_S
        while not self.ping():
            if self.proc.poll() is not None or time.monotonic() > end:
                log = (self.dir / "redis.log").read_text(errors="replace")[-2000:]
                self.stop()
                raise RuntimeError(f"redis-server did not start: {log}")
            time.sleep(0.02)
        return self

    def ping(self) -> bool:
        """PING answered with PONG (not LOADING while the AOF is read back)."""
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1) as s:
                s.sendall(b"PING\r\n")
                return s.recv(64).startswith(b"+PONG")
        except OSError:
            return False

    def kill(self) -> None:
        """SIGKILL: no shutdown, no final AOF flush, like a crash."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.kill()
