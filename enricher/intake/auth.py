"""Webhook authentication as Alertmanager's `http_config` sends it: Bearer or Basic.

Comparisons are constant-time (hmac.compare_digest) over the whole expected header value, so
neither a wrong token's length nor its prefix leaks through timing.
"""

from __future__ import annotations

import base64
import hmac

from enricher.config import AuthConfig


class Authenticator:
    def __init__(self, config: AuthConfig) -> None:
        self._accepted: list[bytes] = []
        if config.bearer_token:
            self._accepted.append(f"Bearer {config.bearer_token}".encode())
        if config.basic is not None:
            raw = f"{config.basic.username}:{config.basic.password}".encode()
            self._accepted.append(b"Basic " + base64.b64encode(raw))
        self.enabled = bool(self._accepted)
        self.challenge = (
            'Bearer realm="enricher"' if config.bearer_token else 'Basic realm="enricher"'
        )

    def allows(self, header: str | None) -> bool:
        if not self.enabled:
            return True
        if not header:
            return False
        given = header.strip().encode("utf-8", "replace")
        # Scheme names are case-insensitive (RFC 7235); normalise it, compare the rest exactly.
        scheme, _, rest = given.partition(b" ")
        given = scheme.capitalize() + b" " + rest.strip()
        ok = False
        for expected in self._accepted:
            ok |= hmac.compare_digest(given, expected)
        return ok
