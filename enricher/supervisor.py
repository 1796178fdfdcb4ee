"""`enricher serve --processes N`: N service processes sharing one listening socket.

Why pre-fork: one Python process acknowledges and pages on one core. The parent binds the
socket once and forks N children that each run the whole service (intake, workers, outbox)
and accept on the inherited socket; the kernel hands each connection to one of them, and no
port is ever unbound while a child restarts. The children share nothing in memory: the
store is the only meeting point, and it claims idempotency keys and jobs atomically for all
of them. Redis is shared by nature; a SQLite directory is prepared by the parent before the
fork (it takes the directory lock, which the children inherit, and releases a dead
predecessor's leases), and the children's writers take turns on it (enricher/store/sqlite.py).
SQLite's processes must be on one machine; replicas on several machines need Redis. The parent only
supervises: it restarts a child that dies (a crash, an OOM kill) and forwards SIGTERM/SIGINT
so every child drains in-flight work and releases its leases before the parent exits.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import sys
import time
from pathlib import Path

from enricher.config import Config

log = logging.getLogger("enricher.supervisor")

# A child that dies this soon after starting, this many times in a row, is not restarted
# again: its configuration cannot work (a store it cannot reach at start-up, say).
QUICK_DEATH_S = 2.0
MAX_QUICK_DEATHS = 5


def bind(config: Config) -> socket.socket:
    host, port = config.host_port
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.create_server((host, port), family=family, backlog=1024, reuse_port=False)
    sock.set_inheritable(True)
    return sock


def run_processes(config: Config, processes: int) -> int:
    """Run `processes` service processes until SIGTERM/SIGINT; the exit code of the run."""
    from enricher.server import run

    lock_fd = None
    if config.store.backend == "sqlite":
        from enricher.store.base import StoreError
        from enricher.store.sqlite import prepare_shared

        try:
            lock_fd = prepare_shared(Path(config.data_dir), config.store.synchronous)
        except StoreError as exc:
            print(f"enricher: cannot start: {exc}", file=sys.stderr)
            return 1
    try:
        sock = bind(config)
    except OSError as exc:
        print(f"enricher: cannot listen on {config.listen}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    children: dict[int, tuple[int, float]] = {}  # pid -> (slot, started at)
    stopping = False

    def spawn(slot: int) -> None:
        pid = os.fork()
        if pid == 0:
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            signal.signal(signal.SIGINT, signal.SIG_DFL)
            code = 1
            try:
                code = run(config, sock=sock)
            finally:
                os._exit(code)
        children[pid] = (slot, time.monotonic())

    def stop(signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True
        for pid in list(children):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signum)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    for slot in range(processes):
        spawn(slot)
    log.info("serving", extra={"processes": processes, "listen": config.listen})
    quick_deaths = 0
    code = 0
    while children:
        try:
            pid, status = os.wait()
        except ChildProcessError:
            break
        slot, started = children.pop(pid, (-1, 0.0))
        if slot < 0 or stopping:
            continue
        exit_code = os.waitstatus_to_exitcode(status)
        quick = time.monotonic() - started < QUICK_DEATH_S
        quick_deaths = quick_deaths + 1 if quick else 0
        if quick_deaths >= MAX_QUICK_DEATHS:
            log.error("children keep dying at start-up, giving up", extra={"exit": exit_code})
            code = 1
            stop(signal.SIGTERM, None)
            continue
        log.warning("a service process died, starting another", extra={"exit": exit_code})
        spawn(slot)
    sock.close()
    if lock_fd is not None:
        os.close(lock_fd)
    return code
