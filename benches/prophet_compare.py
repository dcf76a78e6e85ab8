#!/usr/bin/env python3
"""Prophet on the same series as `cargo bench --bench forecast` (its sample).

Usage: python3 benches/prophet_compare.py DIR
where DIR is the bench's --out directory (series_<i>.csv, homeostat.json).
Needs `pip install prophet pandas`. Fits Prophet (daily seasonality, default
settings) on each sampled series minus its last hour, forecasts that hour,
and compares fit time and MASE against seasonal naive with homeostat's
numbers for the same series. Prints one JSON object.
"""
import json
import logging
import statistics
import sys
import time
from pathlib import Path

import pandas as pd
from prophet import Prophet

logging.getLogger("cmdstanpy").setLevel(logging.WARNING)
logging.getLogger("prophet").setLevel(logging.WARNING)

DAY = 1440


def mase(y, point, holdout):
    start = len(y) - holdout
    model = sum(abs(y[start + k] - p) for k, p in enumerate(point))
    naive = sum(abs(y[start + k] - y[start + k - DAY]) for k in range(holdout))
    return model / naive


def main():
    out = Path(sys.argv[1])
    ours = json.loads((out / "homeostat.json").read_text())
    holdout = ours["holdout"]
    rows = []
    for entry in ours["sample"]:
        frame = pd.read_csv(out / f"series_{entry['series']}.csv")
        y = frame["value"].tolist()
        ds = pd.Timestamp("2026-01-01") + pd.to_timedelta(frame["minute"], unit="min")
        train = pd.DataFrame({"ds": ds[:-holdout], "y": y[:-holdout]})
        started = time.perf_counter()
        model = Prophet(daily_seasonality=True, weekly_seasonality=False, yearly_seasonality=False)
        model.fit(train)
        future = pd.DataFrame({"ds": ds[-holdout:]})
        point = model.predict(future)["yhat"].tolist()
        seconds = time.perf_counter() - started
        rows.append({
            "series": entry["series"],
            "prophet_seconds": seconds,
            "prophet_mase": mase(y, point, holdout),
            "homeostat_seconds": entry["fit_seconds"],
            "homeostat_mase": entry["mase"],
        })
    median = lambda key: statistics.median(r[key] for r in rows)
    print(json.dumps({
        "series": len(rows),
        "prophet_fit_seconds_median": median("prophet_seconds"),
        "homeostat_fit_seconds_median": median("homeostat_seconds"),
        "speedup_median": median("prophet_seconds") / median("homeostat_seconds"),
        "prophet_mase_median": median("prophet_mase"),
        "homeostat_mase_median": median("homeostat_mase"),
        "per_series": rows,
    }, indent=2))


if __name__ == "__main__":
    main()
