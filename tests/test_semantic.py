"""The semantic layer without the pipeline: definitions are checked, ratios are right at every
grain, time expressions resolve, and questions are answered or refused on a small warehouse
built here by hand."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import duckdb
import pytest

from delivery_lake.cli import main
from delivery_lake.semantic.compiler import MetricQuery, compile_query
from delivery_lake.semantic.dates import DateError, find_range, parse_date
from delivery_lake.semantic.layer import SemanticError, default, load
from delivery_lake.semantic.service import MemoryCache, QuestionService

AS_OF = dt.date(2026, 3, 11)  # a Wednesday

# Two weeks where the mean of daily on-time rates differs from the weekly rate: Monday 2 March
# has 1 delivery (on time), Tuesday 3 March has 3 (none on time). Week rate 1/4 = 0.25; mean of
# daily rates (1.0 + 0.0) / 2 = 0.5.
DELIVERIES = [
    # delivery_id, client, depot, driver, vehicle, date, status, on_time, minutes, km, priority, value
    ("d1", "C001", "D01", "DR01", "V1", "2026-03-02", "delivered", True, 30.0, 5.0, "standard", 10.00),
    ("d2", "C001", "D01", "DR01", "V1", "2026-03-03", "delivered", False, 90.0, 7.5, "express", 20.00),
    ("d3", "C002", "D02", "DR02", "V2", "2026-03-03", "failed", False, None, 3.0, "standard", 5.50),
    ("d4", "C002", "D02", "DR02", "V2", "2026-03-03", "returned", False, None, 2.5, "same_day", 4.50),
    ("d5", "C001", "D02", "DR02", "V2", "2026-03-10", "delivered", True, 40.0, 4.0, "standard", 12.25),
    ("d6", "C002", "D01", "DR01", "V1", "2026-03-10", "delivered", True, 50.0, 6.0, "express", 8.75),
]


def _warehouse(path: Path) -> Path:
    con = duckdb.connect(str(path))
    con.execute(
        """CREATE TABLE fct_deliveries (delivery_id VARCHAR, client_id VARCHAR, depot VARCHAR, driver_id VARCHAR,
           vehicle_id VARCHAR, date DATE, status VARCHAR, is_on_time BOOLEAN, delivery_minutes DOUBLE,
           distance_km DOUBLE, priority VARCHAR, order_value DECIMAL(12, 2))"""
    )
    con.executemany("INSERT INTO fct_deliveries VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", DELIVERIES)
    con.execute(
        "CREATE TABLE dim_clients AS SELECT * FROM (VALUES ('C001', 'Acme Foods'), ('C002', 'Borealis Books'))"
        " t(client_id, client_name)"
    )
    con.execute(
        "CREATE TABLE dim_depots AS SELECT * FROM"
        " (VALUES ('D01', 'Leeds', 'north', 100), ('D02', 'Bristol', 'south', 50))"
        " t(depot_id, depot_city, depot_region, daily_capacity_parcels)"
    )
    con.execute(
        "CREATE TABLE dim_drivers AS SELECT * FROM (VALUES ('DR01', 'Ann Lee'), ('DR02', 'Bo Chan'))"
        " t(driver_id, driver_name)"
    )
    con.execute(
        "CREATE TABLE dim_vehicles AS SELECT * FROM (VALUES ('V1', 'van'), ('V2', 'cargo_bike'))"
        " t(vehicle_id, vehicle_type)"
    )
    con.execute(
        """CREATE TABLE fct_feedback AS SELECT * FROM (VALUES
           ('f1', 'C001', DATE '2026-03-02', 5, 'positive'), ('f2', 'C001', DATE '2026-03-03', 1, 'negative'),
           ('f3', 'C001', DATE '2026-03-03', 2, 'negative'), ('f4', 'C002', DATE '2026-03-10', 4, NULL))
           t(feedback_id, client_id, date, rating, sentiment)"""
    )
    con.execute(
        """CREATE TABLE agg_depot_daily_load AS SELECT * FROM (VALUES
           (DATE '2026-03-02', 'D01', 'Leeds', 80, 100), (DATE '2026-03-03', 'D01', 'Leeds', 20, 100),
           (DATE '2026-03-03', 'D02', 'Bristol', 60, 50))
           t(date, depot_id, depot_city, parcels, daily_capacity_parcels)"""
    )
    con.execute(
        """CREATE TABLE partition_status AS SELECT * FROM (VALUES
           ('deliveries', DATE '2026-03-03', 'C002', 'blocked', 0, NULL),
           ('deliveries', DATE '2026-03-10', 'C001', 'passed', 0, NULL))
           t(table_name, date, client_id, status, pending_rows, held_in)"""
    )
    con.close()
    return path


@pytest.fixture(scope="module")
def warehouse(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _warehouse(tmp_path_factory.mktemp("semantic") / "delivery.duckdb")


@pytest.fixture()
def service(warehouse: Path) -> QuestionService:
    return QuestionService(warehouse, MemoryCache())


def _rows(service: QuestionService, q: MetricQuery) -> list[list[object]]:
    return service.metric(q)[0]["rows"]


# ---- the layer ------------------------------------------------------------------------------


def test_the_repository_layer_holds_the_governed_metrics() -> None:
    layer = default()
    wanted = {
        "deliveries", "delivered", "failed", "returned", "on_time_rate", "avg_delivery_minutes", "revenue",
        "avg_rating", "negative_feedback", "distance_km", "capacity_utilisation", "late_probability",
    }  # fmt: skip
    assert wanted <= set(layer.metrics)
    assert {"date", "client", "depot", "city", "driver", "priority", "status", "vehicle_type", "sentiment"} <= set(
        layer.dimensions
    )
    assert layer.dimensions["date"].grains == ("day", "week", "month")
    assert "sales" in layer.metrics["revenue"].synonyms and "punctuality" in layer.metrics["on_time_rate"].synonyms
    assert layer.metrics["on_time_rate"].is_ratio and layer.metrics["avg_rating"].is_ratio


@pytest.mark.parametrize(
    ("expr", "message"),
    [
        ("order_value", "must aggregate"),
        ("(SELECT count(*) FROM dim_clients)", "not a query"),
        ("sum(x.order_value)", "own columns"),
        ("sum(", "is not an expression"),
    ],
)
def test_a_metric_that_is_not_a_safe_aggregate_is_refused_naming_file_and_metric(
    tmp_path: Path, expr: str, message: str
) -> None:
    repo = Path(__file__).resolve().parent.parent / "semantic"
    for name in ("models.yaml", "dimensions.yaml"):
        (tmp_path / name).write_text((repo / name).read_text())
    (tmp_path / "metrics.yaml").write_text(
        "metrics:\n  bad:\n    model: deliveries\n    expr: " + json.dumps(expr) + "\n    format: count\n"
    )
    with pytest.raises(SemanticError, match=message) as info:
        load(tmp_path)
    assert "metrics.yaml: metric bad" in str(info.value)


def test_ratios_are_computed_at_the_grain_asked_never_as_a_mean_of_rates(service: QuestionService) -> None:
    weekly = _rows(service, MetricQuery(("on_time_rate", "deliveries"), group_by=("date",), grain="week"))
    assert weekly == [["2026-03-02", 0.25, 4], ["2026-03-09", 1.0, 2]]
    daily = _rows(service, MetricQuery(("on_time_rate",), group_by=("date",), start=dt.date(2026, 3, 2),
                                        end=dt.date(2026, 3, 8)))  # fmt: skip
    mean_of_daily = sum(r[1] for r in daily) / len(daily)
    assert mean_of_daily == 0.5 != weekly[0][1]
    # Averages are weighted by their rows: delivered minutes (30 + 90 + 40 + 50) / 4, not per-day means.
    assert _rows(service, MetricQuery(("avg_delivery_minutes",))) == [[52.5]]
    monthly_rating = _rows(service, MetricQuery(("avg_rating",), group_by=("date",), grain="month"))
    assert monthly_rating == [["2026-03-01", 3.0]]  # (5 + 1 + 2 + 4) / 4
    # Capacity: parcels over capacity summed over the rows, (80 + 20 + 60) / (100 + 100 + 50).
    assert _rows(service, MetricQuery(("capacity_utilisation",))) == [[0.64]]


def test_breakdowns_filters_labels_and_rankings(service: QuestionService) -> None:
    result, _ = service.metric(
        MetricQuery(("revenue",), group_by=("client",), order_by="revenue", descending=True, limit=1)
    )
    assert result["columns"] == ["client", "client_name", "revenue"] and result["rows"] == [
        ["C001", "Acme Foods", 42.25]
    ]
    by_city = _rows(service, MetricQuery(("deliveries",), group_by=("city",), filters=(("vehicle_type", ("van",)),)))
    assert by_city == [["Leeds", 3]]
    # Metrics of two models side by side, joined on the breakdown.
    both = _rows(service, MetricQuery(("deliveries", "avg_rating"), group_by=("client",)))
    assert both == [["C001", "Acme Foods", 3, 8 / 3], ["C002", "Borealis Books", 3, 4.0]]


def test_compile_refuses_what_a_model_cannot_answer() -> None:
    layer = default()
    with pytest.raises(SemanticError, match="no vehicle_type"):
        compile_query(layer, MetricQuery(("avg_rating",), group_by=("vehicle_type",)))
    with pytest.raises(SemanticError, match="unknown metric"):
        compile_query(layer, MetricQuery(("profit",)))
    with pytest.raises(SemanticError, match="starts after it ends"):
        compile_query(layer, MetricQuery(("deliveries",), start=dt.date(2026, 3, 5), end=dt.date(2026, 3, 1)))
    # Values reach SQL as literals, quotes doubled: no way out of the string.
    sql = compile_query(layer, MetricQuery(("deliveries",), filters=(("client", ("x' OR 1=1 --",)),))).sql
    assert "'x'' OR 1=1 --'" in sql


def test_caveats_name_blocked_partitions_in_the_range(service: QuestionService) -> None:
    result, _ = service.metric(MetricQuery(("deliveries",), start=dt.date(2026, 3, 2), end=dt.date(2026, 3, 8)))
    assert any("blocked" in c and "2026-03-03" in c for c in result["caveats"])
    clean, _ = service.metric(MetricQuery(("deliveries",), start=dt.date(2026, 3, 9), end=dt.date(2026, 3, 10)))
    assert not any("blocked" in c for c in clean["caveats"])


# ---- time expressions ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "start", "end"),
    [
        ("deliveries yesterday", "2026-03-10", "2026-03-10"),
        ("deliveries today", "2026-03-11", "2026-03-11"),
        ("revenue last week", "2026-03-02", "2026-03-08"),
        ("revenue this week", "2026-03-09", "2026-03-11"),
        ("revenue last month", "2026-02-01", "2026-02-28"),
        ("revenue in March", "2026-03-01", "2026-03-11"),
        ("revenue in December", "2025-12-01", "2025-12-31"),
        ("since Monday", "2026-03-09", "2026-03-11"),
        ("in the last 7 days", "2026-03-05", "2026-03-11"),
        ("past two weeks", "2026-02-26", "2026-03-11"),
        ("on 5 March", "2026-03-05", "2026-03-05"),
        ("on March 4th", "2026-03-04", "2026-03-04"),
        ("on 2026-02-28", "2026-02-28", "2026-02-28"),
        ("between 2 March and 6 March", "2026-03-02", "2026-03-06"),
        ("from February to March", "2026-02-01", "2026-03-11"),
        ("last Friday", "2026-03-06", "2026-03-06"),
        ("on 29 February 2024", "2024-02-29", "2024-02-29"),
    ],
)
def test_time_expressions_resolve_against_as_of(text: str, start: str, end: str) -> None:
    found, _ = find_range(text, AS_OF)
    assert found is not None and (found.start.isoformat(), found.end.isoformat()) == (start, end)


@pytest.mark.parametrize("text", ["on 30 February", "on 2026-13-45", "on 31 April 2026", "between 6 March and 2 March"])
def test_impossible_dates_are_errors(text: str) -> None:
    with pytest.raises(DateError):
        find_range(text, AS_OF)


def test_a_date_without_year_is_the_latest_one_not_in_the_future() -> None:
    assert parse_date("12 March", AS_OF) == dt.date(2025, 3, 12)
    assert parse_date("11 March", AS_OF) == dt.date(2026, 3, 11)


# ---- questions --------------------------------------------------------------------------------


def _ask(service: QuestionService, question: str) -> dict:
    return service.ask(question, AS_OF)[0]


def test_questions_are_answered_from_the_governed_metrics(service: QuestionService) -> None:
    weekly = _ask(service, "weekly punctuality")
    assert weekly["rows"] == [["2026-03-02", 0.25], ["2026-03-09", 1.0]] and weekly["chart"]["type"] == "line"
    acme = _ask(service, "sales for Acme Foods last week")
    assert acme["rows"] == [[30.0]] and acme["interpretation"]["filters"] == {"client": ["C001 (Acme Foods)"]}
    leeds = _ask(service, "how many deliveries left Leeds?")
    assert leeds["rows"] == [[3]]
    top = _ask(service, "which driver had the most deliveries")
    assert top["rows"] == [["DR01", "Ann Lee", 3]] or top["rows"] == [["DR02", "Bo Chan", 3]]
    assert top["interpretation"]["order"] == {"by": "deliveries", "descending": True, "limit": 1}
    worst = _ask(service, "worst client by on-time rate")
    assert worst["rows"][0][0] == "C002"  # 1 of 3 on time, against C001's 2 of 3
    typo = _ask(service, "punctualty by clinet")
    assert [r[0] for r in typo["rows"]] == ["C001", "C002"]
    caveat = _ask(service, "deliveries last week")
    assert caveat["rows"] == [[4]] and any("blocked" in c for c in caveat["caveats"])
    assert "SELECT" in caveat["sql"] and caveat["interpretation"]["time_range"]["from"] == "2026-03-02"


@pytest.mark.parametrize(
    ("question", "reason"),
    [
        ("delete all deliveries", "never changes data"),
        ("select * from fct_deliveries", "never runs SQL"),
        ("deliveries; drop table dim_clients", "never changes data"),
        ("deliveries for client C999", "'C999'"),
        ("revenue for Zenith Corp", "'zenith'"),
        ("deliveries on 30 February", "not a date"),
        ("deliveries tomorrow", "not forecasts"),
        ("profit by client", "'profit'"),
        ("clients with more than 100 deliveries", "'more'"),
        ("average rating by vehicle type", "no vehicle_type"),
        ("Leeds", "no metric"),
    ],
)
def test_what_cannot_be_answered_is_refused_with_a_reason(service: QuestionService, question: str, reason: str) -> None:
    result = _ask(service, question)
    assert result["refused"] is True and reason in result["reason"], result
    assert "rows" not in result


def test_answers_are_cached_until_the_warehouse_changes(tmp_path: Path) -> None:
    path = _warehouse(tmp_path / "delivery.duckdb")
    service = QuestionService(path, MemoryCache())
    first, cached = service.ask("deliveries by client", AS_OF)
    assert not cached and first["rows"] == [["C001", "Acme Foods", 3], ["C002", "Borealis Books", 3]]
    again, cached = service.ask("deliveries by client", AS_OF)
    assert cached and again == first and service.stats.hits == 1
    # A refresh publishes a new file (written aside, renamed over): the next ask sees it.
    new = tmp_path / "next.duckdb"
    _warehouse(new)
    con = duckdb.connect(str(new))
    con.execute("DELETE FROM fct_deliveries WHERE client_id = 'C002'")
    con.close()
    new.replace(path)
    fresh, cached = service.ask("deliveries by client", AS_OF)
    assert not cached and fresh["rows"] == [["C001", "Acme Foods", 3]]


def test_ask_and_metric_from_the_command_line(
    warehouse: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("WAREHOUSE_PATH", str(warehouse))
    monkeypatch.delenv("REDIS_URL", raising=False)
    assert main(["ask", "on-time rate by client last week", "--as-of", "2026-03-11", "--format", "json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["columns"] == ["client", "client_name", "on_time_rate"]
    assert out["rows"] == [["C001", "Acme Foods", 0.5], ["C002", "Borealis Books", 0.0]]
    assert {"sql", "interpretation", "caveats"} <= set(out)
    assert main(["ask", "drop the deliveries table", "--format", "json"]) == 3
    refused = json.loads(capsys.readouterr().out)
    assert refused["refused"] is True and refused["reason"] and isinstance(refused["suggestions"], list)
    code = main(["metric", "on_time_rate", "--by", "client", "--from", "2026-03-01", "--to", "2026-03-06",
                 "--format", "json"])  # fmt: skip
    assert code == 0
    assert json.loads(capsys.readouterr().out)["rows"] == [["C001", "Acme Foods", 0.5], ["C002", "Borealis Books", 0.0]]
    assert main(["metric", "profit"]) == 2
    assert "unknown metric 'profit'" in capsys.readouterr().err
    assert main(["metrics"]) == 0
    listing = capsys.readouterr().out
    assert "on_time_rate" in listing and "On-time deliveries" in listing and "vehicle_type" in listing


def test_the_marts_docs_read_the_metric_definitions(capsys: pytest.CaptureFixture[str]) -> None:
    import dagster as dg

    from assets.definitions import defs

    assert main(["metrics", "--check-docs"]) == 0, "docs/metrics.md is stale: delivery-lake metrics --write-docs"
    doc = (Path(__file__).resolve().parent.parent / "docs" / "metrics.md").read_text()
    layer = default()
    for m in layer.metrics.values():
        assert f"| `{m.name}` | `{layer.models[m.model].table}` | `{m.definition()}` |" in doc
    described = defs.resolve_asset_graph().get(dg.AssetKey(["curated", "fct_deliveries"])).description or ""
    assert f"`on_time_rate` = {layer.metrics['on_time_rate'].definition()}" in described


def test_ask_from_the_shell_answers_without_an_unreachable_redis(
    warehouse: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("WAREHOUSE_PATH", str(warehouse))
    monkeypatch.setenv("REDIS_URL", "redis://:s3cret@127.0.0.1:1/0")
    assert main(["ask", "deliveries by client", "--as-of", "2026-03-11", "--format", "json"]) == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out)["rows"] == [["C001", "Acme Foods", 3], ["C002", "Borealis Books", 3]]
    assert "Redis cache (REDIS_URL) unavailable" in captured.err and "s3cret" not in captured.err
