"""The data contract of the seven delivery feeds.

This module is the single source of truth: the landing builds its typing and
quarantine SQL from it, the generator writes its columns in this order, and
`docs/contract.md` is rendered from it (a test fails if the document drifts).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

DType = Literal["string", "int", "float", "decimal", "bool", "date", "timestamp"]

# DuckDB types the landing casts to. Timestamps are UTC instants (TIMESTAMPTZ,
# written to Parquet as isAdjustedToUTC=true) so every engine reads them alike.
DUCKDB_TYPES: dict[str, str] = {
    "string": "VARCHAR",
    "int": "BIGINT",
    "float": "DOUBLE",
    "decimal": "DECIMAL(12,2)",
    "bool": "BOOLEAN",
    "date": "DATE",
    "timestamp": "TIMESTAMPTZ",
}


@dataclass(frozen=True)
class Column:
    name: str
    dtype: DType
    description: str
    nullable: bool = False
    min: float | None = None
    max: float | None = None
    allowed: tuple[str, ...] | None = None
    # (table, column) of the parent key, checked at landing: a dimension parent must be
    # there (else `orphan:<column>`); a fact parent may come later (the row waits as pending).
    references: tuple[str, str] | None = None
    # A file may leave the column out of its header: every row of that file reads NULL. Only for
    # nullable columns added after files in the old layout existed (our own exports stay valid).
    header_optional: bool = False

    @property
    def duckdb_type(self) -> str:
        return DUCKDB_TYPES[self.dtype]


@dataclass(frozen=True)
class Rule:
    """A row rule across columns, as a DuckDB boolean expression over typed columns.

    A row violates the rule when the expression is FALSE (NULL counts as passing,
    so nullability stays the job of `Column.nullable`).
    """

    name: str
    sql: str
    description: str


@dataclass(frozen=True)
class Table:
    name: str
    kind: Literal["dimension", "fact"]
    description: str
    key: str
    columns: tuple[Column, ...]
    rules: tuple[Rule, ...] = ()
    # Facts only: the timestamp whose UTC date is the `date` partition.
    partition_column: str | None = None
    client_column: str | None = None

    @property
    def is_fact(self) -> bool:
        return self.kind == "fact"

    @property
    def column_names(self) -> list[str]:
        return [c.name for c in self.columns]

    @property
    def file_columns(self) -> list[str]:
        """The columns every file's header must carry (all but the header-optional ones)."""
        return [c.name for c in self.columns if not c.header_optional]

    def column(self, name: str) -> Column:
        for c in self.columns:
            if c.name == name:
                return c
        raise KeyError(f"{self.name} has no column {name!r}")

    @property
    def parents(self) -> list[str]:
        """Tables whose keys this one references (deduplicated, in column order)."""
        seen: list[str] = []
        for c in self.columns:
            if c.references and c.references[0] not in seen and c.references[0] != self.name:
                seen.append(c.references[0])
        return seen


def _col(name: str, dtype: DType, description: str, **kw: object) -> Column:
    return Column(name=name, dtype=dtype, description=description, **kw)  # type: ignore[arg-type]


REGIONS = ("north", "south", "east", "west", "central")
TIERS = ("enterprise", "business", "standard")
INDUSTRIES = ("retail", "grocery", "pharmacy", "electronics", "fashion", "restaurant")
PRIORITIES = ("standard", "express", "same_day")
# `in_transit` and `canceled` come from real clients' exports (an e-commerce client reports
# orders still with the carrier, and orders canceled after they were handed over); the
# generator produces only the three final outcomes (generator.OUTCOMES).
STATUSES = ("delivered", "failed", "returned", "in_transit", "canceled")
FAILURE_REASONS = (
    "customer_absent",
    "address_not_found",
    "refused",
    "damaged",
    "vehicle_issue",
    "weather",
)
VEHICLE_TYPES = ("cargo_bike", "van", "truck")
FUEL_TYPES = ("electric", "diesel", "petrol", "hybrid")
EMPLOYMENT_TYPES = ("employee", "contractor")
CHANNELS = ("app", "email", "sms", "web")

# How a client's parcels travel, declared per client (`clients.operations`; empty = own_fleet).
# A client that hands its parcels to a carrier has no courier, vehicle or route of ours: for its
# rows the columns below may be empty (instead of a stand-in value that a mart would count as a
# courier or average as a distance). Everything else, and every rule, holds for it as for any client.
OPERATIONS = ("own_fleet", "carrier")
CARRIER_OPTIONAL: dict[str, tuple[str, ...]] = {"deliveries": ("driver_id", "vehicle_id", "distance_km")}

