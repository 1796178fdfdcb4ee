"""A client for any OpenAI-compatible chat-completions endpoint, built for a page deadline.

Why our own client on aiohttp instead of an SDK: the root-cause stage must hand back *some*
answer by the page's deadline, so every wait is bounded by it. A call takes a `deadline`
(event-loop time) and never outlives it: each attempt is bounded by `min(deadline, now +
total_timeout)`, a streaming attempt must see its first token within `first_token_timeout`,
and a retry whose wait would pass the deadline is not made. Retries copy openai-python's
rules (408/409/429/5xx/connection errors/timeouts; `x-should-retry` overrides; the wait
asked by `retry-after-ms`, then `Retry-After`, else exponential backoff with jitter), except
that `429 insufficient_quota` is not retried: waiting does not refill a quota.

Why a circuit breaker: when the model server is down, every alert of a storm would otherwise
spend its whole LLM budget on timeouts. After `breaker_failures` consecutive failed calls
(after their retries) the breaker opens and calls fail at once with `circuit_open`; after
`breaker_reset` seconds one trial call is let through (half-open) and its outcome closes or
reopens it. A 400 does not count: the server answered, our request was at fault.

Why time to first token: with streaming, TTFT is what prefill costs (input tokens) and the
rest is decode (output tokens); they are tuned differently, so both are measured. Without
streaming the first token arrives with the last, and TTFT equals the latency.
"""

from __future__ import annotations

import asyncio
import email.utils
import json
import random
import time
from collections.abc import Callable
from datetime import UTC
from typing import Any, Literal

import aiohttp
from pydantic import BaseModel, Field

from enricher.analysis.config import LLMConfig

ErrorReason = Literal[
    "timeout",
    "rate_limited",
    "quota",
    "server_error",
    "bad_request",
    "auth",
    "not_found",
    "malformed",
    "connection",
    "circuit_open",
]
_RETRYABLE: frozenset[str] = frozenset({"timeout", "rate_limited", "server_error", "connection"})
# The server answered; the request was at fault. Not a sign the server is unhealthy.
_NOT_BREAKER_FAILURES: frozenset[str] = frozenset({"bad_request", "circuit_open"})
# openai-python's MAX_RETRY_AFTER_DELAY: a server asking for longer is not retried.
MAX_RETRY_AFTER = 120.0
CHARS_PER_TOKEN = 4
_ERROR_BODY_LIMIT = 2000

ResponseMode = Literal["json_schema", "json_object", "none"]


def estimate_tokens(text: str) -> int:
    """~4 characters per token: the usual rule for English and JSON, free, model-agnostic.

    Real tokenizers differ by model; the estimate errs on the generous side for ids and
    code, and the budgets it guards (`max_input_tokens`) leave room for the difference."""
    return (len(text) + CHARS_PER_TOKEN - 1) // CHARS_PER_TOKEN


class ChatMessage(BaseModel):
    role: Literal["system", "user", "assistant"]
    content: str


def message_tokens(messages: list[ChatMessage]) -> int:
    """Estimated prompt tokens: content plus the few tokens each chat-template turn adds."""
    return sum(estimate_tokens(m.content) + 4 for m in messages) + 3


class ChatRequest(BaseModel):
    """One chat completion to ask for; `phase` only labels metrics and errors."""

    messages: list[ChatMessage]
    model: str
    max_tokens: int
    temperature: float = 0.1
    stream: bool = False
    mode: ResponseMode = "none"
    schema_name: str = "answer"
    json_schema: dict[str, Any] | None = None
    phase: str = "single"

    def body(self, max_tokens_param: str = "max_tokens") -> dict[str, Any]:
        body: dict[str, Any] = {
            "model": self.model,
            "messages": [m.model_dump() for m in self.messages],
            "temperature": self.temperature,
            max_tokens_param: self.max_tokens,
            "stream": self.stream,
        }
        if self.stream:
            body["stream_options"] = {"include_usage": True}
        if self.mode == "json_schema" and self.json_schema is not None:
            body["response_format"] = {
                "type": "json_schema",
                "json_schema": {
                    "name": self.schema_name,
                    "strict": True,
                    "schema": self.json_schema,
                },
            }
        elif self.mode == "json_object":
            body["response_format"] = {"type": "json_object"}
        return body


