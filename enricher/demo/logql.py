"""A LogQL log query parser and matcher: stream selector matchers and line/label filters.

Why in the package: `enricher demo` answers as Loki does from its recordings, and the test
suite's Loki double (tests/doubles/loki.py) answers the same way; one parser serves both, with
real Loki's error texts, so the demo cannot drift from what the contract tests hold.
"""

from __future__ import annotations

import re


class LogQLError(ValueError):
    pass


class LogQuery:
    """A parsed LogQL log query: selector matchers and pipeline stages."""

    _TOKEN = re.compile(r'\s*(\{|\}|,|\|=|!=|\|~|!~|=~|=|\||"(?:[^"\\]|\\.)*"|[A-Za-z_][\w.]*)')

    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0
        self.matchers: list[tuple[str, str, str]] = []
        self.stages: list[tuple[str, str, str]] = []  # (kind, op/label, value)
        self._parse()

    def _err(self, msg: str) -> LogQLError:
        return LogQLError(f"parse error at line 1, col {self.pos + 1}: syntax error: {msg}")

    def _next(self) -> str | None:
        m = self._TOKEN.match(self.text, self.pos)
        if not m or m.end() == self.pos:
            if self.text[self.pos :].strip():
                raise self._err(f"unexpected {self.text[self.pos :].strip()[:10]!r}")
            return None
        self.pos = m.end()
        return m.group(1)

    @staticmethod
    def _unquote(tok: str | None) -> str:
        if tok is None or not tok.startswith('"'):
            raise LogQLError(f"parse error : expected a string, got {tok!r}")
        return bytes(tok[1:-1], "utf-8").decode("unicode_escape")

    def _parse(self) -> None:
        if self._next() != "{":
            raise self._err("unexpected start, expecting {")
        while True:
            name = self._next()
            if name is None:
                raise self._err("unexpected $end, expecting } or ,")
            if name == "}":
                break
            op = self._next()
            if op not in ("=", "!=", "=~", "!~"):
                raise self._err(f"unexpected {op}")
            self.matchers.append((name, op, self._unquote(self._next())))
            sep = self._next()
            if sep is None:
                raise self._err("unexpected $end, expecting } or ,")
            if sep == "}":
                break
            if sep != ",":
                raise self._err(f"unexpected {sep}, expecting }} or ,")
        if not any(
            (op == "=" and v) or (op == "=~" and not re.fullmatch(v, ""))
            for _, op, v in self.matchers
        ):
            raise LogQLError(
                "parse error : queries require at least one regexp or equality matcher that "
                'does not have an empty-compatible value. For instance, app=~".*" does not '
                'meet this requirement, but app=~".+" will'
            )
        while True:
            tok = self._next()
            if tok is None:
                return
            if tok in ("|=", "!=", "|~", "!~"):
                self.stages.append(("line", tok, self._unquote(self._next())))
            elif tok == "|":
                label = self._next()
                op = self._next()
                if label is None or op not in ("=", "!=", "=~", "!~"):
                    raise self._err(f"unexpected {op}")
                self.stages.append(("label", f"{label}{op}", self._unquote(self._next())))
            else:
                raise self._err(f"unexpected {tok}")

    @staticmethod
    def _label_ok(actual: str, op: str, v: str) -> bool:
        if op == "=":
            return actual == v
        if op == "!=":
            return actual != v
        hit = re.fullmatch(v, actual) is not None
        return hit if op == "=~" else not hit

    def matches(self, labels: dict[str, str], line: str, meta: dict[str, str]) -> bool:
        if not all(self._label_ok(labels.get(n, ""), op, v) for n, op, v in self.matchers):
            return False
        for kind, op, v in self.stages:
            if kind == "line":
                ok = {
                    "|=": v in line,
                    "!=": v not in line,
                    "|~": re.search(v, line) is not None,
                    "!~": re.search(v, line) is None,
                }[op]
            else:
                m = re.match(r"^(.*?)(=~|!~|!=|=)$", op)
                assert m is not None
                name, lop = m.group(1), m.group(2)
                ok = self._label_ok({**labels, **meta}.get(name, ""), lop, v)
            if not ok:
                return False
        return True