# Every table's last column: which of the row's columns hold a stand-in rather than a measured
# value (';'-separated column names). A source mapping (sources/*.yaml) sets it where a client's
# export lacks a column the contract requires; our own feeds leave it out (header-optional).
# The marts carry it and leave stand-in measures out of sums and means.
PLACEHOLDERS = "placeholder_columns"


def _placeholders() -> Column:
    return Column(
        PLACEHOLDERS,
        "string",
        "Columns of this row holding a stand-in, not a measured value (';'-separated), set by a "
        "source mapping; empty for measured rows.",
        nullable=True,
        header_optional=True,
    )


def optional_for_carrier(table: str, column: str) -> bool:
    """Whether `column` of `table` may be empty for a client whose operations are `carrier`."""
    return column in CARRIER_OPTIONAL.get(table, ())


CLIENTS = Table(
    name="clients",
    kind="dimension",
    description="Shippers that contract deliveries; one row per client (snapshot).",
    key="client_id",
    columns=(
        _col("client_id", "string", "Client key, e.g. C001."),
        _col("name", "string", "Trading name."),
        _col("industry", "string", "Industry segment.", allowed=INDUSTRIES),
        _col("tier", "string", "Commercial tier; drives the SLA.", allowed=TIERS),
        # 2160 h = 90 days: e-commerce clients promise weeks, not days (the Olist export's median
        # promise is ~559 h); a bound still catches minutes or days typed as hours.
        _col("sla_hours", "int", "Contracted hours from order to delivery.", min=1, max=2160),
        _col("region", "string", "Home region.", allowed=REGIONS),
        _col("onboarded_on", "date", "Contract start date."),
        _col("contact_email", "string", "Operations contact.", nullable=True),
        _col("is_active", "bool", "Whether the contract is live."),
        _col(
            "operations",
            "string",
            "How its parcels travel: own_fleet (our couriers; the default when empty) or carrier "
            "(handed to a carrier: its deliveries may leave driver_id, vehicle_id and distance_km empty).",
            nullable=True,
            allowed=OPERATIONS,
            header_optional=True,
        ),
        _placeholders(),
    ),
    rules=(
        # Client ids name lake folders (client=<id>) and Dagster partitions: a '/' or '..'
        # would reach outside the partition, other characters would be escaped differently
        # by each writer.
        Rule(
            "client_id_path_safe",
            "regexp_full_match(client_id, '[A-Za-z0-9][A-Za-z0-9_.-]{0,63}')",
            "Letters, digits, '_', '.', '-' (at most 64, starting with a letter or digit).",
        ),
    ),
)

DEPOTS = Table(
    name="depots",
    kind="dimension",
    description="Cross-dock depots orders are picked up from; one row per depot.",
    key="depot_id",
    columns=(
        _col("depot_id", "string", "Depot key, e.g. D01."),
        _col("city", "string", "City the depot serves."),
        _col("region", "string", "Region.", allowed=REGIONS),
        _col("lat", "float", "Latitude (WGS84).", min=-90, max=90),
        _col("lon", "float", "Longitude (WGS84).", min=-180, max=180),
        _col("daily_capacity_parcels", "int", "Parcels the depot can dispatch per day.", min=1),
        _col("opened_on", "date", "Opening date."),
        _placeholders(),
    ),
)

DRIVERS = Table(
    name="drivers",
    kind="dimension",
    description="Couriers; one row per driver, attached to a home depot.",
    key="driver_id",
    columns=(
        _col("driver_id", "string", "Driver key, e.g. DR0001."),
        _col("depot_id", "string", "Home depot.", references=("depots", "depot_id")),
        _col("full_name", "string", "Driver name."),
        _col("hired_on", "date", "Hire date; tenure is measured from it."),
        _col("employment_type", "string", "Contract type.", allowed=EMPLOYMENT_TYPES),
        _col("license_class", "string", "Driving licence class.", allowed=("B", "C1", "C")),
        _placeholders(),
    ),
)

VEHICLES = Table(
    name="vehicles",
    kind="dimension",
    description="Fleet; one row per vehicle, based at a depot.",
    key="vehicle_id",
    columns=(
        _col("vehicle_id", "string", "Vehicle key, e.g. V0001."),
        _col("depot_id", "string", "Base depot.", references=("depots", "depot_id")),
        _col("vehicle_type", "string", "Vehicle class.", allowed=VEHICLE_TYPES),
        _col("capacity_kg", "float", "Payload capacity.", min=1, max=40000),
        _col("fuel_type", "string", "Energy source.", allowed=FUEL_TYPES),
        _col("registered_on", "date", "First registration date."),
        _placeholders(),
    ),
)

