"""Synthetic delivery feeds that honour the data contract, written day by day.

The generator simulates a parcel carrier: clients place orders, depots dispatch
them, drivers deliver (or fail), recipients leave feedback. It writes the seven
contract tables as CSV in the inbox layout:

    OUT/<dimension>/<dimension>.csv          one snapshot per dimension
    OUT/<fact>/YYYY-MM-DD.csv                one file per fact per UTC day
    OUT/_generator.json                      parameters and summary (not a feed)

Design choices, and why:
- Every day draws from its own RNG stream (`default_rng([seed, day, table])`), so
  output is byte-identical for the same arguments and independent of how many
  days come after.
- Facts are produced in one pass over the days. An order created on D may be
  dispatched on D+1/D+2 and its feedback comes up to 3 days after delivery, so
  only two small buffers (undispatched orders, unsubmitted feedback) are
  carried over: memory is bounded by ~2 days of data whatever `days` is.
- Lateness is drawn from an explicit logistic model on observable features
  (distance, priority, dispatch hour and weekday, depot load, driver tenure,
  client tier), then the timestamps are built to agree with the draw. That
  gives a delay model something real, but noisy, to learn.
- Dirt is injected into a small fraction of fact rows, one kind per row, and
  every injected row is counted in the summary so tests can reconcile.
"""

from __future__ import annotations

import datetime as dt
import io
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import polars as pl

from .contract import (
    CHANNELS,
    EMPLOYMENT_TYPES,
    FAILURE_REASONS,
    FUEL_TYPES,
    INDUSTRIES,
    PRIORITIES,
    REGIONS,
    TABLES,
    TIERS,
    VEHICLE_TYPES,
)

__all__ = ["DIRT_KINDS", "GenerationSummary", "generate"]

TS_FMT = "%Y-%m-%dT%H:%M:%SZ"
DAY = 86_400
HOUR = 3_600
TABLE_INDEX: dict[str, int] = {name: i for i, name in enumerate(TABLES)}
DIM_STREAM = 1_000_000  # RNG "day" slot for dimension snapshots, far from real day indices

DIRT_KINDS: tuple[str, ...] = (
    "bad_timestamp",
    "negative_number",
    "absurd_number",
    "missing_key",
    "duplicate_id",
    "orphan_fk",
    "ragged_line",
    "bad_status",
    "temporal",
    "non_utf8",
)
# customer_feedback has a single timestamp, so no in-row temporal contradiction exists.
FACT_DIRT: dict[str, tuple[str, ...]] = {
    "orders": DIRT_KINDS,
    "deliveries": DIRT_KINDS,
    "customer_feedback": tuple(k for k in DIRT_KINDS if k != "temporal"),
}
BAD_TIMESTAMPS = (
    "2026-02-30T25:61:00Z",
    "yesterday",
    "31/12/2025 10:00",
    "2026-13-01T00:00:00Z",
    "N/A",
    "0000-00-00T00:00:00Z",
)

# Polars writes these private-use characters verbatim and never quotes them, so they
# survive `write_csv` and are swapped for raw bytes afterwards: that is how lines
# that a DataFrame cannot represent (ragged, non-UTF-8) are produced.
TOKEN_EXTRA = "\ue000"  # -> ",extra": one field too many
TOKEN_DROP = "\ue001"  # ",<token>" -> "": one field too few (the token is the whole last field)
TOKEN_E9, TOKEN_E8, TOKEN_E0 = "\ue002", "\ue003", "\ue004"  # Latin-1 é, è, à
_TOKEN_LEAD = b"\xee\x80"  # UTF-8 of U+E000..U+E03F starts with these two bytes
_TOKEN_RAW = {0x80: b",extra", 0x82: b"\xe9", 0x83: b"\xe8", 0x84: b"\xe0"}


def _swap_tokens(data: bytes) -> bytes:
    """Replace the tokens by their raw bytes in one pass (split is C-speed; tokens are rare)."""
    parts = data.split(_TOKEN_LEAD)
    if len(parts) == 1:
        return data
    out = [parts[0]]
    for part in parts[1:]:
        code, rest = part[0], part[1:]
        if code == 0x81:  # TOKEN_DROP: also remove the comma that introduced the field
            out[-1] = out[-1][:-1]
            out.append(rest)
        else:
            out.append(_TOKEN_RAW[code] + rest)
    return b"".join(out)


# (city, region, lat, lon, postcode area); ordered so the first depots are the big hubs
# spread over all regions.
CITIES: tuple[tuple[str, str, float, float, str], ...] = (
    ("London", "south", 51.5074, -0.1278, "E"),
    ("Manchester", "north", 53.4808, -2.2426, "M"),
    ("Birmingham", "central", 52.4862, -1.8904, "B"),
    ("Bristol", "west", 51.4545, -2.5879, "BS"),
    ("Cambridge", "east", 52.2053, 0.1218, "CB"),
    ("Leeds", "north", 53.8008, -1.5491, "LS"),
    ("Glasgow", "north", 55.8642, -4.2518, "G"),
    ("Nottingham", "central", 52.9548, -1.1581, "NG"),
    ("Cardiff", "west", 51.4816, -3.1791, "CF"),
    ("Norwich", "east", 52.6309, 1.2974, "NR"),
    ("Southampton", "south", 50.9097, -1.4044, "SO"),
    ("Edinburgh", "north", 55.9533, -3.1883, "EH"),
    ("Leicester", "central", 52.6369, -1.1398, "LE"),
    ("Liverpool", "north", 53.4084, -2.9916, "L"),
    ("Brighton", "south", 50.8225, -0.1372, "BN"),
    ("Ipswich", "east", 52.0567, 1.1482, "IP"),
    ("Plymouth", "west", 50.3755, -4.1427, "PL"),
    ("Coventry", "central", 52.4068, -1.5197, "CV"),
    ("Newcastle upon Tyne", "north", 54.9783, -1.6178, "NE"),
    ("Reading", "south", 51.4543, -0.9781, "RG"),
    ("Peterborough", "east", 52.5695, -0.2405, "PE"),
    ("Exeter", "west", 50.7184, -3.5339, "EX"),
    ("Sheffield", "north", 53.3811, -1.4701, "S"),
    ("Derby", "central", 52.9225, -1.4746, "DE"),
    ("Portsmouth", "south", 50.8198, -1.0880, "PO"),
    ("Colchester", "east", 51.8959, 0.8919, "CO"),
    ("Swansea", "west", 51.6214, -3.9436, "SA"),
    ("Aberdeen", "north", 57.1497, -2.0943, "AB"),
    ("Stoke-on-Trent", "central", 53.0027, -2.1794, "ST"),
    ("Canterbury", "south", 51.2802, 1.0789, "CT"),
    ("Chelmsford", "east", 51.7356, 0.4685, "CM"),
    ("Gloucester", "west", 51.8642, -2.2382, "GL"),
    ("York", "north", 53.9590, -1.0815, "YO"),
    ("Wolverhampton", "central", 52.5862, -2.1288, "WV"),
    ("Guildford", "south", 51.2362, -0.5704, "GU"),
    ("Luton", "east", 51.8787, -0.4200, "LU"),
    ("Bath", "west", 51.3811, -2.3590, "BA"),
    ("Dundee", "north", 56.4620, -2.9707, "DD"),
    ("Northampton", "central", 52.2405, -0.9027, "NN"),
    ("Bournemouth", "south", 50.7192, -1.8808, "BH"),
    ("Southend-on-Sea", "east", 51.5459, 0.7077, "SS"),
    ("Newport", "west", 51.5842, -2.9977, "NP"),
    ("Hull", "north", 53.7676, -0.3274, "HU"),
    ("Lincoln", "central", 53.2307, -0.5406, "LN"),
    ("Maidstone", "south", 51.2704, 0.5227, "ME"),
    ("Taunton", "west", 51.0150, -3.1029, "TA"),
    ("Preston", "north", 53.7632, -2.7031, "PR"),
    ("Milton Keynes", "central", 52.0406, -0.7594, "MK"),
    ("Worcester", "west", 52.1936, -2.2216, "WR"),
    ("Middlesbrough", "north", 54.5742, -1.2350, "TS"),
    ("Oxford", "central", 51.7520, -1.2577, "OX"),
    ("Truro", "west", 50.2632, -5.0510, "TR"),
    ("Bradford", "north", 53.7950, -1.7594, "BD"),
    ("Inverness", "north", 57.4778, -4.2247, "IV"),
    ("Carlisle", "north", 54.8925, -2.9329, "CA"),
    ("Sunderland", "north", 54.9069, -1.3838, "SR"),
    ("Lancaster", "north", 54.0466, -2.8007, "LA"),
)

