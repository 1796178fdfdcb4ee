"""The chat-completions client against a real local server: parsing, streaming, timeouts,
retries and the circuit breaker."""

from __future__ import annotations

import asyncio
import json
import socket
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Any

import pytest

from enricher.analysis.config import LLMConfig
from enricher.analysis.llm import (
    ChatClient,
    ChatMessage,
    ChatRequest,
    LLMError,
    http_error,
    message_tokens,
    parse_retry_after,
)
from enricher.analysis.prompt import ANSWER_SCHEMA
from tests.doubles.llm import LLMDouble

MESSAGES = [
    ChatMessage(role="system", content="Task: judgement. Answer in JSON."),
    ChatMessage(role="user", content='<evidence id="log:1" kind="log" source="loki">x</evidence>'),
]


def config(url: str, **kw: Any) -> LLMConfig:
    base: dict[str, Any] = {
        "base_url": f"{url}/v1",
        "model": "m",
        "max_retries": 2,
        "backoff_base": 0.01,
        "backoff_max": 0.05,
        "total_timeout": 5,
        "first_token_timeout": 2,
    }
    base.update(kw)
    return LLMConfig(**base)


def request(stream: bool = False, mode: Any = "json_schema") -> ChatRequest:
    return ChatRequest(
        messages=MESSAGES,
        model="m",
        max_tokens=300,
        stream=stream,
        mode=mode,
        json_schema=ANSWER_SCHEMA,
        schema_name="root_cause_answer",
    )


@pytest.fixture
async def double() -> AsyncIterator[LLMDouble]:
    d = LLMDouble()
    await d.start()
    yield d
    await d.stop()


async def client_for(cfg: LLMConfig) -> ChatClient:
    c = ChatClient(cfg)
    await c.start()
    return c


def deadline(seconds: float) -> float:
    return asyncio.get_running_loop().time() + seconds


async def test_completion_parses_content_and_usage_and_sends_key_and_headers(
    double: LLMDouble,
) -> None:
    c = await client_for(config(double.url, api_key="sk-test", extra_headers={"X-Team": "sre"}))
    try:
        res = await c.complete(request(), deadline(5))
    finally:
        await c.close()
    answer = json.loads(res.content)
    assert answer["hypotheses"][0]["evidence_ids"] == ["log:1"]
    assert not res.streamed and not res.usage.estimated
    assert res.usage.prompt_tokens == message_tokens(MESSAGES)
    assert res.ttft_ms == res.latency_ms
    headers, body = double.headers[0], double.bodies[0]
    assert headers["Authorization"] == "Bearer sk-test" and headers["X-Team"] == "sre"
    assert body["response_format"]["type"] == "json_schema"
    assert body["response_format"]["json_schema"]["strict"] is True
    assert body["max_tokens"] == 300 and body["stream"] is False


async def test_stream_concatenates_deltas_reads_final_usage_and_measures_ttft(
    double: LLMDouble,
) -> None:
    double.behaviour = "slow_stream"
    double.stream_delay = 0.05
    c = await client_for(config(double.url))
    try:
        streamed = await c.complete(request(stream=True), deadline(5))
        double.behaviour = "valid"
        whole = await c.complete(request(stream=False), deadline(5))
    finally:
        await c.close()
    assert streamed.streamed and streamed.content == whole.content
    assert streamed.finish_reason == "stop"
    assert double.bodies[0]["stream_options"] == {"include_usage": True}
    assert not streamed.usage.estimated
    assert streamed.usage.completion_tokens == whole.usage.completion_tokens
    assert streamed.ttft_ms is not None and 0 < streamed.ttft_ms < streamed.latency_ms
    assert streamed.output_tokens_per_s is not None


async def test_missing_usage_is_estimated_from_characters(double: LLMDouble) -> None:
    double.usage = False
    c = await client_for(config(double.url))
    try:
        res = await c.complete(request(stream=True), deadline(5))
    finally:
        await c.close()
    assert res.usage.estimated
    assert res.usage.prompt_tokens == message_tokens(MESSAGES)
    assert res.usage.completion_tokens == (len(res.content) + 3) // 4


async def test_error_object_mid_stream_is_a_server_error(double: LLMDouble) -> None:
    double.behaviour = "stream_error"
    c = await client_for(config(double.url, max_retries=0))
    try:
        with pytest.raises(LLMError) as exc:
            await c.complete(request(stream=True), deadline(5))
    finally:
        await c.close()
    assert exc.value.reason == "server_error" and "model crashed" in exc.value.detail