ORDERS = Table(
    name="orders",
    kind="fact",
    description="Delivery orders placed by clients; one row per order, dated by created_at.",
    key="order_id",
    partition_column="created_at",
    client_column="client_id",
    columns=(
        _col("order_id", "string", "Order key, e.g. O20260105-C001-000001."),
        _col("client_id", "string", "Ordering client.", references=("clients", "client_id")),
        _col("created_at", "timestamp", "When the order was placed (UTC); partition date."),
        _col("promised_by", "timestamp", "Delivery deadline promised to the customer (UTC)."),
        _col("pickup_depot_id", "string", "Depot the parcels leave from.", references=("depots", "depot_id")),
        _col("dropoff_city", "string", "Destination city."),
        _col("dropoff_postcode", "string", "Destination postcode.", nullable=True),
        _col("dropoff_lat", "float", "Destination latitude.", min=-90, max=90),
        _col("dropoff_lon", "float", "Destination longitude.", min=-180, max=180),
        _col("weight_kg", "float", "Total weight.", min=0.01, max=2000),
        _col("parcels", "int", "Number of parcels.", min=1, max=200),
        _col("priority", "string", "Service level bought.", allowed=PRIORITIES),
        _col("order_value", "decimal", "Price charged to the client.", min=0, max=100000),
        _col("payment_method", "string", "How the client pays.", allowed=("invoice", "card", "prepaid")),
        _placeholders(),
    ),
    rules=(Rule("promised_after_created", "promised_by > created_at", "The promise lies after the order."),),
)

DELIVERIES = Table(
    name="deliveries",
    kind="fact",
    description="Delivery attempts outcome; one row per delivery, dated by dispatched_at.",
    key="delivery_id",
    partition_column="dispatched_at",
    client_column="client_id",
    columns=(
        _col("delivery_id", "string", "Delivery key."),
        _col(
            "order_id",
            "string",
            "Order delivered; the row waits in pending/ until its order has landed.",
            references=("orders", "order_id"),
        ),
        _col("client_id", "string", "Client of the order.", references=("clients", "client_id")),
        _col("driver_id", "string", "Courier (empty for a carrier client).", references=("drivers", "driver_id")),
        _col(
            "vehicle_id", "string", "Vehicle used (empty for a carrier client).", references=("vehicles", "vehicle_id")
        ),
        _col("dispatched_at", "timestamp", "Left the depot (UTC); partition date."),
        _col("delivered_at", "timestamp", "Handed over (UTC); null unless delivered.", nullable=True),
        _col("status", "string", "Final outcome.", allowed=STATUSES),
        _col("attempts", "int", "Delivery attempts made.", min=1, max=10),
        _col(
            "distance_km", "float", "Route distance depot to drop-off (empty for a carrier client).", min=0.01, max=1500
        ),
        _col("failure_reason", "string", "Why it was not delivered.", nullable=True, allowed=FAILURE_REASONS),
        _col("proof_of_delivery", "string", "Signature, photo or none.", allowed=("signature", "photo", "none")),
        _placeholders(),
    ),
    rules=(
        Rule("delivered_after_dispatch", "delivered_at >= dispatched_at", "Delivered at or after dispatch."),
        Rule(
            "delivered_has_timestamp",
            "status <> 'delivered' OR delivered_at IS NOT NULL",
            "A delivered parcel has a delivery time.",
        ),
    ),
)

CUSTOMER_FEEDBACK = Table(
    name="customer_feedback",
    kind="fact",
    description="Ratings and comments left by recipients; one row per feedback, dated by submitted_at.",
    key="feedback_id",
    partition_column="submitted_at",
    client_column="client_id",
    columns=(
        _col("feedback_id", "string", "Feedback key."),
        _col(
            "order_id",
            "string",
            "Order rated; the row waits in pending/ until its order has landed.",
            references=("orders", "order_id"),
        ),
        _col("client_id", "string", "Client of the order.", references=("clients", "client_id")),
        _col("submitted_at", "timestamp", "When it was left (UTC); partition date."),
        _col("rating", "int", "Stars, 1 to 5.", min=1, max=5),
        _col("comment", "string", "Free text; may span lines.", nullable=True),
        _col("channel", "string", "Where it was left.", allowed=CHANNELS),
        _placeholders(),
    ),
)

TABLES: dict[str, Table] = {
    t.name: t for t in (CLIENTS, DEPOTS, DRIVERS, VEHICLES, ORDERS, DELIVERIES, CUSTOMER_FEEDBACK)
}
DIMENSIONS = [t for t in TABLES.values() if not t.is_fact]
FACTS = [t for t in TABLES.values() if t.is_fact]


