"""The question service over HTTP (`delivery-lake serve`): a FastAPI app and its page.

Endpoints (JSON in, JSON out):
- `POST /ask` `{"question", "as_of"?}`: the answer to a plain-English question, or its
  refusal (HTTP 200 with `refused: true`: a refusal is an answer), plus `cached`;
- `GET /metrics`: the governed metrics and dimensions;
- `POST /metric`: a structured metric query (400 when it cannot be compiled);
- `GET /health`: liveness, the warehouse build and the cache's hit counts (no token needed);
- `GET /`: the page (`static/`), `GET /docs`: the API reference, drawn by a local script from
  `GET /openapi.json` (nothing is loaded from another host: the service runs offline).

Errors are one-line messages in `{"detail": ...}`, never a stack trace: 422 for a request
that does not match its schema, 400 for a query the semantic layer cannot answer, 401 without
the token, 503 when the warehouse cannot be read, 500 (logged here with the traceback) for
anything else. When `settings.service_token` is set, every endpoint but `/health`, the page
and its static files needs `Authorization: Bearer <token>`. The token comes from the settings
only and is never logged or echoed.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import ipaddress
import logging
import re
import sys
from pathlib import Path
from typing import Annotated, Any, Literal

from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, StringConstraints
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from delivery_lake.config import Settings
from delivery_lake.semantic.compiler import MetricQuery
from delivery_lake.semantic.layer import SemanticError
from delivery_lake.semantic.service import QuestionService, make_cache
from delivery_lake.warehouse import WarehouseError

log = logging.getLogger(__name__)

STATIC = Path(__file__).resolve().parent / "static"
MAX_QUESTION = 500
MAX_BODY_BYTES = 64 * 1024
LOOPBACK_NAMES = {"localhost"}
# What the page and the docs may load and reach: this origin only.
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; font-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'"
)
PUBLIC_PATHS = ("/", "/health", "/docs")  # besides /static/: no token needed


# -- request bodies ------------------------------------------------------------------------
def _iso_date(value: Any) -> Any:
    """Only YYYY-MM-DD (pydantic alone would also take a number as a timestamp)."""
    if isinstance(value, dt.date):
        return value
    if isinstance(value, str) and re.fullmatch(r"\d{4}-\d{2}-\d{2}", value):
        try:
            return dt.date.fromisoformat(value)
        except ValueError:
            pass
    raise ValueError("must be a date, YYYY-MM-DD")


IsoDate = Annotated[dt.date, BeforeValidator(_iso_date)]
Name = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=100)]
Value = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]


class AskRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    question: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=MAX_QUESTION)] = Field(
        description="A question in plain English, e.g. 'on-time rate by client last week'."
    )
    as_of: IsoDate | None = Field(None, description="The date 'today' means (YYYY-MM-DD); default: today, UTC.")


class MetricRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    metrics: list[Name] = Field(min_length=1, max_length=20, description="Metric names (GET /metrics).")
    by: list[Name] = Field(default_factory=list, max_length=5, description="Dimensions to break down by.")
    grain: Literal["day", "week", "month"] = "day"
    filters: dict[Name, Annotated[list[Value], Field(min_length=1, max_length=100)]] = Field(
        default_factory=dict, max_length=10, description="Dimension -> allowed keys (any of)."
    )
    from_: IsoDate | None = Field(None, alias="from", description="First date (inclusive).")
    to: IsoDate | None = Field(None, description="Last date (inclusive).")
    order_by: Name | None = Field(None, description="A metric among `metrics` to rank by.")
    descending: bool = True
    limit: int | None = Field(None, description="At most this many rows (1 to 1000).")

    def query(self) -> MetricQuery:
        return MetricQuery(
            metrics=tuple(self.metrics),
            group_by=tuple(self.by),
            grain=self.grain,
            filters=tuple((k, tuple(v)) for k, v in self.filters.items()),
            start=self.from_,
            end=self.to,
            order_by=self.order_by,
            descending=self.descending,
            limit=self.limit,
        )


# -- errors --------------------------------------------------------------------------------
def _detail(status: int, message: str, **headers: str) -> JSONResponse:
    return JSONResponse({"detail": message}, status_code=status, headers=headers or None)


def _validation_message(exc: RequestValidationError) -> str:
    """One readable line per problem, without echoing the input."""
    parts = []
    for err in exc.errors():
        if err.get("type") == "json_invalid":
            parts.append("the request body is not valid JSON")
            continue
        loc = [str(p) for p in err.get("loc", ()) if p != "body"]
        msg = str(err.get("msg", "invalid")).removeprefix("Value error, ")
        if not loc and err.get("type") == "missing":
            parts.append("a JSON body is required")
        else:
            parts.append(f"{'.'.join(loc) or 'body'}: {msg}")
    return "; ".join(dict.fromkeys(parts)) or "invalid request"


class _Guard:
    """Outermost of our middleware: refuses oversized bodies, adds the security headers, and
    turns an unexpected error into a short 500 (the traceback goes to the log, once)."""

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = dict(scope.get("headers") or []).get(b"content-length", b"0")
        if not length.isdigit() or int(length) > MAX_BODY_BYTES:
            await _detail(413, f"request body over {MAX_BODY_BYTES} bytes")(scope, receive, send)
            return
        started = False

        async def send_with_headers(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                headers = list(message.get("headers") or [])
                headers += [
                    (b"content-security-policy", CSP.encode()),
                    (b"x-content-type-options", b"nosniff"),
                    (b"referrer-policy", b"no-referrer"),
                ]
                message = {**message, "headers": headers}
            await send(message)

        try:
            await self.app(scope, receive, send_with_headers)
        except Exception:
            log.exception("unexpected error answering %s %s", scope.get("method"), scope.get("path"))
            if started:
                raise
            response = _detail(500, "internal error: the service could not answer (details in its log)")
            await response(scope, receive, send_with_headers)


# -- the app -------------------------------------------------------------------------------
def create_app(settings: Settings, service: QuestionService | None = None) -> FastAPI:
    """The service's app; `service` defaults to one over `settings.warehouse_path` with the
    cache `settings.redis_url` names (in-process without it)."""
    svc = service or QuestionService(settings.warehouse_path, make_cache(settings.redis_url))
    expected = (settings.service_token or "").encode()
    bearer = HTTPBearer(
        auto_error=False, description="Needed when the service has a token (DELIVERY_LAKE_SERVICE_TOKEN)."
    )

    def require_token(credentials: HTTPAuthorizationCredentials | None = Depends(bearer)) -> None:
        if not expected:
            return
        given = credentials.credentials.encode() if credentials else b""
        if not hmac.compare_digest(given, expected):
            raise HTTPException(
                401, "a valid bearer token is required (Authorization: Bearer <token>)", {"WWW-Authenticate": "Bearer"}
            )

    app = FastAPI(
        title="delivery_lake question service",
        version="1",
        description="Plain-English questions and governed metric queries over the delivery warehouse, read-only.",
        docs_url=None,
        redoc_url=None,
        openapi_url=None,  # served below, behind the token
    )
    app.state.service = svc
    app.add_middleware(_Guard)
    guarded = [Depends(require_token)]

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        return _detail(422, _validation_message(exc))

    @app.exception_handler(SemanticError)
    async def _semantic(_: Request, exc: SemanticError) -> JSONResponse:
        return _detail(400, str(exc))

    @app.exception_handler(WarehouseError)
    async def _warehouse(_: Request, exc: WarehouseError) -> JSONResponse:
        return _detail(503, str(exc).splitlines()[0] if str(exc) else "the warehouse cannot be read")

    @app.get("/health", tags=["service"], summary="Liveness, warehouse build and cache counters (no token)")
    def health() -> dict[str, Any]:
        try:
            build = svc.build()
        except OSError:  # swapped or removed while we looked
            build = "none"
        return {
            "status": "ok",
            "warehouse": svc.warehouse.exists(),
            "build": build if build == "none" else hashlib.sha256(build.encode()).hexdigest()[:12],
            "cache": svc.cache.kind,
            "hits": svc.stats.hits,
            "misses": svc.stats.misses,
        }

    @app.post("/ask", tags=["questions"], summary="Answer a question in plain English", dependencies=guarded)
    def ask(body: AskRequest) -> JSONResponse:
        result, cached = svc.ask(body.question, body.as_of)
        return JSONResponse({**result, "cached": cached})

    @app.get("/metrics", tags=["metrics"], summary="The governed metrics and dimensions", dependencies=guarded)
    def metrics() -> JSONResponse:
        return JSONResponse(svc.catalogue())

    @app.post("/metric", tags=["metrics"], summary="Answer a structured metric query", dependencies=guarded)
    def metric(body: MetricRequest) -> JSONResponse:
        result, cached = svc.metric(body.query())
        return JSONResponse({**result, "cached": cached})

    @app.get("/openapi.json", include_in_schema=False, dependencies=guarded)
    def openapi() -> JSONResponse:
        return JSONResponse(app.openapi())

    @app.get("/docs", include_in_schema=False)
    def docs() -> FileResponse:
        return FileResponse(STATIC / "docs.html")

    @app.get("/", include_in_schema=False)
    def page() -> FileResponse:
        return FileResponse(STATIC / "index.html")

    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    return app


# -- serving -------------------------------------------------------------------------------
def is_loopback(host: str) -> bool:
    if host.strip().lower() in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def serve(settings: Settings, host: str = "127.0.0.1", port: int = 8765) -> int:
    """Run the service with uvicorn until stopped. Anything but the loopback interface needs a
    token: without one, refuse to start (exit code 2)."""
    if not is_loopback(host) and not settings.service_token:
        print(
            f"error: refusing to serve on {host} without a token: set DELIVERY_LAKE_SERVICE_TOKEN "
            "(or bind to 127.0.0.1)",
            file=sys.stderr,
        )
        return 2
    try:
        cache = make_cache(settings.redis_url)
    except Exception as exc:  # the Redis client's connection errors, without the URL (it may hold a password)
        print(f"error: cannot use the Redis cache (REDIS_URL): {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    import uvicorn

    app = create_app(settings, QuestionService(settings.warehouse_path, cache))
    if not settings.warehouse_path.exists():
        print(f"warning: no warehouse at {settings.warehouse_path} yet: questions get 503 until one is built")
    token = "required" if settings.service_token else "not required (loopback only)"
    print(f"serving http://{host}:{port}/ (cache: {cache.kind}; token {token})", flush=True)
    uvicorn.run(app, host=host, port=port, log_level="info", server_header=False)
    return 0