class Usage(BaseModel):
    prompt_tokens: int = 0
    completion_tokens: int = 0
    # True when the server sent no usage (or zeros, as Ollama does for cached prompts) and
    # the numbers are our chars/4 estimate.
    estimated: bool = False


class ChatResult(BaseModel):
    content: str
    finish_reason: str | None = None
    model: str = ""
    usage: Usage = Field(default_factory=Usage)
    latency_ms: float = 0.0
    ttft_ms: float | None = None
    retries: int = 0
    streamed: bool = False

    @property
    def output_tokens_per_s(self) -> float | None:
        """Decode speed: after the first token when streamed, over the whole call if not."""
        gen_ms = self.latency_ms - (self.ttft_ms or 0.0) if self.streamed else self.latency_ms
        if gen_ms <= 0 or self.usage.completion_tokens <= 0:
            return None
        return self.usage.completion_tokens / (gen_ms / 1000.0)


class LLMError(Exception):
    """A call that produced no usable completion; `reason` decides retry, breaker and status."""

    def __init__(
        self,
        reason: ErrorReason,
        detail: str,
        status: int | None = None,
        code: str | None = None,
        retry_after: float | None = None,
        should_retry: bool | None = None,
    ) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason: ErrorReason = reason
        self.detail = detail
        self.status = status
        self.code = code
        self.retry_after = retry_after
        self.should_retry = should_retry
        self.retries = 0

    @property
    def retryable(self) -> bool:
        if self.should_retry is not None:
            return self.should_retry
        return self.reason in _RETRYABLE


# --- retry timing -------------------------------------------------------------------------


def parse_retry_after(headers: Any, now: float | None = None) -> float | None:
    """Seconds the server asks us to wait: `retry-after-ms` first, then `Retry-After` as
    seconds or an HTTP date. None when absent or unreadable."""
    ms = headers.get("retry-after-ms")
    if ms is not None:
        try:
            return max(0.0, float(ms) / 1000.0)
        except ValueError:
            pass
    ra = headers.get("retry-after")
    if ra is None:
        return None
    try:
        return max(0.0, float(ra))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(ra)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    ref = time.time() if now is None else now
    return max(0.0, when.timestamp() - ref)


def backoff_delay(attempt: int, base: float, cap: float, rng: Callable[[], float]) -> float:
    """openai-python's schedule: base * 2^attempt up to cap, minus up to 25% jitter."""
    return min(base * (2.0**attempt), cap) * (1.0 - 0.25 * rng())


# --- circuit breaker ----------------------------------------------------------------------