def carrier_only_parent(table: str) -> bool:
    """Whether every reference to `table` may be empty for a carrier client (drivers, vehicles): a
    lake of carrier clients only may then have none of its rows."""
    refs = [(t.name, c.name) for t in TABLES.values() for c in t.columns if c.references and c.references[0] == table]
    return bool(refs) and all(optional_for_carrier(t, c) for t, c in refs)


def landing_order() -> list[Table]:
    """Tables sorted so every parent lands before its children."""
    done: list[str] = []
    pending = list(TABLES)
    while pending:
        for name in pending:
            if all(p in done or p not in TABLES for p in TABLES[name].parents if TABLES[p].kind == "dimension"):
                done.append(name)
                pending.remove(name)
                break
        else:  # pragma: no cover - the contract above has no cycle
            raise ValueError(f"cycle in contract references: {pending}")
    return [TABLES[n] for n in done]


def render_markdown() -> str:
    """The human-readable schema document (docs/contract.md is this, verbatim)."""
    out = [
        "# Data contract",
        "",
        "Generated from `delivery_lake/contract.py` by `delivery-lake contract`; "
        "a test fails if this file and the code disagree.",
        "",
        "Timestamps are ISO 8601 instants stored as UTC. Fact tables are partitioned by the UTC "
        "date of their partition column and by `client_id`. Rows that break a rule below are "
        "quarantined with the reason, never dropped.",
        "",
        "What becomes of a row, besides landing or quarantine (each file reconciles as "
        "`read = landed + quarantined + replayed + superseded + pending`):",
        "",
        "- **replayed**: the key and every value equal the version an earlier file brought (a re-sent "
        "file); counted, nothing rewritten, not counted against quality.",
        "- **superseded**: a later file (modification time, then name) brought the key with other "
        "values; the later version lands and this one is kept in `history/` with its file, line, the "
        "file that replaced it and when. Two versions of a key inside one file are a conflict: the "
        "earlier line is quarantined as `duplicate`.",
        "- **pending**: a reference to another fact (`-> orders.order_id`) whose row has not landed "
        "yet; held in `pending/` and landed by the first landing after the parent arrives. Once the "
        "parent feed has landed data more than `ORPHAN_GRACE_DAYS` (default 3) partition dates past "
        "the row's date without it, the row is quarantined as `orphan:<column>`.",
        "",
        "**Clients that ship through a carrier.** `clients.operations` declares how a client's parcels "
        "travel: `own_fleet` (the default, also when empty) or `carrier`. For a carrier client's rows "
        "these columns may be empty, since no courier, vehicle or route of ours exists for them: "
        + "; ".join(f"`{t}`: " + ", ".join(f"`{c}`" for c in cols) for t, cols in CARRIER_OPTIONAL.items())
        + ". Every other rule holds for them; marts by courier or vehicle leave their deliveries out.",
        "",
        f"**Stand-in values.** Every table ends with `{PLACEHOLDERS}`: the row's columns that hold a "
        "stand-in rather than a measured value, `;`-separated. A source mapping (`sources/*.yaml`) "
        "sets it where a client's export has no such column (each stand-in declares why); the marts "
        "carry it and leave stand-in measures out of sums and means. Columns marked *header-optional* "
        "may be missing from a file's header (every row of that file is then empty there).",
        "",
    ]
    for t in TABLES.values():
        out += [f"## `{t.name}` ({t.kind})", "", t.description, "", f"- key: `{t.key}` (unique, not null)"]
        if t.partition_column:
            out.append(f"- partitions: `date` = UTC date of `{t.partition_column}`, `client` = `{t.client_column}`")
        out += ["", "| column | type | null | constraint | description |", "|---|---|---|---|---|"]
        for c in t.columns:
            cons = []
            if c.min is not None:
                cons.append(f">= {c.min:g}")
            if c.max is not None:
                cons.append(f"<= {c.max:g}")
            if c.allowed:
                cons.append("in {" + ", ".join(c.allowed) + "}")
            if c.references:
                cons.append(f"-> {c.references[0]}.{c.references[1]}")
            if c.header_optional:
                cons.append("header-optional")
            null = "yes" if c.nullable else ("carrier clients" if optional_for_carrier(t.name, c.name) else "no")
            out.append(f"| `{c.name}` | {c.dtype} | {null} | {'; '.join(cons)} | {c.description} |")
        if t.rules:
            out += ["", "Row rules:"]
            out += [f"- `{r.name}`: `{r.sql}` ({r.description})" for r in t.rules]
        out.append("")
    return "\n".join(out)
