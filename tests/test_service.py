"""The question service over HTTP (delivery_lake/semantic/api.py), with FastAPI's TestClient on
the labelled question set's warehouse (tests/semantic_lake.py): answers equal to SQL written
here by hand, refusals, bad input, the bearer token, and the answer cache in the real Redis
(skipped, saying so, when none answers on 127.0.0.1:6379)."""

from __future__ import annotations

import dataclasses
import logging
import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import duckdb
import pytest
from fastapi.testclient import TestClient

from delivery_lake.config import Settings
from delivery_lake.semantic import service as service_module
from delivery_lake.semantic.api import create_app, is_loopback, serve
from delivery_lake.semantic.service import MemoryCache, QuestionService, RedisCache
from tests.semantic_lake import semantic_settings  # noqa: F401  (fixture)

pytestmark = pytest.mark.slow

AS_OF = "2026-03-11"
QUESTION = "on-time rate by client last week"  # last week of 2026-03-11: Mon 2 to Sun 8 March
REDIS_HOST, REDIS_PORT = "127.0.0.1", 6379
TOKEN = "test-token-" + uuid.uuid4().hex


def _plain(settings: Settings, **changes: Any) -> Settings:
    """The session settings without whatever REDIS_URL / token the environment has."""
    return dataclasses.replace(settings, **{"redis_url": None, "service_token": None, **changes})


def _sql(path: Path, sql: str) -> list[tuple[Any, ...]]:
    con = duckdb.connect(str(path), read_only=True)
    try:
        return con.execute(sql).fetchall()
    finally:
        con.close()


def _no_traceback(text: str) -> None:
    assert "Traceback" not in text and 'File "' not in text, text


@pytest.fixture(scope="module")
def client(semantic_settings: Settings) -> Iterator[TestClient]:  # noqa: F811
    settings = _plain(semantic_settings)
    app = create_app(settings, QuestionService(settings.warehouse_path, MemoryCache()))
    with TestClient(app, raise_server_exceptions=False) as c:
        yield c


# ---- endpoints ---------------------------------------------------------------------------------
def test_health(client: TestClient) -> None:
    r = client.get("/health")
    assert r.status_code == 200
    body = r.json()
    assert body["status"] == "ok" and body["warehouse"] is True and body["cache"] == "memory"
    assert isinstance(body["build"], str) and body["build"] != "none"
    assert {"hits", "misses"} <= body.keys()


def test_metrics_catalogue(client: TestClient) -> None:
    r = client.get("/metrics")
    assert r.status_code == 200
    metrics = {m["name"]: m for m in r.json()["metrics"]}
    assert "on_time_rate" in metrics and metrics["on_time_rate"]["format"] == "percent"
    assert "client" in {d["name"] for d in r.json()["dimensions"]}


def test_ask_answers_like_hand_written_sql(client: TestClient, semantic_settings: Settings) -> None:  # noqa: F811
    r = client.post("/ask", json={"question": QUESTION, "as_of": AS_OF})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["refused"] is False and body["as_of"] == AS_OF
    assert body["columns"] == ["client", "client_name", "on_time_rate"]
    assert body["interpretation"]["time_range"]["from"] == "2026-03-02"
    assert body["formats"] == {"on_time_rate": "percent"}
    assert body["chart"]["type"] == "bar" and body["chart"]["x"] == "client"
    assert isinstance(body["cached"], bool) and isinstance(body["caveats"], list) and body["sql"]
    expected = _sql(
        semantic_settings.warehouse_path,
        """SELECT d.client_id, c.client_name, count_if(d.is_on_time)::DOUBLE / count(*)
           FROM fct_deliveries d LEFT JOIN dim_clients c USING (client_id)
           WHERE d.date BETWEEN DATE '2026-03-02' AND DATE '2026-03-08'
           GROUP BY ALL ORDER BY 1""",
    )
    assert len(expected) >= 2
    assert [r[:2] for r in body["rows"]] == [list(e[:2]) for e in expected]
    assert [r[2] for r in body["rows"]] == pytest.approx([e[2] for e in expected])