# Weekly seasonality (Monday first), mean 1 so `orders_per_day` stays the average.
WEEKDAY_FACTOR = np.array([1.10, 1.08, 1.07, 1.10, 1.12, 0.85, 0.68])
# Orders placed per UTC hour: morning and lunchtime peaks, an evening shopping peak.
HOUR_WEIGHT = np.array(
    [
        0.3,
        0.2,
        0.15,
        0.1,
        0.1,
        0.2,
        0.5,
        1.0,
        1.6,
        2.2,
        2.4,
        2.3,
        2.0,
        2.1,
        2.2,
        2.0,
        1.7,
        1.5,
        1.5,
        1.7,
        1.8,
        1.4,
        0.9,
        0.5,
    ]
)
HOUR_P = HOUR_WEIGHT / HOUR_WEIGHT.sum()
# P(priority | tier); tiers in contract order (enterprise, business, standard).
PRIORITY_P = np.array([[0.65, 0.25, 0.10], [0.75, 0.20, 0.05], [0.85, 0.13, 0.02]])
PAYMENT_METHODS = ("invoice", "card", "prepaid")
PAYMENT_P = np.array([[0.90, 0.05, 0.05], [0.60, 0.25, 0.15], [0.15, 0.60, 0.25]])
TIER_SLA = ((24, 36), (48, 48), (72, 96))  # sla_hours choices per tier

# Lateness model (log-odds). Effects are on the scale a logistic regression recovers.
LATE_INTERCEPT = -3.3
LATE_DIST = 1.4  # per log(distance / 11 km)
LATE_PRIORITY = np.array([0.0, 0.7, 1.8])  # standard, express, same_day
LATE_HOUR = np.array([-0.5] * 6 + [-0.6] * 6 + [0.0] * 4 + [0.7] * 3 + [1.2] * 5)  # by dispatch hour
LATE_WEEKDAY = np.array([-0.1, -0.1, 0.0, 0.15, 0.9, 0.4, 0.2])
LATE_LOAD = 3.5  # per unit of (parcels dispatched / capacity) above 0.9
LATE_NEW_DRIVER = 2.0  # times exp(-tenure_days / 180)
LATE_TIER = np.array([-0.5, 0.0, 0.45])

FAILURE_P = np.array([0.35, 0.18, 0.12, 0.08, 0.12, 0.15])
RETURN_REASONS = np.array([2, 3, 1])  # refused, damaged, address_not_found
RETURN_REASON_P = np.array([0.5, 0.3, 0.2])
PROOFS = ("signature", "photo", "none")
# The outcomes generated, indexed by the status codes drawn below; the contract also allows
# `in_transit` and `canceled`, which only real clients' exports bring.
OUTCOMES = ("delivered", "failed", "returned")
# Rating 1..5 by outcome: on time, late <= 4 h, late > 4 h, failed, returned.
RATING_P = np.array(
    [
        [0.02, 0.03, 0.08, 0.27, 0.60],
        [0.08, 0.14, 0.28, 0.30, 0.20],
        [0.25, 0.25, 0.25, 0.15, 0.10],
        [0.55, 0.25, 0.12, 0.05, 0.03],
        [0.40, 0.25, 0.20, 0.10, 0.05],
    ]
)
FEEDBACK_P = np.array([0.30, 0.25, 0.15])  # share of delivered / failed / returned that get feedback
CHANNEL_P = np.array([0.45, 0.25, 0.20, 0.10])
# Comments by sentiment (ratings 1-2, 3, 4-5). Commas, double quotes and embedded
# newlines are deliberate: they are valid, quoted CSV that the landing must read.
COMMENTS: tuple[tuple[str, ...], ...] = (
    (
        "Late again. Third time this month.",
        'Driver marked it "delivered" but it was not here, had to call support.',
        "Package arrived damaged, contents broken.",
        'Nobody came.\nI waited at home the whole afternoon, then got a "sorry we missed you" card.',
        "Very poor communication, no updates at all",
        "Rude driver, threw the parcel over the fence.",
        "Tracking said out for delivery all day.\nNothing arrived.",
        "Wrong address on the label, parcel went back to the shop",
    ),
    (
        "Arrived on time but the box was a bit dented.",
        "OK, nothing special.",
        'Left at the "safe place", which is fine, but nobody rang the bell.',
        "Delivery window was too wide,\nhad to stay in all day.",
        "Fine, though the tracking page was confusing.",
        "A bit later than promised",
    ),
    (
        "Great service, thank you!",
        "Arrived early and the driver was very polite.",
        'Driver called ahead and left it with "the neighbour at no. 12" as asked.',
        "Perfect.\nWill definitely use again.",
        "Fast delivery, well packed, no complaints.",
        "Quick and friendly",
        'Five stars, "best courier" I have used this year',
        "Tracking was accurate to the minute.",
    ),
)
FIRST_NAMES = (
    "Oliver",
    "Amelia",
    "George",
    "Isla",
    "Harry",
    "Ava",
    "Noah",
    "Mia",
    "Jack",
    "Ivy",
    "Leo",
    "Grace",
    "Arthur",
    "Freya",
    "Muhammad",
    "Lily",
    "Oscar",
    "Ella",
    "Charlie",
    "Sophia",
    "Jacob",
    "Priya",
    "Thomas",
    "Chloe",
    "Aarav",
    "Zofia",
    "Mateusz",
    "Aisha",
    "Daniel",
    "Ruby",
    "Kwame",
    "Siobhan",
)
LAST_NAMES = (
    "Smith",
    "Jones",
    "Taylor",
    "Brown",
    "Williams",
    "Wilson",
    "Johnson",
    "Davies",
    "Patel",
    "Robinson",
    "Wright",
    "Thompson",
    "Evans",
    "Walker",
    "White",
    "Roberts",
    "Green",
    "Hall",
    "Khan",
    "Lewis",
    "Nowak",
    "Murphy",
    "Okafor",
    "Clarke",
    "Singh",
    "Campbell",
    "MacDonald",
    "Hughes",
    "Ali",
    "Kowalski",
)
NAME_PREFIXES = (
    "Northwind",
    "Bluebell",
    "Harbour",
    "Kestrel",
    "Summit",
    "Oakridge",
    "Riverside",
    "Copper",
    "Lumen",
    "Meadow",
    "Granite",
    "Silverline",
    "Foxglove",
    "Beacon",
    "Thistle",
    "Ember",
    "Albion",
    "Marlow",
    "Pennine",
    "Saffron",
    "Cobalt",
    "Hawthorn",
    "Juniper",
    "Wren",
)
INDUSTRY_NOUNS = {
    "retail": ("Stores", "Home & Living", "Outlet"),
    "grocery": ("Fresh", "Grocers", "Pantry"),
    "pharmacy": ("Pharmacy", "Health", "Chemists"),
    "electronics": ("Electronics", "Tech", "Digital"),
    "fashion": ("Apparel", "Boutique", "Threads"),
    "restaurant": ("Kitchen", "Eats", "Bistro Group"),
}


