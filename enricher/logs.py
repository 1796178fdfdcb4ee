"""JSON logs, one object per line, with the job id of the work in progress on every line."""

from __future__ import annotations

import contextvars
import json
import logging
import sys
import time

job_id: contextvars.ContextVar[int | None] = contextvars.ContextVar("job_id", default=None)

_STD = set(vars(logging.makeLogRecord({})).keys()) | {"message", "asctime", "taskName"}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, object] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        jid = job_id.get()
        if jid is not None:
            out["job_id"] = jid
        for k, v in record.__dict__.items():
            if k not in _STD and not k.startswith("_"):
                out[k] = v
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, ensure_ascii=False, default=str)


def setup(level: str = "INFO") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)


class Throttled:
    """A log line per key at most every `every` seconds, carrying how many were held back.

    Why: a condition that refuses every request (a full disk, a connection cap) would
    otherwise log once per request, megabytes a second, and fill the disk it complains about.
    The first occurrence of a key logs at once, so an operator sees the condition start; later
    ones are counted and reported in the next line for that key (`suppressed`).
    """

    def __init__(self, logger: logging.Logger, every: float = 10.0) -> None:
        self.logger = logger
        self.every = every
        self._last: dict[str, float] = {}
        self._held: dict[str, int] = {}

    def log(self, level: int, key: str, msg: str, **extra: object) -> bool:
        """Log now (True) or count it for the next line of this key (False)."""
        now = time.monotonic()
        last = self._last.get(key)
        if last is not None and now - last < self.every:
            self._held[key] = self._held.get(key, 0) + 1
            return False
        if len(self._last) > 1000:  # keys are ours (reasons), but stay bounded regardless
            self._last.clear()
        self._last[key] = now
        held = self._held.pop(key, 0)
        self.logger.log(
            level, msg, extra={**extra, "suppressed": held, "suppressed_for_s": self.every}
        )
        return True
