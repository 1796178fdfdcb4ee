"""`POST /api/v1/deploys`: CI/CD tells us what it deployed, so a page can say "deployed 4
minutes before the alert". Authenticated and bounded exactly like the alert intake."""

from __future__ import annotations

from datetime import datetime

from aiohttp import web
from pydantic import ValidationError

from enricher.intake.auth import Authenticator
from enricher.intake.connections import BodyTimeout, read_body, request_timeout_response
from enricher.intake.handler import problems_of
from enricher.sources.deploys import DeployEvent
from enricher.store.base import StoreError
from enricher.store.sqlite import SQLiteStore

MAX_DEPLOY_BODY = 64 * 1024


class DeployIntake:
    def __init__(self, store: SQLiteStore, auth: Authenticator, body_timeout: float = 30.0) -> None:
        self.store = store
        self.auth = auth
        self.body_timeout = body_timeout

    async def handle(self, request: web.Request) -> web.Response:
        if not self.auth.allows(request.headers.get("Authorization")):
            return web.json_response(
                {"error": "unauthorized", "message": "missing or wrong credentials"},
                status=401,
                headers={"WWW-Authenticate": self.auth.challenge},
            )
        if request.content_type != "application/json":
            return web.json_response(
                {"error": "unsupported_media_type", "message": "expected application/json"},
                status=415,
            )
        if (request.content_length or 0) > MAX_DEPLOY_BODY:
            return web.json_response(
                {"error": "too_large", "message": f"over {MAX_DEPLOY_BODY} bytes"}, status=413
            )
        try:
            # The whole body (bounded by the app's client_max_size), not `content.read(n)`,
            # which returns whatever part has arrived.
            body = await read_body(request, self.body_timeout)
        except BodyTimeout as exc:
            return request_timeout_response(exc)
        except web.HTTPRequestEntityTooLarge:
            return web.json_response(
                {"error": "too_large", "message": f"over {MAX_DEPLOY_BODY} bytes"}, status=413
            )
        except web.RequestPayloadError:  # a body its Content-Encoding cannot decode: never 5xx
            resp = web.json_response(
                {
                    "error": "bad_encoding",
                    "message": "the body is not valid for its Content-Encoding",
                },
                status=400,
            )
            request.content.feed_eof()  # see intake.handler._close_after
            resp.force_close()
            return resp
        if len(body) > MAX_DEPLOY_BODY:
            return web.json_response(
                {"error": "too_large", "message": f"over {MAX_DEPLOY_BODY} bytes"}, status=413
            )
        try:
            event = DeployEvent.model_validate_json(body)
        except ValidationError as exc:
            problems = problems_of(exc)
            return web.json_response(
                {
                    "error": "invalid",
                    "message": f"{problems[0]['path']}: {problems[0]['message']}",
                    "problems": problems,
                },
                status=400,
            )
        try:
            deploy_id = await self.store.add_deploy(
                event.service,
                event.environment,
                event.version or "",
                event.commit,
                event.time.timestamp(),
                event.model_dump(mode="json"),
            )
        except StoreError as exc:
            return web.json_response(
                {"error": "store_unavailable", "message": str(exc)}, status=503
            )
        return web.json_response({"status": "recorded", "id": deploy_id}, status=201)


class StoredDeploys:
    """The `DeploySource` the evidence stage reads: deploy events CI posted to us."""

    def __init__(self, store: SQLiteStore) -> None:
        self.store = store

    async def recent(self, service: str, since: datetime, until: datetime) -> list[DeployEvent]:
        docs = await self.store.deploys(service, since.timestamp(), until.timestamp())
        return [DeployEvent.model_validate(d) for d in docs]
