"""Remove credentials from text before it enters an evidence bundle.

Why here and why pattern-based: the bundle goes to Slack, PagerDuty and an LLM. Log lines
and span attributes routinely carry connection strings, Authorization headers and keys
that a service logged by accident. We cannot know every format, so we cover the common
shapes (key=value secrets, bearer/basic credentials, URLs with passwords, AWS keys, JWTs,
private-key blocks, well-known token prefixes) and redact whole values of attributes whose
name says they are secret. Hex trace/span ids, versions and SQL text must survive intact.
"""

from __future__ import annotations

import functools
import re
from typing import Any

MARK = "[REDACTED]"

_SECRET_WORDS = (
    r"password|passwd|pwd|passphrase|secret|api[_-]?key|apikey|access[_-]?key|"
    r"auth[_-]?token|access[_-]?token|refresh[_-]?token|id[_-]?token|token|credentials?|"
    r"private[_-]?key|client[_-]?secret|session[_-]?id|cookie"
)
_SECRET_KEY = re.compile(rf"(?i)({_SECRET_WORDS}|authorization)")

_PATTERNS: list[tuple[re.Pattern[str], str]] = [
    (
        re.compile(
            r"-----BEGIN [A-Z ]*PRIVATE KEY-----.*?(?:-----END [A-Z ]*PRIVATE KEY-----|$)", re.S
        ),
        "[REDACTED PRIVATE KEY]",
    ),
    # scheme://user:password@host -> keep user and host
    (re.compile(r"(\b[a-zA-Z][a-zA-Z0-9+.\-]*://)([^:/?#\s@]*):([^@/\s]+)@"), rf"\1\2:{MARK}@"),
    (
        re.compile(r"(?i)\b(authorization\s*[:=]\s*\"?)(bearer|basic|token|digest)\s+[^\s\",;]+"),
        rf"\1\2 {MARK}",
    ),
    (re.compile(r"(?i)\b(bearer)\s+[A-Za-z0-9\-._~+/]{8,}=*"), rf"\1 {MARK}"),
    (re.compile(r"\b(AKIA|ASIA|AGPA|AIDA|AROA|ANPA)[0-9A-Z]{16}\b"), "[REDACTED AWS KEY]"),
    (re.compile(r"\beyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}"), "[REDACTED JWT]"),
    (re.compile(r"\b(gh[pousr]_[A-Za-z0-9]{30,}|github_pat_[A-Za-z0-9_]{30,})\b"), MARK),
    (re.compile(r"\bxox[abprs]-[A-Za-z0-9-]{10,}"), MARK),
    (re.compile(r"\bsk-[A-Za-z0-9_-]{20,}"), MARK),
    (re.compile(r"\bAIza[0-9A-Za-z_-]{35}\b"), MARK),
    # Free text: "secret wJalr...EY", "api key 4f9a...": a secret word, then a long token
    # that has a digit or / or + in it (so "password reset link sent" stays as it is).
    (
        re.compile(
            r"(?i)\b(secret(?:[_ ]access)?(?:[_ ]key)?|password|passwd|token|api[_ ]?key|"
            r"access[_ ]key)(\s+)(?=[A-Za-z0-9/+=_\-]*[0-9/+])[A-Za-z0-9/+=_\-]{16,}"
        ),
        rf"\1\2{MARK}",
    ),
    # key=value, key: value, "key": "value" where the key names a secret
    (
        re.compile(
            rf"(?i)(\b[\w.\-]*(?:{_SECRET_WORDS})[\w.\-]*\"?\s*(?:=|:)\s*\"?)"
            r"(?!\[REDACTED|\$\d|\?|%s|:\w)([^\s\"',;&}\]]+)"
        ),
        rf"\1{MARK}",
    ),
]


# Cheap test for "could contain a credential at all"; most strings (ids, names, numbers) do
# not, and skip the dozen substitutions.
_GATE = re.compile(
    rf"(?i)(://|bearer|authorization|-----BEGIN|AKIA|ASIA|AGPA|AIDA|AROA|ANPA|eyJ|gh[pousr]_|"
    rf"github_pat_|xox[abprs]-|sk-|AIza|api key|access key|{_SECRET_WORDS})"
)


@functools.lru_cache(maxsize=65536)
def redact_text(text: str) -> str:
    """Redact credentials inside free text (log lines, SQL, messages, URLs).

    Memoised: during an alert storm the same lines and attributes pass through many times."""
    if not text or len(text) < 6 or not _GATE.search(text):
        return text
    for rx, repl in _PATTERNS:
        text = rx.sub(repl, text)
    return text


@functools.lru_cache(maxsize=4096)
def is_secret_key(key: str) -> bool:
    """Attribute names whose value is a credential, e.g. http.request.header.authorization."""
    last = key.rsplit(".", 1)[-1]
    return bool(_SECRET_KEY.search(last)) or "authorization" in key.lower()


def redact_value(key: str, value: Any) -> Any:
    """Redact one attribute: a secret-named key loses its whole value, text is scanned."""
    if value is None or isinstance(value, bool | int | float):
        return value  # numbers are counts and sizes (e.g. token usage), not credentials
    if is_secret_key(key):
        return MARK
    return redact_deep(value)


def redact_deep(value: Any) -> Any:
    """Walk JSON-like data: dict values by key, lists item by item, strings by pattern."""
    if isinstance(value, str):
        return redact_text(value)
    if isinstance(value, dict):
        return {k: redact_value(str(k), v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [redact_deep(v) for v in value]
    return value