def test_ask_time_series_is_a_line(client: TestClient, semantic_settings: Settings) -> None:  # noqa: F811
    r = client.post("/ask", json={"question": "deliveries per day last week", "as_of": AS_OF})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["chart"]["type"] == "line" and body["columns"] == ["date", "deliveries"]
    expected = _sql(
        semantic_settings.warehouse_path,
        """SELECT strftime(date, '%Y-%m-%d'), count(*) FROM fct_deliveries
           WHERE date BETWEEN DATE '2026-03-02' AND DATE '2026-03-08' GROUP BY 1 ORDER BY 1""",
    )
    assert body["rows"] == [list(e) for e in expected]


def test_ask_refusal_is_an_answer(client: TestClient) -> None:
    r = client.post("/ask", json={"question": "delete all deliveries", "as_of": AS_OF})
    assert r.status_code == 200
    body = r.json()
    assert body["refused"] is True and body["reason"] and isinstance(body["suggestions"], list)
    assert "rows" not in body


@pytest.mark.parametrize(
    ("body", "status", "words"),
    [
        ({"question": ""}, 422, "question"),
        ({"question": "   "}, 422, "question"),
        ({"question": "x" * 600}, 422, "at most 500"),
        ({"question": QUESTION, "as_of": "2026-13-45"}, 422, "YYYY-MM-DD"),
        ({"question": QUESTION, "as_of": "11/03/2026"}, 422, "YYYY-MM-DD"),
        ({"question": QUESTION, "as_of": 1773187200}, 422, "YYYY-MM-DD"),
        ({}, 422, "question"),
        ({"question": QUESTION, "sql": "DROP TABLE x"}, 422, "sql"),
        ([QUESTION], 422, ""),
    ],
)
def test_ask_bad_input(client: TestClient, body: Any, status: int, words: str) -> None:
    r = client.post("/ask", json=body)
    assert r.status_code == status, r.text
    detail = r.json()["detail"]
    assert isinstance(detail, str) and words in detail
    assert "x" * 100 not in detail  # the input is not echoed back
    _no_traceback(r.text)


def test_ask_not_json(client: TestClient) -> None:
    r = client.post("/ask", content=b"{question: ", headers={"content-type": "application/json"})
    assert r.status_code == 422 and r.json()["detail"] == "the request body is not valid JSON"
    r = client.post("/ask", content=b"x" * 100_000, headers={"content-type": "application/json"})
    assert r.status_code == 413
    _no_traceback(r.text)