@dataclass
class GenerationSummary:
    """What was written; also serialised (with the parameters) into `_generator.json`."""

    files: list[Path] = field(default_factory=list)  # feed files, in write order
    rows: dict[str, int] = field(default_factory=dict)  # data rows per table (header excluded, dirt included)
    dirty: dict[str, dict[str, int]] = field(default_factory=dict)  # table -> dirt kind -> rows
    bytes_written: int = 0  # bytes of the feed files (not `_generator.json`)
    per_file: dict[str, dict[str, object]] = field(default_factory=dict)  # relative path -> rows, dirty, bytes
    peak_pending: dict[str, int] = field(default_factory=dict)  # largest carried-over buffer, rows


# --------------------------------------------------------------------------- helpers


def _rng(seed: int, day: int, table: str) -> np.random.Generator:
    return np.random.default_rng([seed, day, TABLE_INDEX[table]])


def _cat(
    rng: np.random.Generator, probs: np.ndarray, rows: np.ndarray | None = None, n: int | None = None
) -> np.ndarray:
    """Vectorised categorical draw; `probs` is one distribution or a table indexed by `rows`."""
    cum = np.cumsum(probs, axis=-1)
    cum[..., -1] = 1.0
    if rows is None:
        size = n if n is not None else 0
        return np.searchsorted(cum, rng.random(size), side="right").astype(np.int64)
    u = rng.random(len(rows))
    return (u[:, None] >= cum[rows]).sum(axis=1).astype(np.int64)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def _epoch_day(d: dt.date) -> int:
    return (d - dt.date(1970, 1, 1)).days


def _fmt_ts(expr: pl.Expr) -> pl.Expr:
    return pl.from_epoch(expr, time_unit="s").dt.strftime(TS_FMT)


def _strings(values: tuple[str, ...] | list[str]) -> pl.Series:
    return pl.Series(list(values), dtype=pl.Utf8)


def _width(n: int, minimum: int) -> int:
    return max(minimum, len(str(n)))


def _write(path: Path, df: pl.DataFrame, raw_swaps: bool = False) -> int:
    """Write CSV atomically (tmp + rename, so a watcher never sees half a file)."""
    buf = io.BytesIO()
    df.write_csv(buf)
    data = buf.getvalue()
    if raw_swaps:
        data = _swap_tokens(data)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"_{path.name}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)
    return len(data)


# --------------------------------------------------------------------------- dimensions


@dataclass
class _World:
    """Dimension snapshots plus the lookup arrays the daily simulation needs."""

    tables: dict[str, pl.DataFrame]
    client_ids: pl.Series
    client_tier: np.ndarray
    client_sla: np.ndarray
    client_weight: np.ndarray  # share of orders; 0 for inactive clients
    client_depot_cum: np.ndarray  # flattened `c + cumsum(P(depot | client c))`
    depot_ids: pl.Series
    depot_city: pl.Series
    depot_area: pl.Series
    depot_lat: np.ndarray
    depot_lon: np.ndarray
    depot_capacity: np.ndarray
    driver_ids: pl.Series
    driver_hired: np.ndarray  # epoch days
    drivers_by_depot: np.ndarray
    driver_off: np.ndarray
    driver_cnt: np.ndarray
    vehicle_ids: pl.Series
    vehicles_by_depot: np.ndarray
    vehicle_off: np.ndarray
    vehicle_cnt: np.ndarray
    orphans: dict[str, str]  # ids guaranteed absent from the dimensions, for orphan_fk dirt


def _orphan(prefix: str, width: int, count: int) -> str:
    """An all-nines id (C999, DR9999, ...) beyond every real id and the dirt rows' next id."""
    return prefix + "9" * (width if count + 1 < int("9" * width) else max(width, len(str(count + 1))) + 1)