async def test_429_waits_as_retry_after_ms_says_then_succeeds(double: LLMDouble) -> None:
    double.behaviour = "rate_limited"
    double.retry_after, double.retry_after_ms = "30", "300"  # ms wins over seconds
    c = await client_for(config(double.url))
    try:
        res = await c.complete(request(), deadline(5))
    finally:
        await c.close()
    assert res.retries == 1 and double.calls == 2
    gap = double.arrivals[1] - double.arrivals[0]
    assert 0.25 <= gap < 2.0


async def test_429_waits_as_retry_after_seconds_says(double: LLMDouble) -> None:
    double.behaviour = "rate_limited"
    double.retry_after, double.retry_after_ms = "1", None
    c = await client_for(config(double.url))
    try:
        res = await c.complete(request(), deadline(5))
    finally:
        await c.close()
    assert res.retries == 1
    assert 0.9 <= double.arrivals[1] - double.arrivals[0] < 3.0


async def test_retry_that_would_pass_the_deadline_is_not_made(double: LLMDouble) -> None:
    double.behaviour = "rate_limited"
    double.retry_after, double.retry_after_ms = "5", None
    c = await client_for(config(double.url))
    t0 = time.monotonic()
    try:
        with pytest.raises(LLMError) as exc:
            await c.complete(request(), deadline(1.0))
    finally:
        await c.close()
    assert exc.value.reason == "rate_limited" and "deadline" in exc.value.detail
    assert double.calls == 1 and time.monotonic() - t0 < 0.5


def test_retry_after_headers_ms_first_then_seconds_then_http_date() -> None:
    assert parse_retry_after({"retry-after-ms": "250", "retry-after": "9"}) == 0.25
    assert parse_retry_after({"retry-after": "2.5"}) == 2.5
    now = datetime(2026, 6, 2, 20, 0, tzinfo=UTC)
    date = format_datetime(now + timedelta(seconds=30), usegmt=True)
    assert parse_retry_after({"retry-after": date}, now=now.timestamp()) == pytest.approx(30)
    assert parse_retry_after({"retry-after": "soon"}) is None
    assert parse_retry_after({}) is None


@pytest.mark.parametrize(
    ("status", "reason"),
    [(400, "bad_request"), (401, "auth"), (403, "auth"), (404, "not_found"), (422, "bad_request")],
)
async def test_client_errors_are_not_retried(double: LLMDouble, status: int, reason: str) -> None:
    double.inject("/v1/chat", status=status, body='{"error":{"message":"no"}}')
    c = await client_for(config(double.url))
    try:
        with pytest.raises(LLMError) as exc:
            await c.complete(request(), deadline(5))
    finally:
        await c.close()
    assert exc.value.reason == reason and exc.value.status == status
    assert double.calls == 1


async def test_insufficient_quota_429_is_not_retried(double: LLMDouble) -> None:
    double.behaviour = "quota"
    c = await client_for(config(double.url))
    try:
        with pytest.raises(LLMError) as exc:
            await c.complete(request(), deadline(5))
    finally:
        await c.close()
    assert exc.value.reason == "quota" and double.calls == 1


async def test_5xx_is_retried_with_backoff_then_succeeds(double: LLMDouble) -> None:
    double.script("error_500", "error_500")
    c = await client_for(config(double.url, max_retries=2))
    try:
        res = await c.complete(request(), deadline(5))
    finally:
        await c.close()
    assert res.retries == 2 and double.calls == 3


async def test_5xx_gives_up_after_max_retries(double: LLMDouble) -> None:
    double.behaviour = "error_500"
    c = await client_for(config(double.url, max_retries=1))
    try:
        with pytest.raises(LLMError) as exc:
            await c.complete(request(), deadline(5))
    finally:
        await c.close()
    assert exc.value.reason == "server_error" and exc.value.retries == 1 and double.calls == 2


async def test_connection_refused_is_a_retried_connection_error() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    c = await client_for(config(f"http://127.0.0.1:{port}", max_retries=1))
    try:
        with pytest.raises(LLMError) as exc:
            await c.complete(request(), deadline(5))
    finally:
        await c.close()
    assert exc.value.reason == "connection" and exc.value.retries == 1


async def test_hang_ends_at_the_callers_deadline(double: LLMDouble) -> None:
    double.behaviour = "hang"
    c = await client_for(config(double.url, total_timeout=60))
    t0 = time.monotonic()
    try:
        with pytest.raises(LLMError) as exc:
            await c.complete(request(), deadline(0.4))
    finally:
        await c.close()
    assert exc.value.reason == "timeout"
    assert 0.35 <= time.monotonic() - t0 < 0.9