class CircuitBreaker:
    """Consecutive failures open it; after `reset` seconds one trial call is admitted."""

    def __init__(
        self, failures: int, reset: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.failures_to_open = failures
        self.reset = reset
        self.clock = clock
        self.consecutive = 0
        self.opened_at: float | None = None
        self._trial = False

    @property
    def state(self) -> Literal["closed", "open", "half_open"]:
        if self.opened_at is None:
            return "closed"
        return "half_open" if self.clock() - self.opened_at >= self.reset else "open"

    def retry_in(self) -> float:
        if self.opened_at is None:
            return 0.0
        return max(0.0, self.reset - (self.clock() - self.opened_at))

    def would_allow(self) -> bool:
        """`allow()` without taking the half-open trial: may a call start at all?"""
        state = self.state
        return state == "closed" or (state == "half_open" and not self._trial)

    def allow(self) -> bool:
        state = self.state
        if state == "closed":
            return True
        if state == "half_open" and not self._trial:
            self._trial = True
            return True
        return False

    def success(self) -> None:
        self.consecutive = 0
        self.opened_at = None
        self._trial = False

    def failure(self) -> None:
        self.consecutive += 1
        if self._trial or self.consecutive >= self.failures_to_open:
            self.opened_at = self.clock()
        self._trial = False

    def abandon(self) -> None:
        """A trial call was cancelled by its caller: it proved nothing, let another try."""
        self._trial = False


# --- the client ---------------------------------------------------------------------------


class _Attempt:
    """Mutable timing state of one HTTP attempt, shared with the stream reader."""

    def __init__(self, start: float, first_deadline: float, end: float) -> None:
        self.start = start
        self.first_deadline = first_deadline
        self.end = end
        self.first_token_at: float | None = None


class ChatClient:
    """Sends chat completions; owns its aiohttp session unless one is given."""

    def __init__(
        self,
        config: LLMConfig,
        session: aiohttp.ClientSession | None = None,
        rng: Callable[[], float] = random.random,
    ) -> None:
        self.config = config
        self._session = session
        self._own_session = session is None
        self.rng = rng
        self.breaker = CircuitBreaker(config.breaker_failures, config.breaker_reset)
        self.url = f"{config.url}/chat/completions"

    async def start(self) -> None:
        if self._session is None:
            headers = {"Accept": "application/json, text/event-stream"}
            headers.update(self.config.extra_headers)
            if self.config.api_key:
                headers["Authorization"] = f"Bearer {self.config.api_key}"
            self._session = aiohttp.ClientSession(
                headers=headers,
                timeout=aiohttp.ClientTimeout(
                    total=None,
                    connect=self.config.connect_timeout,
                    sock_connect=self.config.connect_timeout,
                ),
            )

    async def close(self) -> None:
        if self._session is not None and self._own_session:
            await self._session.close()
        self._session = None

    async def complete(self, request: ChatRequest, deadline: float) -> ChatResult:
        """One completion, retried within `deadline`; raises LLMError when none came."""
        if not self.breaker.allow():
            raise LLMError(
                "circuit_open",
                f"{self.breaker.consecutive} consecutive failures; "
                f"next trial in {self.breaker.retry_in():.1f}s",
            )
        try:
            result = await self._with_retries(request, deadline)
        except LLMError as exc:
            if exc.reason in _NOT_BREAKER_FAILURES:
                self.breaker.success()
            else:
                self.breaker.failure()
            raise
        except asyncio.CancelledError:
            self.breaker.abandon()
            raise
        self.breaker.success()
        return result

    async def _with_retries(self, request: ChatRequest, deadline: float) -> ChatResult:
        loop = asyncio.get_running_loop()
        attempt = 0
        while True:
            try:
                result = await self._attempt(request, deadline)
            except LLMError as exc:
                exc.retries = attempt
                if not exc.retryable or attempt >= self.config.max_retries:
                    raise
                if exc.retry_after is not None and exc.retry_after > MAX_RETRY_AFTER:
                    exc.detail += f" (server asks to wait {exc.retry_after:.0f}s; not retried)"
                    raise
                wait = (
                    exc.retry_after
                    if exc.retry_after is not None
                    else backoff_delay(
                        attempt, self.config.backoff_base, self.config.backoff_max, self.rng
                    )
                )
                if loop.time() + wait >= deadline:
                    exc.detail += f" (a retry after {wait:.2f}s would pass the deadline)"
                    raise
                await asyncio.sleep(wait)
                attempt += 1
                continue
            result.retries = attempt
            return result

    async def _attempt(self, request: ChatRequest, deadline: float) -> ChatResult:
        if self._session is None:
            await self.start()
        assert self._session is not None
        loop = asyncio.get_running_loop()
        start = loop.time()
        end = min(deadline, start + self.config.total_timeout)
        if end <= start:
            raise LLMError("timeout", "no time left before the deadline")
        first_deadline = (
            min(end, start + self.config.first_token_timeout) if request.stream else end
        )
        state = _Attempt(start, first_deadline, end)
        body = request.body(self.config.max_tokens_param)
        try:
            # Our own watchdog over aiohttp's timeouts: it covers the time to the first token,
            # which aiohttp has no notion of, and is moved to `end` once a token arrives.
            async with asyncio.timeout_at(first_deadline) as watchdog:
                async with self._session.post(
                    self.url,
                    json=body,
                    timeout=aiohttp.ClientTimeout(
                        total=end - start,
                        connect=self.config.connect_timeout,
                        sock_connect=self.config.connect_timeout,
                    ),
                ) as resp:
                    if resp.status != 200:
                        raw = await resp.content.read(_ERROR_BODY_LIMIT)
                        raise http_error(resp.status, resp.headers, raw)
                    if request.stream and resp.content_type == "text/event-stream":
                        result = await self._read_stream(resp, request, state, watchdog)
                    else:
                        # Unstreamed, the first token arrives with the last: TTFT = latency.
                        result = self._parse_whole(await resp.read(), request)
        except TimeoutError:
            now = loop.time()
            if request.stream and state.first_token_at is None and now < end - 0.001:
                detail = f"no first token within {self.config.first_token_timeout:g}s"
            elif end < start + self.config.total_timeout:
                detail = f"deadline reached after {now - start:.2f}s"
            else:
                detail = f"no complete answer within {self.config.total_timeout:g}s"
            raise LLMError("timeout", detail) from None
        except aiohttp.ClientError as exc:
            raise LLMError("connection", f"{type(exc).__name__}: {exc}") from None
        except (ConnectionError, OSError) as exc:
            raise LLMError("connection", f"{type(exc).__name__}: {exc}") from None
        now = loop.time()
        result.latency_ms = (now - start) * 1000.0
        first = state.first_token_at if state.first_token_at is not None else now
        result.ttft_ms = (first - start) * 1000.0
        result.usage = _complete_usage(result.usage, request, result.content)
        return result

    def _parse_whole(self, raw: bytes, request: ChatRequest) -> ChatResult:
        try:
            obj = json.loads(raw)
        except ValueError:
            raise LLMError("malformed", f"response is not JSON: {_snippet(raw)}") from None
        if not isinstance(obj, dict):
            raise LLMError("malformed", "response is not a JSON object")
        if obj.get("error") is not None:
            raise _body_error(obj, 200)
        choices = obj.get("choices")
        if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
            raise LLMError("malformed", "response has no choices")
        choice = choices[0]
        message = choice.get("message") or {}
        content = message.get("content") if isinstance(message, dict) else None
        if not isinstance(content, str):
            refusal = message.get("refusal") if isinstance(message, dict) else None
            detail = f"model refused: {refusal}" if refusal else "message has no content"
            raise LLMError("malformed", detail)
        return ChatResult(
            content=content,
            finish_reason=choice.get("finish_reason"),
            model=str(obj.get("model") or request.model),
            usage=_usage(obj.get("usage")),
            streamed=False,
        )

    async def _read_stream(
        self,
        resp: aiohttp.ClientResponse,
        request: ChatRequest,
        state: _Attempt,
        watchdog: asyncio.Timeout,
    ) -> ChatResult:
        """Server-sent events: `data:` lines up to a blank line make one event."""
        loop = asyncio.get_running_loop()
        parts: list[str] = []
        finish: str | None = None
        usage = Usage()
        model = request.model
        done = False
        data: list[str] = []

        def dispatch(payload: str) -> None:
            nonlocal finish, usage, model, done
            if payload.strip() == "[DONE]":
                done = True
                return
            try:
                obj = json.loads(payload)
            except ValueError:
                raise LLMError("malformed", f"stream event is not JSON: {payload[:200]}") from None
            if not isinstance(obj, dict):
                raise LLMError("malformed", "stream event is not a JSON object")
            # A mid-stream error replaces a chunk; check it before reading choices.
            if obj.get("error") is not None:
                raise _body_error(obj, 200)
            if obj.get("usage"):
                usage = _usage(obj["usage"])
            if obj.get("model"):
                model = str(obj["model"])
            for choice in obj.get("choices") or []:
                if not isinstance(choice, dict):
                    continue
                delta = choice.get("delta") or {}
                text = delta.get("content") if isinstance(delta, dict) else None
                thinking = None
                if isinstance(delta, dict):
                    thinking = delta.get("reasoning_content") or delta.get("reasoning")
                if isinstance(text, str) and text:
                    parts.append(text)
                if state.first_token_at is None and ((isinstance(text, str) and text) or thinking):
                    state.first_token_at = loop.time()
                    watchdog.reschedule(state.end)
                if choice.get("finish_reason"):
                    finish = str(choice["finish_reason"])

        try:
            async for raw in resp.content:
                line = raw.decode("utf-8", "replace").rstrip("\r\n")
                if not line:
                    if data:
                        dispatch("\n".join(data))
                        data = []
                    if done:
                        break
                    continue
                if line.startswith(":"):
                    continue
                name, _, value = line.partition(":")
                if name == "data":
                    data.append(value[1:] if value.startswith(" ") else value)
            if data and not done:
                dispatch("\n".join(data))
        except ValueError as exc:  # aiohttp: a line over its buffer limit
            raise LLMError("malformed", f"stream line unreadable: {exc}") from None
        if not done and finish is None:
            raise LLMError("connection", "stream ended before [DONE]")
        return ChatResult(
            content="".join(parts), finish_reason=finish, model=model, usage=usage, streamed=True
        )


# --- error and usage parsing --------------------------------------------------------------


def _snippet(raw: bytes, limit: int = 200) -> str:
    return raw[:limit].decode("utf-8", "replace").strip()


def _error_fields(obj: dict[str, Any]) -> tuple[str, str, str]:
    """(message, type, code) from OpenAI/vLLM/llama.cpp/Ollama error bodies, nested or flat."""
    err = obj.get("error")
    src: dict[str, Any] = err if isinstance(err, dict) else obj
    message = src.get("message")
    if message is None and isinstance(err, str):
        message = err
    return str(message or ""), str(src.get("type") or ""), str(src.get("code") or "")


def _body_error(obj: dict[str, Any], status: int) -> LLMError:
    """An `error` object inside a 200 body or a stream: classified by its code/type."""
    message, etype, code = _error_fields(obj)
    num = int(code) if code.isdigit() else None
    if num is not None and num != 200:
        return http_error(num, {}, json.dumps(obj).encode())
    low = f"{etype} {code}".lower()
    if "quota" in low:
        reason: ErrorReason = "quota"
    elif "rate" in low:
        reason = "rate_limited"
    elif "invalid_request" in low or "context" in low:
        reason = "bad_request"
    else:
        reason = "server_error"
    return LLMError(reason, message or etype or "error in response", status, code or None)


def http_error(status: int, headers: Any, raw: bytes) -> LLMError:
    """Map a non-200 answer to a reason; the retry wait and `x-should-retry` come along."""
    message, etype, code = "", "", ""
    try:
        obj = json.loads(raw)
        if isinstance(obj, dict):
            message, etype, code = _error_fields(obj)
    except ValueError:
        message = _snippet(raw)
    detail = f"HTTP {status}: {message or _snippet(raw) or 'no body'}"
    retry_after = parse_retry_after(headers)
    should: bool | None = None
    xs = headers.get("x-should-retry") if headers else None
    if xs in ("true", "false"):
        should = xs == "true"
    reason: ErrorReason
    if status == 429:
        quota = "insufficient_quota" in (code, etype)
        reason = "quota" if quota else "rate_limited"
    elif status == 408:
        reason = "timeout"
    elif status == 409 or status >= 500:
        reason = "server_error"
    elif status in (401, 403):
        reason = "auth"
    elif status == 404:
        reason = "not_found"
    else:
        reason = "bad_request"
    return LLMError(reason, detail, status, code or etype or None, retry_after, should)


def _usage(raw: Any) -> Usage:
    if not isinstance(raw, dict):
        return Usage(estimated=True)
    try:
        return Usage(
            prompt_tokens=int(raw.get("prompt_tokens") or 0),
            completion_tokens=int(raw.get("completion_tokens") or 0),
        )
    except (TypeError, ValueError):
        return Usage(estimated=True)


def _complete_usage(u: Usage, request: ChatRequest, content: str) -> Usage:
    """Fill what the server did not report with the chars/4 estimate."""
    prompt, completion, estimated = u.prompt_tokens, u.completion_tokens, u.estimated
    if prompt <= 0:
        prompt, estimated = message_tokens(request.messages), True
    if completion <= 0 and content:
        completion, estimated = estimate_tokens(content), True
    return Usage(prompt_tokens=prompt, completion_tokens=completion, estimated=estimated)