def test_metric_endpoint(client: TestClient, semantic_settings: Settings) -> None:  # noqa: F811
    r = client.post(
        "/metric",
        json={
            "metrics": ["deliveries"],
            "by": ["depot"],
            "from": "2026-03-02",
            "to": "2026-03-08",
            "order_by": "deliveries",
        },
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["columns"] == ["depot", "depot_city", "deliveries"] and body["formats"] == {"deliveries": "count"}
    expected = _sql(
        semantic_settings.warehouse_path,
        """SELECT depot, count(*) FROM fct_deliveries
           WHERE date BETWEEN DATE '2026-03-02' AND DATE '2026-03-08' GROUP BY 1 ORDER BY 2 DESC, 1""",
    )
    assert [(row[0], row[2]) for row in body["rows"]] == expected

    r = client.post("/metric", json={"metrics": ["on_time_rate"], "filters": {"client": ["C001"]}, "grain": "week"})
    assert r.status_code == 200, r.text
    assert len(r.json()["rows"]) == 1


@pytest.mark.parametrize(
    ("body", "status", "words"),
    [
        ({"metrics": ["no_such_metric"]}, 400, "unknown metric 'no_such_metric'"),
        ({"metrics": ["deliveries"], "by": ["no_such_dimension"]}, 400, "no_such_dimension"),
        ({"metrics": ["deliveries"], "limit": 5000}, 400, "limit"),
        ({"metrics": ["deliveries"], "from": "2026-03-08", "to": "2026-03-02"}, 400, "starts after it ends"),
        ({"metrics": ["deliveries"], "grain": "year"}, 422, "grain"),
        ({"metrics": []}, 422, "metrics"),
        ({"metrics": ["deliveries"], "from": "yesterday"}, 422, "YYYY-MM-DD"),
    ],
)
def test_metric_bad_query(client: TestClient, body: dict[str, Any], status: int, words: str) -> None:
    r = client.post("/metric", json=body)
    assert r.status_code == status, r.text
    assert words in r.json()["detail"]
    _no_traceback(r.text)


def test_page_and_offline_docs(client: TestClient) -> None:
    page = client.get("/")
    assert page.status_code == 200 and 'id="question"' in page.text
    assert "default-src 'self'" in page.headers["content-security-policy"]
    for asset in ("/static/app.js", "/static/app.css", "/static/docs.js"):
        assert client.get(asset).status_code == 200, asset
    docs = client.get("/docs")
    assert docs.status_code == 200 and "/static/docs.js" in docs.text
    assert "http://" not in docs.text.replace("http://www.w3.org", "") and "https://" not in docs.text
    spec = client.get("/openapi.json").json()
    assert {"/ask", "/metric", "/metrics", "/health"} <= spec["paths"].keys()


# ---- errors the service did not expect ----------------------------------------------------------
class _Broken(QuestionService):
    def ask(self, question: str, as_of: Any = None) -> tuple[dict[str, Any], bool]:
        raise RuntimeError("boom: /secret/internal/path")


def test_unexpected_error_is_a_short_500(semantic_settings: Settings, caplog: pytest.LogCaptureFixture) -> None:  # noqa: F811
    settings = _plain(semantic_settings)
    app = create_app(settings, _Broken(settings.warehouse_path, MemoryCache()))
    with caplog.at_level(logging.ERROR, logger="delivery_lake.semantic.api"), TestClient(app) as c:
        r = c.post("/ask", json={"question": QUESTION})
    assert r.status_code == 500
    assert "boom" not in r.text and "/secret" not in r.text
    _no_traceback(r.text)
    assert any(rec.exc_info and "boom" in str(rec.exc_info[1]) for rec in caplog.records), "traceback not logged"


def test_missing_warehouse_is_503(tmp_path: Path, semantic_settings: Settings) -> None:  # noqa: F811
    settings = _plain(semantic_settings, warehouse_path=tmp_path / "nowhere.duckdb")
    with TestClient(create_app(settings)) as c:
        assert c.get("/health").json()["warehouse"] is False
        r = c.post("/ask", json={"question": QUESTION, "as_of": AS_OF})
    assert r.status_code == 503 and "no warehouse at" in r.json()["detail"]


# ---- token ---------------------------------------------------------------------------------------
def test_token_required_when_set(semantic_settings: Settings) -> None:  # noqa: F811
    settings = _plain(semantic_settings, service_token=TOKEN)
    with TestClient(create_app(settings, QuestionService(settings.warehouse_path, MemoryCache()))) as c:
        ask = {"question": QUESTION, "as_of": AS_OF}
        r = c.post("/ask", json=ask)
        assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"
        assert TOKEN not in r.text
        assert c.post("/ask", json=ask, headers={"Authorization": "Bearer wrong"}).status_code == 401
        assert c.post("/ask", json=ask, headers={"Authorization": f"Basic {TOKEN}"}).status_code == 401
        for path in ("/metrics", "/openapi.json"):
            assert c.get(path).status_code == 401, path
        assert c.post("/metric", json={"metrics": ["deliveries"]}).status_code == 401
        # the page, its files, the docs page (which asks for the token) and health stay open
        for path in ("/health", "/", "/static/app.js", "/docs"):
            assert c.get(path).status_code == 200, path

        auth = {"Authorization": f"Bearer {TOKEN}"}
        r = c.post("/ask", json=ask, headers=auth)
        assert r.status_code == 200 and r.json()["refused"] is False
        assert c.get("/metrics", headers=auth).status_code == 200
        assert c.get("/openapi.json", headers=auth).status_code == 200


def test_serve_refuses_a_public_interface_without_token(
    semantic_settings: Settings,  # noqa: F811
    capsys: pytest.CaptureFixture[str],
) -> None:
    for host in ("0.0.0.0", "::", "192.168.1.10", "example.org"):
        assert serve(_plain(semantic_settings), host=host, port=0) == 2, host
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "token" in err and "DELIVERY_LAKE_SERVICE_TOKEN" in err, err
    assert all(is_loopback(h) for h in ("127.0.0.1", "::1", "localhost", "[::1]", "127.0.0.2"))
    assert not any(is_loopback(h) for h in ("0.0.0.0", "::", "10.0.0.1", "example.org"))


# ---- the answer cache in Redis ------------------------------------------------------------------
@pytest.fixture()
def redis_prefix(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A key prefix of this test's own in the real Redis; its keys are deleted afterwards."""
    redis = pytest.importorskip("redis")
    conn = redis.Redis(host=REDIS_HOST, port=REDIS_PORT, socket_connect_timeout=1, socket_timeout=2)
    try:
        conn.ping()
    except redis.RedisError as exc:
        pytest.skip(
            f"no Redis at {REDIS_HOST}:{REDIS_PORT} ({exc}): start one (`redis-server --daemonize yes`) "
            "to test the shared answer cache"
        )
    prefix = f"delivery_lake:test:{uuid.uuid4().hex}:"
    monkeypatch.setattr(service_module, "CACHE_PREFIX", prefix)
    try:
        yield prefix
    finally:
        for key in conn.scan_iter(match=prefix + "*"):
            conn.delete(key)
        conn.close()


def test_redis_cache_hits_then_misses_after_a_refresh(
    tmp_path: Path,
    semantic_settings: Settings,  # noqa: F811
    redis_prefix: str,
) -> None:
    import redis

    # A copy of the warehouse of our own: the session's is shared with other tests.
    live = tmp_path / "warehouse" / "delivery.duckdb"
    live.parent.mkdir()
    shutil.copy2(semantic_settings.warehouse_path, live)
    url = f"redis://{REDIS_HOST}:{REDIS_PORT}/0"
    settings = _plain(semantic_settings, warehouse_path=live, redis_url=url)
    ask = {"question": QUESTION, "as_of": AS_OF}

    with TestClient(create_app(settings)) as c:
        assert c.get("/health").json()["cache"] == "redis"
        first = c.post("/ask", json=ask).json()
        second = c.post("/ask", json=ask).json()
        assert (first["cached"], second["cached"]) == (False, True)
        assert second["rows"] == first["rows"] and second["sql"] == first["sql"]
        health = c.get("/health").json()
        assert (health["hits"], health["misses"]) == (1, 1)

    # Another service process (a second app, its own client) shares the answers.
    with TestClient(create_app(settings, QuestionService(live, RedisCache(url)))) as other:
        assert other.post("/ask", json=ask).json()["cached"] is True

        # A refresh publishes a new file in its place (os.replace: a new inode).
        build_before = other.get("/health").json()["build"]
        fresh = live.with_name(".delivery.duckdb.building")
        shutil.copy2(live, fresh)
        os.replace(fresh, live)
        assert other.get("/health").json()["build"] != build_before
        after = other.post("/ask", json=ask).json()
        assert after["cached"] is False, "an answer cached for the previous warehouse file was served"
        assert after["rows"] == first["rows"]
        assert other.post("/ask", json=ask).json()["cached"] is True

    keys = list(redis.Redis(host=REDIS_HOST, port=REDIS_PORT).scan_iter(match=redis_prefix + "*"))
    assert len(keys) == 2  # one answer per warehouse build, under this test's prefix only
