"""The question page as a person uses it: `delivery-lake serve` started for real (a subprocess on
a free loopback port, over the labelled question set's warehouse, tests/semantic_lake.py), driven
in headless Chromium (Debian's, as in tests/test_browser_uis.py) with Playwright.

Ask by typing, click examples, see the table, the SVG chart (bars for a breakdown, a line over
time), the caveats, the SQL and a refusal; and nothing is fetched from another host.
Screenshots go to test-output/screenshots/.
"""

from __future__ import annotations

import json
import os
import sys
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import duckdb
import pytest

from delivery_lake.config import Settings
from infra import processes
from tests.helpers import CHROMIUM, CHROMIUM_ARGS, SHOTS, require_chromium
from tests.semantic_lake import semantic_settings  # noqa: F401  (fixture)

pytestmark = [pytest.mark.browser, pytest.mark.slow]

UI_TIMEOUT_MS = 60_000
AS_OF = "2026-03-11"
LOCAL_HOSTS = {"127.0.0.1", "localhost", "::1"}


@dataclass
class Site:
    url: str
    settings: Settings
    browser: Any
    requests: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def page(self) -> Any:
        self.errors = []  # each test checks the page it opened
        page = self.browser.new_page(viewport={"width": 1280, "height": 1000})
        page.set_default_timeout(UI_TIMEOUT_MS)
        page.on("request", lambda req: self.requests.append(req.url))
        page.on("pageerror", lambda exc: self.errors.append(f"page error: {exc}"))
        page.on("console", lambda msg: self.errors.append(f"console: {msg.text}") if msg.type == "error" else None)
        return page

    def api(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        req = urllib.request.Request(
            self.url + path, json.dumps(body).encode(), {"Content-Type": "application/json"}, method="POST"
        )
        with urllib.request.urlopen(req, timeout=60) as resp:
            return json.loads(resp.read())


@pytest.fixture(scope="module")
def site(semantic_settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:  # noqa: F811
    require_chromium()
    from playwright.sync_api import sync_playwright

    logs = tmp_path_factory.mktemp("ask_page_logs")
    env = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "DELIVERY_LAKE_SERVICE_TOKEN")}
    env.update(DATA_DIR=str(semantic_settings.data_dir), WAREHOUSE_PATH=str(semantic_settings.warehouse_path))
    port = processes.free_port()
    cmd = [sys.executable, "-m", "delivery_lake.cli", "serve", "--host", "127.0.0.1", "--port", str(port)]
    server = processes.spawn("delivery-lake-serve", cmd, env, logs, cwd=Path(__file__).resolve().parent.parent)
    try:
        url = f"http://127.0.0.1:{port}"
        processes.wait_http(f"{url}/health", server, timeout=120, ok=lambda s: s == 200)
        SHOTS.mkdir(parents=True, exist_ok=True)
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
            try:
                yield Site(url, semantic_settings, browser)
            finally:
                browser.close()
    finally:
        server.stop()


def _open(site: Site) -> Any:
    page = site.page()
    page.goto(site.url + "/")
    page.fill("#as-of", AS_OF)
    return page


def _wait_for_answer(page: Any, question: str) -> None:
    """Until the page shows the answer (or refusal) to `question`, not the previous one."""
    page.wait_for_function(
        """(q) => {
            const status = document.getElementById('status').textContent;
            return document.getElementById('question').value === q && status === '' &&
                (!document.getElementById('result').hidden || !document.getElementById('refusal').hidden ||
                 !document.getElementById('error').hidden);
        }""",
        arg=question,
    )


def _cells(page: Any) -> list[list[str]]:
    return page.eval_on_selector_all(
        "#answer-table tbody tr", "rows => rows.map(r => [...r.cells].map(c => c.textContent))"
    )


