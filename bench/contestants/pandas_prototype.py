"""Contestant `pandas`: the prototype's way, for comparison only (no pandas in the product).

Per fact table: `pd.read_csv` of every whole file, concatenated, a date column from the
partition timestamp, then `to_parquet(partition_cols=["date", "client"])`.

    python bench/contestants/pandas_prototype.py --spec JSON --inbox DIR --out DIR --result FILE
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--spec", required=True)
    p.add_argument("--inbox", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--result", required=True)
    a = p.parse_args()
    import pandas as pd

    spec = json.loads(Path(a.spec).read_text())
    started = time.perf_counter()
    for table, t in spec.items():
        files = sorted((Path(a.inbox) / table).glob("*.csv"))
        df = pd.concat([pd.read_csv(f) for f in files], ignore_index=True)
        df["date"] = pd.to_datetime(df[t["date"]], utc=True, format="ISO8601").dt.strftime("%Y-%m-%d")
        df["client"] = df[t["client"]]
        # pyarrow refuses more than 1,024 partitions per write unless told otherwise.
        df.to_parquet(Path(a.out) / table, partition_cols=["date", "client"], index=False, max_partitions=1_000_000)
        del df
    Path(a.result).write_text(json.dumps({"seconds": time.perf_counter() - started}))
    # The work is done and recorded. pyarrow's thread pools sometimes abort in their C++
    # destructors at interpreter exit ("terminate called without an active exception",
    # SIGABRT) after a large partitioned write; skip the teardown so that does not turn a
    # finished run into a failed one.
    sys.stdout.flush()
    os._exit(0)


if __name__ == "__main__":
    main()