async def test_total_timeout_bounds_one_attempt(double: LLMDouble) -> None:
    double.behaviour = "hang"
    c = await client_for(config(double.url, total_timeout=0.3, max_retries=0))
    t0 = time.monotonic()
    try:
        with pytest.raises(LLMError) as exc:
            await c.complete(request(), deadline(30))
    finally:
        await c.close()
    assert exc.value.reason == "timeout" and "0.3s" in exc.value.detail
    assert time.monotonic() - t0 < 0.9


async def test_stream_without_a_first_token_ends_at_first_token_timeout(double: LLMDouble) -> None:
    double.behaviour = "hang_stream"
    c = await client_for(config(double.url, first_token_timeout=0.3, max_retries=0))
    t0 = time.monotonic()
    try:
        with pytest.raises(LLMError) as exc:
            await c.complete(request(stream=True), deadline(30))
    finally:
        await c.close()
    assert exc.value.reason == "timeout" and "first token" in exc.value.detail
    assert time.monotonic() - t0 < 0.9


async def test_slow_stream_outlives_first_token_timeout_once_tokens_flow(double: LLMDouble) -> None:
    double.behaviour = "slow_stream"
    double.stream_delay = 0.08  # first token after ~0.16 s, the whole stream ~0.6 s
    c = await client_for(config(double.url, first_token_timeout=0.3, max_retries=0))
    try:
        res = await c.complete(request(stream=True), deadline(5))
    finally:
        await c.close()
    assert res.latency_ms > 300 and res.ttft_ms is not None and res.ttft_ms < 300
    assert json.loads(res.content)["summary"]


async def test_breaker_opens_after_n_failures_fails_fast_then_half_opens(
    double: LLMDouble,
) -> None:
    double.behaviour = "error_500"
    c = await client_for(config(double.url, max_retries=0, breaker_failures=2, breaker_reset=0.3))
    try:
        for _ in range(2):
            with pytest.raises(LLMError):
                await c.complete(request(), deadline(5))
        t0 = time.monotonic()
        with pytest.raises(LLMError) as exc:
            await c.complete(request(), deadline(5))
        assert exc.value.reason == "circuit_open" and time.monotonic() - t0 < 0.05
        assert double.calls == 2
        await asyncio.sleep(0.35)
        # half-open: one trial; it fails, so the breaker opens again at once
        with pytest.raises(LLMError) as exc:
            await c.complete(request(), deadline(5))
        assert exc.value.reason == "server_error" and double.calls == 3
        with pytest.raises(LLMError) as exc:
            await c.complete(request(), deadline(5))
        assert exc.value.reason == "circuit_open" and double.calls == 3
        await asyncio.sleep(0.35)
        double.behaviour = "valid"
        await c.complete(request(), deadline(5))
        assert c.breaker.state == "closed" and double.calls == 4
    finally:
        await c.close()


async def test_a_400_does_not_count_towards_the_breaker(double: LLMDouble) -> None:
    double.inject("/v1/chat", status=400, body='{"error":{"message":"bad"}}')
    c = await client_for(config(double.url, max_retries=0, breaker_failures=1))
    try:
        for _ in range(3):
            with pytest.raises(LLMError) as exc:
                await c.complete(request(), deadline(5))
            assert exc.value.reason == "bad_request"
    finally:
        await c.close()
    assert double.calls == 3 and c.breaker.state == "closed"


def test_error_bodies_of_each_server_family_are_read() -> None:
    openai = json.dumps(
        {"error": {"message": "too long", "type": "invalid_request_error", "code": "ctx_len"}}
    ).encode()
    e = http_error(400, {}, openai)
    assert e.reason == "bad_request" and "too long" in e.detail
    flat = b'{"object":"error","message":"model not loaded","type":"x","code":503}'
    e = http_error(503, {}, flat)
    assert e.reason == "server_error" and e.retryable and "model not loaded" in e.detail
    llamacpp = b'{"error":{"code":503,"message":"Loading model","type":"unavailable_error"}}'
    assert http_error(503, {}, llamacpp).retryable
    e = http_error(500, {"x-should-retry": "false"}, b"oops")
    assert not e.retryable and "oops" in e.detail
    assert http_error(409, {}, b"").retryable and http_error(408, {}, b"").reason == "timeout"