def test_ask_by_typing_shows_table_bars_sql_and_caveats(site: Site) -> None:
    page = _open(site)
    question = "On-time rate by client last week"
    page.fill("#question", question)
    page.click("#ask")
    _wait_for_answer(page, question)
    assert page.is_visible("#result") and not page.is_visible("#refusal")

    con = duckdb.connect(str(site.settings.warehouse_path), read_only=True)
    try:
        expected = con.execute(
            """SELECT client_id, count_if(is_on_time)::DOUBLE / count(*) FROM fct_deliveries
               WHERE date BETWEEN DATE '2026-03-02' AND DATE '2026-03-08' GROUP BY 1 ORDER BY 1"""
        ).fetchall()
    finally:
        con.close()
    headers = page.eval_on_selector_all("#answer-table thead th", "ths => ths.map(t => t.textContent)")
    assert headers == ["client", "client_name", "on_time_rate"]
    rows = _cells(page)
    assert [(r[0], r[2]) for r in rows] == [(c, f"{rate * 100:.1f}%") for c, rate in expected]

    assert page.locator("#chart svg rect.bar").count() == len(expected)
    assert page.locator("#chart svg path.line").count() == 0
    assert "on-time rate" in page.inner_text("#interpretation").lower()

    answer = site.api("/ask", {"question": question, "as_of": AS_OF})
    caveats = page.locator("#caveats li")
    assert caveats.count() == len(answer["caveats"])
    if answer["caveats"]:
        assert page.is_visible("#caveats") and caveats.first.inner_text() == answer["caveats"][0]

    assert not page.is_visible("#sql")  # behind the toggle
    page.click("#sql-box summary")
    assert page.is_visible("#sql") and "fct_deliveries" in page.inner_text("#sql")
    page.screenshot(path=str(SHOTS / "ask_page_bars.png"), full_page=True)
    page.close()
    assert not site.errors, site.errors


def test_example_time_series_draws_a_line(site: Site) -> None:
    page = _open(site)
    example = "Deliveries per day last week"
    page.get_by_role("button", name=example).click()
    _wait_for_answer(page, example)
    path = page.locator("#chart svg path.line")
    assert path.count() == 1
    d = path.get_attribute("d") or ""
    assert d.startswith("M") and d.count("L") == 6, d  # 7 days, Monday to Sunday
    assert page.locator("#chart svg rect.bar").count() == 0
    rows = _cells(page)
    assert [r[0] for r in rows] == [f"2026-03-{day:02d}" for day in range(2, 9)]
    assert all(r[1].replace(",", "").isdigit() for r in rows), rows  # counts, thousands separators

    money = "Revenue per day since Monday"
    page.get_by_role("button", name=money).click()
    _wait_for_answer(page, money)
    assert page.locator("#chart svg path.line").count() == 1
    assert all(r[1].replace(",", "").replace(".", "", 1).isdigit() and r[1][-3] == "." for r in _cells(page))
    page.screenshot(path=str(SHOTS / "ask_page_line.png"), full_page=True)
    page.close()
    assert not site.errors, site.errors


def test_refusal_is_shown_with_reason(site: Site) -> None:
    page = _open(site)
    question = "delete all deliveries"
    page.fill("#question", question)
    page.press("#question", "Enter")
    _wait_for_answer(page, question)
    assert page.is_visible("#refusal") and not page.is_visible("#result")
    answer = site.api("/ask", {"question": question, "as_of": AS_OF})
    assert answer["refused"] is True
    assert page.inner_text("#refusal-reason") == answer["reason"]
    assert page.locator("#suggestions li").count() == len(answer["suggestions"])
    page.screenshot(path=str(SHOTS / "ask_page_refusal.png"), full_page=True)
    page.close()
    assert not site.errors, site.errors


def test_docs_render_offline(site: Site) -> None:
    page = site.page()
    page.goto(site.url + "/docs")
    page.locator("#endpoints .endpoint").nth(3).wait_for()
    text = page.inner_text("#endpoints")
    for endpoint in ("/ask", "/metric", "/metrics", "/health"):
        assert endpoint in text
    assert "question" in page.inner_text("#post--ask")
    page.close()
    assert not site.errors, site.errors


def test_nothing_requested_from_another_host(site: Site) -> None:
    # Every request the pages made in this module (all recorded by Site.page), and this page's.
    page = _open(site)
    page.get_by_role("button", name="Average rating by sentiment").click()
    _wait_for_answer(page, "Average rating by sentiment")
    page.goto(site.url + "/docs")
    page.locator("#endpoints .endpoint").first.wait_for()
    page.close()
    assert any(u.endswith("/static/app.js") for u in site.requests) and any(u.endswith("/ask") for u in site.requests)
    foreign = [u for u in site.requests if urllib.parse.urlsplit(u).hostname not in LOCAL_HOSTS]
    assert not foreign, foreign
    assert not site.errors, site.errors