def _group(depot_of: np.ndarray, n_depots: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    order = np.argsort(depot_of, kind="stable")
    cnt = np.bincount(depot_of, minlength=n_depots)
    off = np.concatenate([[0], np.cumsum(cnt)[:-1]])
    return order, off, cnt


def _build_world(seed: int, start: dt.date, clients: int, orders_per_day: int) -> _World:
    start_day = _epoch_day(start)

    # Depots: one per distinct city; bigger cities first, so capacity follows size.
    rng = _rng(seed, DIM_STREAM, "depots")
    n_dep = min(max(3, clients // 2), len(CITIES))
    cities = CITIES[:n_dep]
    dep_ids = [f"D{i + 1:0{_width(n_dep, 2)}d}" for i in range(n_dep)]
    dep_region = np.array([REGIONS.index(c[1]) for c in cities])
    dep_size = (1.0 / np.sqrt(np.arange(n_dep) + 1.0)) * rng.uniform(0.8, 1.2, n_dep)
    dep_opened = start_day - rng.integers(365, 15 * 365, n_dep)

    # Clients: Zipf-like volumes (a few big shippers, a long tail); tier follows volume.
    rng = _rng(seed, DIM_STREAM, "clients")
    rank = rng.permutation(clients)
    weight = 1.0 / (rank + 1.0) ** 1.1
    active = np.ones(clients, dtype=bool)
    if clients >= 5:
        active = ~((rank >= 3) & (rng.random(clients) < 0.06))
    weight = np.where(active, weight, 0.0)
    weight /= weight.sum()
    tier = np.where(rank < max(1, round(0.1 * clients)), 0, np.where(rank < max(2, round(0.4 * clients)), 1, 2))
    sla = np.array([TIER_SLA[t][int(rng.integers(0, 2))] for t in tier])
    industry = rng.integers(0, len(INDUSTRIES), clients)
    region = dep_region[rng.integers(0, n_dep, clients)]  # a region that has a depot
    onboarded = start_day - rng.integers(30, 8 * 365, clients)
    w_c = _width(clients, 3)
    cl_ids = [f"C{i + 1:0{w_c}d}" for i in range(clients)]
    names: list[str] = []
    seen: set[str] = set()
    for i in range(clients):
        ind = INDUSTRIES[industry[i]]
        name = f"{NAME_PREFIXES[int(rng.integers(len(NAME_PREFIXES)))]} {INDUSTRY_NOUNS[ind][int(rng.integers(3))]}"
        if name in seen:  # keep trading names unique, deterministically
            name = f"{name} {cl_ids[i][1:]}"
        seen.add(name)
        names.append(name)
    emails = [
        None if rng.random() < 0.1 else f"ops@{n.lower().replace(' & ', '-').replace(' ', '-')}.example.co.uk"
        for n in names
    ]
    # Which depots a client ships from: big clients everywhere, small ones locally.
    pdc = np.zeros((clients, n_dep))
    for c in range(clients):
        w = dep_size * np.where(dep_region == region[c], 4.0, 1.0) * rng.uniform(0.5, 1.5, n_dep)
        k = n_dep if tier[c] == 0 else (min(n_dep, 4) if tier[c] == 1 else min(n_dep, 2))
        keep = np.argsort(-w, kind="stable")[:k]
        pdc[c, keep] = w[keep]
        pdc[c] /= pdc[c].sum()
    cum = np.cumsum(pdc, axis=1)
    cum[:, -1] = 1.0
    client_depot_cum = (np.arange(clients)[:, None] + cum).ravel()

    # Capacity ~ expected parcels per day times a margin: some depots run hot on peak days.
    exp_orders = orders_per_day * (weight @ pdc)
    dep_capacity = np.maximum(50, np.round(exp_orders * 2.35 * rng.uniform(0.95, 1.45, n_dep))).astype(np.int64)

    # Drivers: ~30 deliveries per driver-day, attached to depots; a fifth are recent hires.
    rng = _rng(seed, DIM_STREAM, "drivers")
    per_dep = np.maximum(2, np.ceil(exp_orders * 1.15 / 30)).astype(np.int64)
    drv_depot = rng.permutation(np.repeat(np.arange(n_dep), per_dep))
    n_drv = len(drv_depot)
    new = rng.random(n_drv) < 0.2
    tenure = np.where(new, rng.integers(0, 180, n_drv), rng.integers(180, 6 * 365, n_drv))
    drv_hired = start_day - tenure
    w_d = _width(n_drv, 4)
    drv_ids = [f"DR{i + 1:0{w_d}d}" for i in range(n_drv)]
    drv_names = [
        f"{FIRST_NAMES[int(a)]} {LAST_NAMES[int(b)]}"
        for a, b in zip(rng.integers(0, len(FIRST_NAMES), n_drv), rng.integers(0, len(LAST_NAMES), n_drv), strict=True)
    ]
    emp = _cat(rng, np.array([0.7, 0.3]), n=n_drv)
    lic = _cat(rng, np.array([0.6, 0.3, 0.1]), n=n_drv)

    # Vehicles: ~1.1 per driver, mostly vans; capacity and energy follow the type.
    rng = _rng(seed, DIM_STREAM, "vehicles")
    per_dep_v = np.maximum(1, np.ceil(per_dep * 1.1)).astype(np.int64)
    veh_depot = rng.permutation(np.repeat(np.arange(n_dep), per_dep_v))
    n_veh = len(veh_depot)
    vtype = _cat(rng, np.array([0.2, 0.65, 0.15]), n=n_veh)
    cap_lo = np.array([80.0, 600.0, 3500.0])[vtype]
    cap_hi = np.array([180.0, 1500.0, 18000.0])[vtype]
    capacity = np.round(rng.uniform(cap_lo, cap_hi), 1)
    fuel = _cat(rng, np.array([[1.0, 0, 0, 0], [0.3, 0.5, 0.05, 0.15], [0.1, 0.8, 0.0, 0.1]]), rows=vtype)
    registered = start_day - rng.integers(30, 10 * 365, n_veh)
    w_v = _width(n_veh, 4)
    veh_ids = [f"V{i + 1:0{w_v}d}" for i in range(n_veh)]

    def dates(days: np.ndarray) -> pl.Series:
        return pl.Series(days.astype(np.int32)).cast(pl.Date)

    tables = {
        "clients": pl.DataFrame(
            {
                "client_id": cl_ids,
                "name": names,
                "industry": _strings(INDUSTRIES).gather(industry),
                "tier": _strings(TIERS).gather(tier),
                "sla_hours": sla.astype(np.int64),
                "region": _strings(REGIONS).gather(region),
                "onboarded_on": dates(onboarded),
                "contact_email": pl.Series(emails, dtype=pl.Utf8),
                "is_active": active,
            }
        ),
        "depots": pl.DataFrame(
            {
                "depot_id": dep_ids,
                "city": [c[0] for c in cities],
                "region": [c[1] for c in cities],
                "lat": [c[2] for c in cities],
                "lon": [c[3] for c in cities],
                "daily_capacity_parcels": dep_capacity,
                "opened_on": dates(dep_opened),
            }
        ),
        "drivers": pl.DataFrame(
            {
                "driver_id": drv_ids,
                "depot_id": pl.Series(dep_ids).gather(drv_depot),
                "full_name": drv_names,
                "hired_on": dates(drv_hired),
                "employment_type": _strings(EMPLOYMENT_TYPES).gather(emp),
                "license_class": _strings(("B", "C1", "C")).gather(lic),
            }
        ),
        "vehicles": pl.DataFrame(
            {
                "vehicle_id": veh_ids,
                "depot_id": pl.Series(dep_ids).gather(veh_depot),
                "vehicle_type": _strings(VEHICLE_TYPES).gather(vtype),
                "capacity_kg": capacity,
                "fuel_type": _strings(FUEL_TYPES).gather(fuel),
                "registered_on": dates(registered),
            }
        ),
    }
    for name, df in tables.items():
        tables[name] = df.select(TABLES[name].file_columns)

    drv_order, drv_off, drv_cnt = _group(drv_depot, n_dep)
    veh_order, veh_off, veh_cnt = _group(veh_depot, n_dep)
    return _World(
        tables=tables,
        client_ids=pl.Series(cl_ids),
        client_tier=tier,
        client_sla=sla,
        client_weight=weight,
        client_depot_cum=client_depot_cum,
        depot_ids=pl.Series(dep_ids),
        depot_city=pl.Series([c[0] for c in cities]),
        depot_area=pl.Series([c[4] for c in cities]),
        depot_lat=np.array([c[2] for c in cities]),
        depot_lon=np.array([c[3] for c in cities]),
        depot_capacity=dep_capacity,
        driver_ids=pl.Series(drv_ids),
        driver_hired=drv_hired,
        drivers_by_depot=drv_order,
        driver_off=drv_off,
        driver_cnt=drv_cnt,
        vehicle_ids=pl.Series(veh_ids),
        vehicles_by_depot=veh_order,
        vehicle_off=veh_off,
        vehicle_cnt=veh_cnt,
        orphans={
            "client_id": _orphan("C", w_c, clients),
            "pickup_depot_id": _orphan("D", _width(n_dep, 2), n_dep),
            "driver_id": _orphan("DR", w_d, n_drv),
            "vehicle_id": _orphan("V", w_v, n_veh),
        },
    )


def _next_id(ids: pl.Series, prefix: str) -> str:
    """The id after the last one (same width): absent from the snapshot, never referenced."""
    width = len(ids[0]) - len(prefix)
    return f"{prefix}{len(ids) + 1:0{width}d}"


def _dirty_dimensions(world: _World, start: dt.date) -> dict[str, dict[str, int]]:
    """A few bad rows per dimension, appended (not edits) so facts keep valid references."""
    t = world.tables
    drv, veh, cl, dep = t["drivers"], t["vehicles"], t["clients"], t["depots"]
    dup = drv.head(1).with_columns(pl.col("full_name") + pl.lit(" Jr"))  # same key, changed value
    bad_hire = (
        drv.head(1)
        .cast(pl.Utf8)
        .with_columns(
            pl.lit(_next_id(drv["driver_id"], "DR")).alias("driver_id"),
            pl.lit(f"{start.year - 3}-02-30").alias("hired_on"),
        )
    )
    t["drivers"] = pl.concat([drv.cast(pl.Utf8), dup.cast(pl.Utf8), bad_hire])
    t["vehicles"] = pl.concat(
        [
            veh,
            veh.head(1).with_columns(
                pl.lit(_next_id(veh["vehicle_id"], "V")).alias("vehicle_id"), pl.lit(-1200.0).alias("capacity_kg")
            ),
        ]
    )
    t["clients"] = pl.concat(
        [
            cl,
            cl.tail(1).with_columns(
                pl.lit(_next_id(cl["client_id"], "C")).alias("client_id"), pl.lit("platinum").alias("tier")
            ),
        ]
    )
    t["depots"] = pl.concat(
        [
            dep,
            dep.tail(1).with_columns(
                pl.lit(_next_id(dep["depot_id"], "D")).alias("depot_id"), pl.lit(123.45).alias("lat")
            ),
        ]
    )
    return {
        "clients": {"bad_status": 1},
        "depots": {"absurd_number": 1},
        "drivers": {"bad_timestamp": 1, "duplicate_id": 1},
        "vehicles": {"negative_number": 1},
    }


# --------------------------------------------------------------------------- facts


def _orders(
    world: _World, day_idx: int, day: dt.date, seed: int, orders_per_day: int
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Orders created on `day`: (contract frame, hidden simulation frame for dispatch)."""
    rng = _rng(seed, day_idx, "orders")
    day0 = _epoch_day(day) * DAY
    mean = orders_per_day * WEEKDAY_FACTOR[day.weekday()] * np.exp(rng.normal(0.0, 0.05))
    n = int(rng.poisson(mean))
    # Clients run promotions: their share wobbles day to day, which moves depot load.
    cw = world.client_weight * np.exp(rng.normal(0.0, 0.25, len(world.client_weight)))
    client = _cat(rng, cw / cw.sum(), n=n)
    created = np.sort(day0 + _cat(rng, HOUR_P, n=n) * HOUR + rng.integers(0, HOUR, n))
    tier = world.client_tier[client]
    prio = _cat(rng, PRIORITY_P, rows=tier)
    tod = (created - day0) / HOUR
    prio = np.where((prio == 2) & ((tod < 6) | (tod >= 16)), 1, prio)  # no same-day after the cut-off
    n_dep = len(world.depot_capacity)
    depot = np.searchsorted(world.client_depot_cum, client + rng.random(n), side="right") - client * n_dep
    depot = np.minimum(depot, n_dep - 1)

    distance = np.round(np.clip(rng.lognormal(np.log(11.0), 0.75, n), 2.0, 80.0), 2)
    bearing = rng.uniform(0.0, 2 * np.pi, n)
    crow = distance / 1.3  # road distance is longer than the crow flies
    lat0 = world.depot_lat[depot]
    lat = np.round(lat0 + crow * np.cos(bearing) / 111.0, 5)
    lon = np.round(world.depot_lon[depot] + crow * np.sin(bearing) / (111.0 * np.cos(np.radians(lat0))), 5)
    parcels = np.clip(rng.geometric(0.42, n), 1, 10)
    weight = np.round(np.clip(parcels * rng.lognormal(np.log(1.6), 0.8, n), 0.05, 1500.0), 2)
    sla = world.client_sla[client]
    window_h = np.select([prio == 0, prio == 1], [sla, np.clip(sla // 2, 12, 24)], 6 + 2 * tier)
    promised = created + window_h * HOUR
    value = np.array([6.5, 11.0, 19.0])[prio] + 0.3 * distance + 0.25 * weight + 1.2 * (parcels - 1)
    value = np.round(np.clip(value * np.array([0.85, 0.93, 1.0])[tier] * rng.lognormal(0.0, 0.08, n), 1.0, 99_999.0), 2)
    payment = _cat(rng, PAYMENT_P, rows=tier)

    # Dispatch: a share of the window goes to picking. Standard parcels leave in day waves
    # (06:00-21:00, night orders wait for the morning); express and same-day run at night too.
    # With these bounds every order leaves hours before its promise, so lateness comes from
    # the road (the model below), not from an impossible schedule.
    delay_h = np.select(
        [prio == 2, prio == 1],
        [rng.uniform(0.25, 2.0, n), rng.uniform(0.5, 0.3 * window_h)],
        rng.uniform(1.0, 0.4 * window_h),
    )
    dispatch = created + (delay_h * HOUR).astype(np.int64)
    d_day0 = dispatch - dispatch % DAY
    d_hour = (dispatch % DAY) // HOUR
    morning = rng.integers(6 * HOUR, int(8.5 * HOUR), n)
    wave = np.where(d_hour >= 21, d_day0 + DAY + morning, np.where(d_hour < 6, d_day0 + morning, dispatch))
    dispatch = np.where(prio == 0, wave, dispatch)
    cancelled = rng.random(n) < 0.005  # a few orders never leave the depot

    # Per-client running number within the day (ids like O20260105-C001-000001).
    by_client = np.argsort(client, kind="stable")
    sc = client[by_client]
    starts = np.flatnonzero(np.r_[True, sc[1:] != sc[:-1]])
    counts = np.diff(np.r_[starts, n])
    seq = np.empty(n, dtype=np.int64)
    seq[by_client] = np.arange(n) - np.repeat(starts, counts) + 1
    postcode_null = rng.random(n) < 0.02
    district = rng.integers(1, 30, n)
    sector = rng.integers(0, 10, n)
    unit = rng.integers(0, 20, (2, n))
    letters = _strings(list("ABDEFGHJLNPQRSTUWXYZ"))

    stamp = day.strftime("%Y%m%d")
    cid = world.client_ids.gather(client)
    raw = pl.DataFrame(
        {
            "cid": cid,
            "seq": seq,
            "created": created,
            "promised": promised,
            "area": world.depot_area.gather(depot),
            "district": district,
            "sector": sector,
            "u1": letters.gather(unit[0]),
            "u2": letters.gather(unit[1]),
            "pc_null": postcode_null,
        }
    )
    df = raw.select(
        pl.format("O{}-{}-{}", pl.lit(stamp), pl.col("cid"), pl.col("seq").cast(pl.Utf8).str.zfill(6)).alias(
            "order_id"
        ),
        pl.col("cid").alias("client_id"),
        _fmt_ts(pl.col("created")).alias("created_at"),
        _fmt_ts(pl.col("promised")).alias("promised_by"),
        pl.lit(world.depot_ids.gather(depot)).alias("pickup_depot_id"),
        pl.lit(world.depot_city.gather(depot)).alias("dropoff_city"),
        pl.when(~pl.col("pc_null"))
        .then(pl.format("{}{} {}{}{}", "area", "district", "sector", "u1", "u2"))
        .alias("dropoff_postcode"),
        pl.lit(pl.Series(lat)).alias("dropoff_lat"),
        pl.lit(pl.Series(lon)).alias("dropoff_lon"),
        pl.lit(pl.Series(weight)).alias("weight_kg"),
        pl.lit(pl.Series(parcels.astype(np.int64))).alias("parcels"),
        pl.lit(_strings(PRIORITIES).gather(prio)).alias("priority"),
        pl.lit(pl.Series(value)).cast(pl.Decimal(12, 2)).alias("order_value"),
        pl.lit(_strings(PAYMENT_METHODS).gather(payment)).alias("payment_method"),
    )
    keep = ~cancelled
    hidden = pl.DataFrame(
        {
            "order_id": df["order_id"].filter(pl.Series(keep)),
            "client": client[keep].astype(np.int32),
            "depot": depot[keep].astype(np.int32),
            "promised": promised[keep],
            "dispatch": dispatch[keep],
            "prio": prio[keep].astype(np.int8),
            "distance": distance[keep],
            "parcels": parcels[keep].astype(np.int32),
        }
    )
    return df, hidden


def _deliveries(
    world: _World, day_idx: int, day: dt.date, seed: int, batch: pl.DataFrame
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Deliveries dispatched on `day`: (contract frame, feedback candidates with submit time)."""
    rng = _rng(seed, day_idx, "deliveries")
    batch = batch.sort("dispatch", maintain_order=True)
    n = batch.height
    depot = batch["depot"].to_numpy().astype(np.int64)
    client = batch["client"].to_numpy().astype(np.int64)
    dispatch = batch["dispatch"].to_numpy()
    promised = batch["promised"].to_numpy()
    prio = batch["prio"].to_numpy().astype(np.int64)
    distance = batch["distance"].to_numpy()
    parcels = batch["parcels"].to_numpy()
    tier = world.client_tier[client]

    # Depot load: parcels leaving each depot today against its capacity.
    load = (np.bincount(depot, weights=parcels, minlength=len(world.depot_capacity)) / world.depot_capacity)[depot]
    driver = world.drivers_by_depot[
        world.driver_off[depot] + (rng.random(n) * world.driver_cnt[depot]).astype(np.int64)
    ]
    vehicle = world.vehicles_by_depot[
        world.vehicle_off[depot] + (rng.random(n) * world.vehicle_cnt[depot]).astype(np.int64)
    ]
    tenure = dispatch // DAY - world.driver_hired[driver]
    newness = np.exp(-np.maximum(tenure, 0) / 180.0)
    hour = (dispatch % DAY) // HOUR
    weekday = (dispatch // DAY + 3) % 7  # 1970-01-01 was a Thursday
    ldist = np.log(distance / 11.0)
    overload = np.clip(load - 0.9, -0.4, 0.8)

    # Outcome: failures grow with distance, inexperience and overload; returns are flat.
    p_fail = _sigmoid(-3.2 + 0.8 * ldist + 1.6 * newness + 1.5 * overload + 0.4 * (hour >= 17))
    u = rng.random(n)
    status = np.where(u < p_fail, 1, np.where(u < p_fail + 0.03, 2, 0))  # delivered, failed, returned
    logit = (
        LATE_INTERCEPT
        + LATE_DIST * ldist
        + LATE_PRIORITY[prio]
        + LATE_HOUR[hour]
        + LATE_WEEKDAY[weekday]
        + LATE_LOAD * overload
        + LATE_NEW_DRIVER * newness
        + LATE_TIER[tier]
    )
    late = rng.random(n) < _sigmoid(logit)
    travel = 600 + distance / 30.0 * HOUR + rng.uniform(0, 3 * HOUR, n)  # drive + stops before this one
    slack = promised - dispatch
    late = late | (slack <= 900)  # dispatched too close to the deadline: cannot make it
    attempts = (
        np.select(
            [status == 1, status == 2, late],
            [
                _cat(rng, np.array([0.3, 0.4, 0.3]), n=n),
                _cat(rng, np.array([0.5, 0.35, 0.15]), n=n),
                _cat(rng, np.array([0.6, 0.3, 0.1]), n=n),
            ],
            _cat(rng, np.array([0.94, 0.06]), n=n),
        )
        + 1
    )
    on_time_at = dispatch + np.minimum(travel, slack * rng.uniform(0.4, 0.97, n))
    late_at = (
        np.maximum(promised, dispatch + travel)
        + 60
        + rng.exponential(2.5 * HOUR, n)
        + (attempts - 1) * rng.uniform(20 * HOUR, 26 * HOUR, n)
    )
    delivered_at = np.where(late, late_at, on_time_at).astype(np.int64)
    is_delivered = status == 0
    reason = np.where(status == 1, _cat(rng, FAILURE_P, n=n), RETURN_REASONS[_cat(rng, RETURN_REASON_P, n=n)])
    proof = np.where(is_delivered, _cat(rng, np.array([0.45, 0.5, 0.05]), n=n), np.where(rng.random(n) < 0.2, 1, 2))

    stamp = day.strftime("%Y%m%d")
    width = _width(n, 6)
    cid = world.client_ids.gather(client)
    raw = pl.DataFrame(
        {"seq": np.arange(1, n + 1), "dispatch": dispatch, "delivered": delivered_at, "has": is_delivered}
    )
    df = raw.select(
        pl.format("DL{}-{}", pl.lit(stamp), pl.col("seq").cast(pl.Utf8).str.zfill(width)).alias("delivery_id"),
        pl.lit(batch["order_id"]).alias("order_id"),
        pl.lit(cid).alias("client_id"),
        pl.lit(world.driver_ids.gather(driver)).alias("driver_id"),
        pl.lit(world.vehicle_ids.gather(vehicle)).alias("vehicle_id"),
        _fmt_ts(pl.col("dispatch")).alias("dispatched_at"),
        pl.when(pl.col("has")).then(_fmt_ts(pl.col("delivered"))).alias("delivered_at"),
        pl.lit(_strings(OUTCOMES).gather(status)).alias("status"),
        pl.lit(pl.Series(attempts.astype(np.int64))).alias("attempts"),
        pl.lit(pl.Series(distance)).alias("distance_km"),
        pl.lit(_strings(FAILURE_REASONS).gather(reason)).alias("failure_reason"),
        pl.lit(_strings(PROOFS).gather(proof)).alias("proof_of_delivery"),
    ).with_columns(pl.when(pl.lit(pl.Series(~is_delivered))).then(pl.col("failure_reason")).alias("failure_reason"))

    # Feedback: some recipients rate; the outcome (and how late) drives the stars.
    late_h = np.where(is_delivered & late, (delivered_at - promised) / HOUR, 0.0)
    outcome = np.where(status == 1, 3, np.where(status == 2, 4, np.where(~late, 0, np.where(late_h <= 4, 1, 2))))
    wants = rng.random(n) < FEEDBACK_P[status]
    event = np.where(is_delivered, delivered_at, dispatch + travel.astype(np.int64))
    submitted = event + 300 + np.minimum(rng.exponential(10 * HOUR, n), 71 * HOUR).astype(np.int64)
    rating = _cat(rng, RATING_P, rows=outcome) + 1
    mood = np.where(rating <= 2, 0, np.where(rating == 3, 1, 2))
    sizes = np.array([len(c) for c in COMMENTS])
    offsets = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    comment_idx = offsets[mood] + (rng.random(n) * sizes[mood]).astype(np.int64)
    has_comment = rng.random(n) < 0.55
    channel = _cat(rng, CHANNEL_P, n=n)
    flat = pl.Series([c for group in COMMENTS for c in group])
    fb = pl.DataFrame(
        {
            "order_id": batch["order_id"],
            "client": client.astype(np.int32),
            "submitted": submitted,
            "rating": rating.astype(np.int8),
            "comment": flat.gather(comment_idx),
            "has_comment": has_comment,
            "channel": channel.astype(np.int8),
        }
    ).filter(pl.Series(wants))
    fb = fb.with_columns(pl.when(pl.col("has_comment")).then(pl.col("comment")).alias("comment")).drop("has_comment")
    return df, fb


def _feedback(world: _World, day: dt.date, batch: pl.DataFrame) -> pl.DataFrame:
    batch = batch.sort("submitted", maintain_order=True)
    stamp = day.strftime("%Y%m%d")
    width = _width(batch.height, 6)
    return batch.select(
        pl.format("F{}-{}", pl.lit(stamp), (pl.int_range(pl.len()) + 1).cast(pl.Utf8).str.zfill(width)).alias(
            "feedback_id"
        ),
        "order_id",
        pl.lit(world.client_ids.gather(batch["client"].to_numpy().astype(np.int64))).alias("client_id"),
        _fmt_ts(pl.col("submitted")).alias("submitted_at"),
        pl.col("rating").cast(pl.Int64),
        "comment",
        pl.lit(_strings(CHANNELS).gather(batch["channel"].to_numpy().astype(np.int64))).alias("channel"),
    )


# --------------------------------------------------------------------------- dirt


def _set(df: pl.DataFrame, col: str, rows: np.ndarray, values: list[object] | object) -> pl.DataFrame:
    """Overwrite cells; a column becomes text when it must hold a non-conforming value."""
    if len(rows) == 0:
        return df
    s = df[col]
    vals = values if isinstance(values, list) else [values] * len(rows)
    if any(isinstance(v, str) for v in vals) and s.dtype != pl.Utf8:
        s = s.cast(pl.Utf8)
    if s.dtype == pl.Utf8:
        vals = [None if v is None else str(v) for v in vals]
    return df.with_columns(s.scatter(rows.astype(np.int64), vals))


def _inject(
    table: str, df: pl.DataFrame, rng: np.random.Generator, rate: float, counter: list[int], world: _World
) -> tuple[pl.DataFrame, dict[str, int], bool]:
    """Corrupt ~rate of the rows, one kind each, cycling kinds so they stay balanced.

    Returns the frame, counts per kind, and whether raw byte swaps are needed.
    """
    n = df.height
    k = int(rng.binomial(n, rate)) if rate > 0 and n > 1 else 0
    if k == 0:
        return df, {}, False
    kinds_all = FACT_DIRT[table]
    kinds = [kinds_all[(counter[0] + i) % len(kinds_all)] for i in range(k)]
    counter[0] += k
    key = TABLES[table].key
    last_col = TABLES[table].file_columns[-1]

    # Rows eligible for each kind; temporal on deliveries needs a delivered_at to push back.
    perm = rng.permutation(n)
    used = np.zeros(n, dtype=bool)
    eligible_temporal = df["delivered_at"].is_not_null().to_numpy() if table == "deliveries" else np.ones(n, dtype=bool)
    rows: dict[str, list[int]] = {}
    for kind in kinds:
        mask = ~used[perm]
        if kind == "temporal":
            mask &= eligible_temporal[perm]
        if kind == "duplicate_id":
            mask &= perm > 0  # needs an earlier row to copy
        cand = perm[mask]
        if len(cand) == 0:
            continue
        used[cand[0]] = True
        rows.setdefault(kind, []).append(int(cand[0]))
    counts = {kind: len(r) for kind, r in rows.items()}
    idx = {kind: np.array(sorted(r), dtype=np.int64) for kind, r in rows.items()}
    pick = lambda kind, opts: [opts[int(j)] for j in rng.integers(0, len(opts), len(idx[kind]))]  # noqa: E731

    if "bad_timestamp" in idx:
        r = idx["bad_timestamp"]
        part = TABLES[table].partition_column or ""
        other = {"orders": "promised_by", "deliveries": "delivered_at"}.get(table)
        use_other = rng.random(len(r)) < 0.4 if other else np.zeros(len(r), dtype=bool)
        if other == "delivered_at":
            use_other &= df["delivered_at"].gather(r).is_not_null().to_numpy()
        bad = pick("bad_timestamp", BAD_TIMESTAMPS)
        df = _set(df, part, r[~use_other], [b for b, o in zip(bad, use_other, strict=True) if not o])
        if other:
            df = _set(df, other, r[use_other], [b for b, o in zip(bad, use_other, strict=True) if o])
    if "negative_number" in idx:
        r = idx["negative_number"]
        if table == "orders":
            df = _set(df, "weight_kg", r, (-df["weight_kg"].gather(r)).to_list())
        elif table == "deliveries":
            df = _set(df, "distance_km", r, (-df["distance_km"].gather(r)).to_list())
        else:
            df = _set(df, "rating", r, -1)
    if "absurd_number" in idx:
        r = idx["absurd_number"]
        col, val = {
            "orders": ("weight_kg", 999999.0),
            "deliveries": ("distance_km", 99999.0),
            "customer_feedback": ("rating", 42),
        }[table]
        df = _set(df, col, r, val)
    if "missing_key" in idx:
        df = _set(df, key, idx["missing_key"], None)
    if "orphan_fk" in idx:
        r = idx["orphan_fk"]
        cols = {"orders": ("client_id", "pickup_depot_id"), "deliveries": ("driver_id", "vehicle_id", "client_id")}.get(
            table, ("client_id",)
        )
        which = rng.integers(0, len(cols), len(r))
        for j, col in enumerate(cols):
            df = _set(df, col, r[which == j], world.orphans[col])
    if "ragged_line" in idx:
        r = idx["ragged_line"]
        extra = rng.random(len(r)) < 0.5
        cur = df[last_col].gather(r[extra]).to_list()
        df = _set(df, last_col, r[extra], [f"{'' if v is None else v}{TOKEN_EXTRA}" for v in cur])
        df = _set(df, last_col, r[~extra], TOKEN_DROP)
    if "bad_status" in idx:
        r = idx["bad_status"]
        col, opts = {
            "orders": ("priority", ("urgent", "overnight", "STANDARD")),
            # none of them allowed by the contract (in_transit is, since real clients report it)
            "deliveries": ("status", ("lost", "misrouted", "unknown")),
            "customer_feedback": ("channel", ("fax", "pigeon", "phone")),
        }[table]
        df = _set(df, col, r, pick("bad_status", opts))
    if "temporal" in idx:
        r = idx["temporal"]
        if table == "orders":
            base = df["created_at"].gather(r)
            col = "promised_by"
        else:
            base = df["dispatched_at"].gather(r)
            col = "delivered_at"
        secs = base.str.to_datetime(TS_FMT, strict=False).dt.epoch("s").to_numpy()
        back = secs - rng.integers(HOUR // 2, 48 * HOUR, len(r))
        df = _set(df, col, r, pl.from_epoch(pl.Series(back), time_unit="s").dt.strftime(TS_FMT).to_list())
    if "non_utf8" in idx:
        r = idx["non_utf8"]
        if table == "orders":
            cur = df["dropoff_city"].gather(r).to_list()
            df = _set(df, "dropoff_city", r, [f"{v} Cit{TOKEN_E9}" for v in cur])
        elif table == "deliveries":
            df = _set(df, "proof_of_delivery", r, f"sign{TOKEN_E9}")
        else:
            df = _set(df, "comment", r, f"Tr{TOKEN_E8}s bien, livr{TOKEN_E9} {TOKEN_E0} temps")
    if "duplicate_id" in idx:
        # Insert, right after row i, a copy of an earlier row j (< i); half get a changed value.
        r = idx["duplicate_id"]
        clean = np.flatnonzero(~used)  # copy a clean row, so each dirty row carries one defect
        src = np.array([int(clean[rng.integers(0, max(1, np.searchsorted(clean, i)))]) for i in r], dtype=np.int64)
        order = np.insert(np.arange(n), r + 1, src)
        new_pos = r + 1 + np.arange(len(r))  # np.insert keeps the given order; positions shift by one each
        df = df[order]
        change = new_pos[rng.random(len(r)) < 0.5]
        col = {"orders": "parcels", "deliveries": "attempts", "customer_feedback": "rating"}[table]
        picked = df[col].gather(change)
        df = _set(df, col, change, ((picked.cast(pl.Int64, strict=False).fill_null(1) % 3) + 1).to_list())
    raw = "ragged_line" in idx or "non_utf8" in idx
    return df, counts, raw


# --------------------------------------------------------------------------- driver


def generate(
    out: str | Path,
    start: dt.date,
    days: int,
    clients: int,
    orders_per_day: int = 1500,
    seed: int = 7,
    dirty_rate: float = 0.002,
    progress: bool = True,
) -> GenerationSummary:
    """Write the seven feeds for `days` days from `start` under `out`; see the module doc."""
    if days < 0 or clients < 1 or orders_per_day < 0 or seed < 0:
        raise ValueError("days >= 0, clients >= 1, orders_per_day >= 0 and seed >= 0 are required")
    if not 0.0 <= dirty_rate <= 0.5:
        raise ValueError("dirty_rate must be within [0, 0.5]")
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    summary = GenerationSummary(
        rows={t: 0 for t in TABLES}, dirty={t: {} for t in TABLES}, peak_pending={"orders": 0, "customer_feedback": 0}
    )
    world = _build_world(seed, start, clients, orders_per_day)
    dim_dirt = _dirty_dimensions(world, start) if dirty_rate > 0 else {}

    def record(table: str, path: Path, rows: int, dirt: dict[str, int], size: int) -> None:
        summary.files.append(path)
        summary.rows[table] += rows
        for kind, c in dirt.items():
            summary.dirty[table][kind] = summary.dirty[table].get(kind, 0) + c
        summary.bytes_written += size
        summary.per_file[path.relative_to(out).as_posix()] = {
            "table": table,
            "rows": rows,
            "dirty": dict(sorted(dirt.items())),
            "bytes": size,
        }

    for table in ("clients", "depots", "drivers", "vehicles"):
        df = world.tables[table]
        path = out / table / f"{table}.csv"
        record(table, path, df.height, dim_dirt.get(table, {}), _write(path, df))

    pending = pl.DataFrame(
        schema={
            "order_id": pl.Utf8,
            "client": pl.Int32,
            "depot": pl.Int32,
            "promised": pl.Int64,
            "dispatch": pl.Int64,
            "prio": pl.Int8,
            "distance": pl.Float64,
            "parcels": pl.Int32,
        }
    )
    pending_fb = pl.DataFrame(
        schema={
            "order_id": pl.Utf8,
            "client": pl.Int32,
            "submitted": pl.Int64,
            "rating": pl.Int8,
            "comment": pl.Utf8,
            "channel": pl.Int8,
        }
    )
    counters = {t: [0] for t in FACT_DIRT}  # running kind cycle per table, carried across days

    columns = [
        TextColumn("[bold]generating[/] {task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
    ]
    with Progress(*columns, disable=not progress, transient=False) as bar:
        task = bar.add_task("days", total=days)
        for i in range(days):
            day = start + dt.timedelta(days=i)
            day_end = (_epoch_day(day) + 1) * DAY
            bar.update(task, description=day.isoformat())

            orders, hidden = _orders(world, i, day, seed, orders_per_day)
            pending = pl.concat([pending, hidden])
            due = pending["dispatch"] < day_end
            batch, pending = pending.filter(due), pending.filter(~due)
            summary.peak_pending["orders"] = max(summary.peak_pending["orders"], pending.height)
            deliveries, fb_new = _deliveries(world, i, day, seed, batch)
            pending_fb = pl.concat([pending_fb, fb_new])
            due = pending_fb["submitted"] < day_end
            fb_batch, pending_fb = pending_fb.filter(due), pending_fb.filter(~due)
            summary.peak_pending["customer_feedback"] = max(
                summary.peak_pending["customer_feedback"], pending_fb.height
            )
            feedback = _feedback(world, day, fb_batch)

            for table, df in (("orders", orders), ("deliveries", deliveries), ("customer_feedback", feedback)):
                rng = np.random.default_rng([seed, i, TABLE_INDEX[table], 1])  # dirt stream, apart from the data
                df, dirt, raw = _inject(table, df, rng, dirty_rate, counters[table], world)
                path = out / table / f"{day.isoformat()}.csv"
                record(table, path, df.height, dirt, _write(path, df, raw_swaps=raw))
            bar.advance(task)

    summary.dirty = {t: dict(sorted(d.items())) for t, d in summary.dirty.items()}
    meta = {
        "generator": "delivery_lake.generator",
        "parameters": {
            "start": start.isoformat(),
            "days": days,
            "clients": clients,
            "orders_per_day": orders_per_day,
            "seed": seed,
            "dirty_rate": dirty_rate,
        },
        "rows": summary.rows,
        "dirty": summary.dirty,
        "bytes_written": summary.bytes_written,
        "peak_pending": summary.peak_pending,
        "files": summary.per_file,
    }
    (out / "_generator.json").write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    return summary
