"""Contestant `kpi_pandas`: the same KPI answers the way analysts get them today, pandas over the CSVs.

One function per query, the same shape as bench/queries/q*.sql. Generous to pandas: it
reads only the columns it needs (`usecols`).

    python bench/contestants/kpi_pandas.py --inbox DIR --result FILE
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path


def fct_deliveries(inbox: Path):  # type: ignore[no-untyped-def]
    import pandas as pd

    def read(table: str, cols: list[str]) -> pd.DataFrame:
        return pd.concat(
            [pd.read_csv(f, usecols=cols) for f in sorted((inbox / table).glob("*.csv"))], ignore_index=True
        )

    d = read(
        "deliveries", ["delivery_id", "order_id", "client_id", "driver_id", "dispatched_at", "delivered_at", "status"]
    )
    o = read("orders", ["order_id", "promised_by", "pickup_depot_id", "weight_kg"])
    f = d.merge(o, on="order_id", how="inner")
    ts = {c: pd.to_datetime(f[c], utc=True, format="ISO8601") for c in ("dispatched_at", "delivered_at", "promised_by")}
    f["date"] = ts["dispatched_at"].dt.strftime("%Y-%m-%d")
    f["depot"] = f["pickup_depot_id"]
    f["is_on_time"] = (f["status"] == "delivered") & (ts["delivered_at"] <= ts["promised_by"])
    return f


def q1_on_time_rate(f):  # type: ignore[no-untyped-def]
    g = f.groupby(["date", "client_id"], sort=True).agg(
        deliveries=("is_on_time", "size"), on_time=("is_on_time", "sum")
    )
    g["on_time_rate"] = g["on_time"] / g["deliveries"]
    return g.reset_index()[["date", "client_id", "deliveries", "on_time", "on_time_rate"]]


def q2_driver_ranking(f):  # type: ignore[no-untyped-def]
    g = f.groupby("driver_id").agg(deliveries=("is_on_time", "size"), on_time=("is_on_time", "sum")).reset_index()
    g["on_time_rate"] = g["on_time"] / g["deliveries"]
    g["rank"] = g.groupby(["on_time_rate", "deliveries"]).ngroup(ascending=False) + 1
    g = g.sort_values(["rank", "driver_id"])
    return g[["rank", "driver_id", "deliveries", "on_time", "on_time_rate"]]


def q3_depot_load(f):  # type: ignore[no-untyped-def]
    g = f.groupby(["date", "depot"], sort=True).agg(
        deliveries=("delivery_id", "size"), weight_kg=("weight_kg", "sum"), drivers=("driver_id", "nunique")
    )
    g["weight_kg"] = g["weight_kg"].round(3)  # as the warehouse's mart keeps it
    return g.reset_index()[["date", "depot", "deliveries", "weight_kg", "drivers"]]


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--inbox", required=True)
    p.add_argument("--result", required=True)
    a = p.parse_args()

    started = time.perf_counter()
    f = fct_deliveries(Path(a.inbox))
    answers = {}
    for q in (q1_on_time_rate, q2_driver_ranking, q3_depot_load):
        df = q(f)
        answers[q.__name__] = {
            "columns": list(df.columns),
            "rows": json.loads(df.to_json(orient="values", double_precision=15)),
        }
    seconds = time.perf_counter() - started
    Path(a.result).write_text(json.dumps({"seconds": seconds, "answers": answers}))


if __name__ == "__main__":
    main()
