"""The benchmark harness's own logic (the end-to-end run is `make bench-smoke`, wired in CI).

Fast and timing-free: how scale maps to data, that peak RSS is the contestant's and not
the harness's, and that the answer comparison catches real differences only.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from bench import checks
from bench.data import shape_for
from bench.settings import BENCH_DIR, BenchSettings


def test_growth_adds_days_not_bigger_days() -> None:
    s = BenchSettings()
    one, four = shape_for(1.0, s), shape_for(4.0, s)
    assert one.days == s.base_days and four.days == 4 * s.base_days
    assert four.orders_per_day == one.orders_per_day
    tiny = shape_for(0.002, s)
    assert 3 <= tiny.days < one.days and tiny.orders_per_day < one.orders_per_day


def test_peak_rss_is_the_contestants_not_the_harness(tmp_path: Path) -> None:
    held = bytearray(400 * 2**20)  # the harness holding 400 MB must not show in the child's figure
    out = tmp_path / "usage.json"
    subprocess.run(
        [sys.executable, "-S", str(BENCH_DIR / "launch.py"), str(out), "--", sys.executable, "-c", "pass"], check=True
    )
    usage = json.loads(out.read_text())
    assert usage["exit"] == 0
    assert usage["maxrss_kb"] < 100 * 1024, usage
    subprocess.run(
        [
            sys.executable,
            "-S",
            str(BENCH_DIR / "launch.py"),
            str(out),
            "--",
            sys.executable,
            "-c",
            "x = bytearray(300 * 2**20)",
        ],
        check=True,
    )
    assert 300 * 1024 <= json.loads(out.read_text())["maxrss_kb"] < 400 * 1024
    del held


def test_what_a_contestant_spends_reading_its_figures_back_is_not_timed(tmp_path: Path) -> None:
    """A contestant's `measuring_s` (reading its run's event log back for the breakdown) comes off
    its wall time; the work before it stays in."""
    from bench.measure import run_contestant

    script = tmp_path / "contestant.py"
    script.write_text(
        "import json, sys, time\n"
        "time.sleep(0.6)  # the work\n"
        "began = time.perf_counter()\n"
        "time.sleep(1.5)  # the harness's reading\n"
        "json.dump({'seconds': 0.6, 'measuring_s': time.perf_counter() - began}, open(sys.argv[-1], 'w'))\n"
    )
    m = run_contestant("fake", str(script), [], tmp_path / "fake.result.json", 60, tmp_path / "log")
    assert m.result["measuring_s"] >= 1.5
    assert 0.6 <= m.wall_s < 1.4, m.wall_s  # the process took 2.1 s and more


def _answers(rate: float) -> dict:
    return {"q1": {"columns": ["date", "client_id", "on_time_rate"], "rows": [["2026-01-05", "C01", rate]]}}


def test_answers_equal_up_to_float_noise_only() -> None:
    assert checks.assert_same_answers("a", _answers(0.1 + 0.2), "b", _answers(0.3)) == {"q1": 1}
    with pytest.raises(checks.NotEqual, match="row 0"):
        checks.assert_same_answers("a", _answers(0.3), "b", _answers(0.31))
    with pytest.raises(checks.NotEqual, match="no rows"):
        checks.assert_same_answers("a", {"q1": {"columns": [], "rows": []}}, "b", {"q1": {"columns": [], "rows": []}})


def test_drop_timing_says_why_it_is_skipped_without_the_production_profile(tmp_path: Path, monkeypatch) -> None:
    """`make bench` runs bench/drop.py; with no stack started from this DATA_DIR there is no
    daemon to time, and it says so instead of timing nothing."""
    from bench import drop

    monkeypatch.setenv("DATA_DIR", str(tmp_path / "data"))
    result, latest = tmp_path / "drop.json", tmp_path / "latest.json"
    latest.write_text(json.dumps({"s3_over_local_day": {"value": 1.6}}))
    assert drop.main(["--result", str(result), "--into", str(latest)]) == 0
    why = json.loads(result.read_text())["skipped"]
    assert "not up" in why and "dagster-daemon" in why and "make up" in why
    # the keys are in the bench's results file, saying why they have no value
    keys = json.loads(latest.read_text())
    assert keys["s3_over_local_day"] == {"value": 1.6}
    assert keys["drop_to_warehouse_s"]["value"] is None and keys["drop_to_warehouse_s"]["skipped"] == why
    assert keys["drop_to_champion_s"]["target"] == "<= 90.0" and keys["drop_to_champion_s"]["met"] is None


def test_a_timed_drop_joins_the_results_file_with_its_targets(tmp_path: Path) -> None:
    from bench import drop

    latest = tmp_path / "latest.json"
    drop.merge_into(latest, {"new_day": "2026-11-25", "drop_to_warehouse_s": 50.8, "drop_to_champion_s": 76.3})
    keys = json.loads(latest.read_text())
    assert (keys["drop_to_warehouse_s"]["value"], keys["drop_to_warehouse_s"]["met"]) == (50.8, False)
    assert (keys["drop_to_champion_s"]["value"], keys["drop_to_champion_s"]["met"]) == (76.3, True)
    assert keys["drop_to_champion_s"]["new_day"] == "2026-11-25"
