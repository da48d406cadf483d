"""The SQL of a landing, generated from the contract. Every function returns statement text; none runs it.

A batch's temp tables, in the order they are built (landing_batch runs the statements, the
partition writer of landing_publish the last group):

- `src` (a view): every file's rows typed while parsing, with `_file`, `_file_rank` (the file's
  position in arrival order) and `_ord` (the row's ordinal among the file's parsed rows);
- `typed`: `src` with `_broken_rules` (every rule the row breaks, empty when valid), `_state`
  (replayed / superseded / pending, NULL otherwise), `_pending_on`, `_date` and `_client`;
- `rejected` and `rejected_fields`: the lines the CSV reader set aside, with their reasons and
  best-effort column values;
- `versions` and `files`: what became of the copies of keys seen more than once, and who
  replaced a superseded version;
- `bad_lines`: source line numbers of the rows that do not land;
- `targets`, `picked`, `bad_rows`, `pending_rows`, `history_rows`: the partition writer's.
"""

from __future__ import annotations

from pathlib import Path

from delivery_lake import inbox
from delivery_lake.contract import PLACEHOLDERS, Table, optional_for_carrier
from delivery_lake.inbox import csv_source_sql, is_rendered, rendered_rows_sql
from delivery_lake.landing_records import PENDING, REPLAYED, SUPERSEDED
from delivery_lake.sql import ident, literal
from delivery_lake.storage import UNASSIGNED_CLIENT

# ---- reading and typing --------------------------------------------------------------------

# The columns a source mapping's rendered file carries after the contract's (sources/render.py).
FOREIGN_FILE, FOREIGN_LINE = "source_file", "source_line"

# The parent-keys entry holding the ids of clients whose operations are `carrier`.
CARRIER_KEYS = "clients:carrier"


def carrier_keys_table(name: str, clients_uri: str, has_operations: bool) -> str:
    """A table `name` of the ids of carrier clients (one column, `k`); empty for a clients file
    landed before `operations` existed."""
    if not has_operations:
        return f"CREATE TABLE {name} (k VARCHAR)"
    return (
        f"CREATE TABLE {name} AS SELECT client_id AS k FROM read_parquet('{clients_uri}') WHERE operations = 'carrier'"
    )


def parent_keys_table(name: str, parent: Table, relation: str) -> str:
    """A table `name` of the distinct keys of a landed dimension (one column, `k`), from a
    relation holding its key column."""
    return f"CREATE TABLE {name} AS SELECT DISTINCT {ident(parent.key)} AS k FROM {relation}"


def all_parent_keys_table(name: str, parent: Table, relation: str | None) -> str:
    """A table `name` of every landed key of a fact parent (one column, `k`), from a registered
    relation holding the parent's key column; empty when the parent has no file (None)."""
    if relation is None:
        return f"CREATE TABLE {name} (k VARCHAR)"
    return f"CREATE TABLE {name} AS SELECT DISTINCT {ident(parent.key)} AS k FROM {relation}"


def source_view(table: Table, headers: list[tuple[str, list[str]]]) -> str:
    """`src`: every file's typed rows with a per-file row ordinal (files given as (path, header)).

    File `i` sets its unparseable lines aside in the rejects table `rej{i}`. DuckDB keeps file
    order with preserve_insertion_order, so row_number() OVER () is the ordinal of a row among
    the file's parsed rows (a streaming window, no sort). A view: `typed` is the one
    materialisation; the rejects tables fill while it is built.
    """

    def cols(header: list[str]) -> str:
        # a header-optional column the file leaves out reads NULL (read_header allowed it)
        return ", ".join(
            f"NULL::{c.duckdb_type} AS {ident(c.name)}"
            if c.name not in header
            else f"NULLIF(trim({ident(c.name)}), '') AS {ident(c.name)}"
            if c.dtype == "string"
            else ident(c.name)
            for c in table.columns
        )

    def foreign(header: list[str]) -> str:
        # a file a source mapping rendered names, per row, the foreign file and line it came from
        if FOREIGN_FILE in header and FOREIGN_LINE in header:
            return f"{ident(FOREIGN_FILE)} AS _foreign_file, TRY_CAST({ident(FOREIGN_LINE)} AS BIGINT) AS _foreign_line"
        return "NULL::VARCHAR AS _foreign_file, NULL::BIGINT AS _foreign_line"

    def reader(rank: int, path: str, header: list[str]) -> str:
        # a source mapping's typed output: its rows that typed (the others: rendered_rejects)
        if is_rendered(path):
            return rendered_rows_sql(path, unparseable=False)
        return csv_source_sql(path, header, table, f"rej{rank}")

    parts = [
        f"SELECT {cols(header)}, {foreign(header)}, {literal(path)} AS _file, {rank} AS _file_rank, "
        f"row_number() OVER () AS _ord FROM {reader(rank, path, header)}"
        for rank, (path, header) in enumerate(headers)
    ]
    return "CREATE TEMP VIEW src AS " + " UNION ALL ".join(parts)


def rendered_rejects(rank: int, path: str) -> str:
    """`rej{rank}`, the rejects table `source_view` names, for a source mapping's typed output."""
    return inbox.rendered_rejects(f"rej{rank}", path)


def reason_exprs(table: Table, parent_keys: dict[str, str]) -> list[str]:
    """CASE expressions over typed columns naming each broken rule (casts were checked by the reader)."""
    out: list[str] = []
    for c in table.columns:
        col = ident(c.name)
        if not c.nullable:
            unless = ""
            if optional_for_carrier(table.name, c.name) and CARRIER_KEYS in parent_keys:
                # a carrier client's deliveries may leave it empty (contract.CARRIER_OPTIONAL)
                carriers = parent_keys[CARRIER_KEYS]
                unless = f" AND {ident(table.client_column or '')} NOT IN (SELECT k FROM {carriers})"
            out.append(f"CASE WHEN {col} IS NULL{unless} THEN 'missing:{c.name}' END")
        if c.min is not None:
            out.append(f"CASE WHEN {col} < {c.min} THEN 'range:{c.name}' END")
        if c.max is not None:
            out.append(f"CASE WHEN {col} > {c.max} THEN 'range:{c.name}' END")
        if c.allowed:
            values = ", ".join(literal(v) for v in c.allowed)
            out.append(f"CASE WHEN {col} NOT IN ({values}) THEN 'not_allowed:{c.name}' END")
        if c.references and c.references[0] in parent_keys:
            keys = parent_keys[c.references[0]]
            out.append(
                f"CASE WHEN {col} IS NOT NULL AND {col} NOT IN (SELECT k FROM {keys}) THEN 'orphan:{c.name}' END"
            )
    for r in table.rules:
        out.append(f"CASE WHEN NOT ({r.sql}) THEN 'rule:{r.name}' END")
    return out


def typed_select(table: Table, parent_keys: dict[str, str], nominal_dates: list[str | None]) -> str:
    """Rows of `src` with `_broken_rules` (empty when valid), `_state`, `_pending_on`, `_date` and `_client`."""
    reasons = "list_filter([" + ", ".join(reason_exprs(table, parent_keys)) + "], lambda x: x IS NOT NULL)"
    if table.is_fact:
        partition_col, client_col = ident(table.partition_column or ""), ident(table.client_column or "")
        # A missing partition timestamp files the row under its file's nominal date.
        nominal = (
            "CASE _file_rank "
            + " ".join(f"WHEN {rank} THEN {literal(d or 'unknown')}" for rank, d in enumerate(nominal_dates))
            + " END"
        )
        date_expr = f"coalesce(CAST({partition_col} AS DATE)::VARCHAR, {nominal})"
        client_ok = f"{client_col} IN (SELECT k FROM {parent_keys['clients']})" if "clients" in parent_keys else "true"
        client_expr = f"CASE WHEN {client_ok} THEN {client_col} ELSE {literal(UNASSIGNED_CLIENT)} END"
    else:
        date_expr, client_expr = "NULL::VARCHAR", "NULL::VARCHAR"
    conditions = [e.removeprefix("CASE WHEN ").rsplit(" THEN ", 1)[0] for e in reason_exprs(table, parent_keys)]
    # A rule that evaluates to NULL is not broken: NULL OR false is NULL, coalesced to false.
    ok = "NOT coalesce(" + " OR ".join(f"({c})" for c in conditions) + ", false)" if conditions else "true"
    # The reasons list is only built for failing rows (CASE evaluates branches selectively).
    return f"""
        SELECT *, CASE WHEN {ok} THEN []::VARCHAR[] ELSE {reasons} END AS _broken_rules,
               NULL::VARCHAR AS _state, NULL::VARCHAR AS _pending_on, {date_expr} AS _date, {client_expr} AS _client
        FROM src
    """


def typed_table(table: Table, parent_keys: dict[str, str], nominal_dates: list[str | None]) -> str:
    return f"CREATE TEMP TABLE typed AS {typed_select(table, parent_keys, nominal_dates)}"


def rejected_table(table: Table, files: list[tuple[str, str | None]]) -> str:
    """`rejected`: one row per line the reader set aside, with every reason (files given as (path, nominal date))."""
    reason = (
        "CASE WHEN error_type = 'CAST' THEN 'unparseable:' || column_name "
        "ELSE 'malformed:' || lower(replace(error_type, ' ', '_')) END"
    )
    rejects = " UNION ALL ".join(
        f"""SELECT {rank} AS _file_rank, {literal(path)} AS _file,
                   {literal(nominal or "unknown") if table.is_fact else "NULL::VARCHAR"} AS _date, line,
                   string_agg(DISTINCT {reason}, ';' ORDER BY {reason}) AS reasons, first(csv_line) AS csv_line,
                   false AS _replayed
            FROM rej{rank} GROUP BY line"""
        for rank, (path, nominal) in enumerate(files)
    )
    return f"CREATE TEMP TABLE rejected AS {rejects}"


REJECTED_LINES = "SELECT _file_rank, line, csv_line FROM rejected"


def rejected_fields_table(table: Table) -> str:
    cols = ", ".join(f"{ident(c.name)} VARCHAR" for c in table.columns)
    return (
        f"CREATE TEMP TABLE rejected_fields (_file_rank BIGINT, line BIGINT, {cols}, "
        "_foreign_file VARCHAR, _foreign_line BIGINT)"
    )


def rejected_fields_insert(table: Table) -> str:
    marks = ", ".join("?" for _ in range(len(table.columns) + 4))
    return f"INSERT INTO rejected_fields VALUES ({marks})"


# ---- versions of a key ---------------------------------------------------------------------


def versions_table(table: Table) -> str:
    """`versions`: the copies of keys seen more than once among valid rows that do not land as
    themselves, with their `state` (duplicate, superseded, replayed) and the winning file.

    Keys seen twice are rare: they are found with a grouped aggregate, so `typed` keeps its
    file order and needs no sort.
    """
    key = ident(table.key)
    content = "hash(" + ", ".join(ident(c.name) for c in table.columns) + ")"
    return f"""CREATE TEMP TABLE versions AS
        WITH copies AS (
            SELECT t.{key} AS key_value, t._file_rank AS file_rank, t._ord AS row_ord, {content} AS content_hash
            FROM typed t
            SEMI JOIN (
                SELECT {key} AS key_value FROM typed WHERE len(_broken_rules) = 0 GROUP BY ALL HAVING count(*) > 1
            ) d ON t.{key} = d.key_value
            WHERE len(t._broken_rules) = 0
        ),
        ranked AS (
            SELECT *,
                   max(row_ord) OVER (PARTITION BY key_value, file_rank) AS last_ord_in_file,
                   first(content_hash ORDER BY file_rank DESC, row_ord DESC) OVER (PARTITION BY key_value)
                       AS winning_hash,
                   max(file_rank) OVER (PARTITION BY key_value) AS winner_rank
            FROM copies
        ),
        keeper AS (  -- the earliest file whose version carries the winning content
            SELECT key_value, min(file_rank) AS keeper_rank
            FROM ranked WHERE row_ord = last_ord_in_file AND content_hash = winning_hash GROUP BY key_value
        )
        SELECT file_rank, row_ord, winner_rank,
               CASE WHEN row_ord <> last_ord_in_file THEN 'duplicate'
                    WHEN content_hash <> winning_hash THEN '{SUPERSEDED}'
                    ELSE '{REPLAYED}' END AS state
        FROM ranked JOIN keeper USING (key_value)
        WHERE row_ord <> last_ord_in_file OR file_rank <> keeper_rank"""


# Duplicates are quarantined; replayed and superseded copies change state (a small UPDATE).
MARK_VERSIONS = """UPDATE typed
    SET _broken_rules = CASE WHEN v.state = 'duplicate' THEN ['duplicate'] ELSE _broken_rules END,
        _state = CASE WHEN v.state = 'duplicate' THEN NULL ELSE v.state END
    FROM versions v WHERE typed._file_rank = v.file_rank AND typed._ord = v.row_ord"""

FILES_TABLE = "CREATE TEMP TABLE files (rank BIGINT, path VARCHAR, arrived VARCHAR)"
FILES_INSERT = "INSERT INTO files VALUES (?, ?, ?)"


def replayed_bad_rows(table: Table) -> str:
    """Bad rows that an earlier file of the batch already brought word for word become replays."""
    content = "hash(" + ", ".join(ident(c.name) for c in table.columns) + ", _broken_rules)"
    return f"""UPDATE typed SET _state = '{REPLAYED}', _broken_rules = []::VARCHAR[]
        FROM (SELECT _file_rank AS file_rank, _ord AS row_ord,
                     min(_file_rank) OVER (PARTITION BY {content}) AS first_rank
              FROM typed WHERE len(_broken_rules) > 0) r
        WHERE typed._file_rank = r.file_rank AND typed._ord = r.row_ord AND r.first_rank < r.file_rank"""


REPLAYED_REJECTED_LINES = """UPDATE rejected SET _replayed = true
    FROM (SELECT _file_rank AS file_rank, line AS line_no,
                 min(_file_rank) OVER (PARTITION BY csv_line) AS first_rank
          FROM rejected) r
    WHERE rejected._file_rank = r.file_rank AND rejected.line = r.line_no AND r.first_rank < r.file_rank"""


# ---- parents ---------------------------------------------------------------------------------


def wanted_parent_keys(column: str) -> str:
    """`wanted`: the keys in `column` of valid rows not yet classified (their parents are looked up)."""
    col = ident(column)
    return f"""CREATE OR REPLACE TEMP TABLE wanted AS SELECT DISTINCT {col} AS k FROM typed
        WHERE len(_broken_rules) = 0 AND _state IS NULL AND {col} IS NOT NULL"""


WANTED_COUNT = "SELECT count(*) FROM wanted"


def forget_keys_in_files(parent: Table, parquet_uris: list[str]) -> str:
    return f"""DELETE FROM wanted WHERE k IN (
        SELECT {ident(parent.key)} FROM read_parquet([{", ".join(literal(u) for u in parquet_uris)}]))"""


def forget_keys_in_relation(relation: str, parent: Table) -> str:
    return f"DELETE FROM wanted WHERE k IN (SELECT {ident(parent.key)} FROM {ident(relation)})"


def forget_keys_in_table(name: str) -> str:
    return f"DELETE FROM wanted WHERE k IN (SELECT k FROM {name})"


def grace_expired(date_expr: str, clock: str | None, grace_days: int) -> str:
    """True when the parent feeds (at `clock`) have moved on more than `grace_days` past the row's date."""
    if clock is None:
        return "false"
    return f"date_diff('day', {date_expr}, DATE {literal(clock)}) > {int(grace_days)}"


def hold_for_parent(column: str, expired: str) -> list[str]:
    """Rows whose parent in `column` is in `wanted`: orphans once `expired`, pending until then."""
    return [
        f"""UPDATE typed SET _broken_rules = CASE WHEN {expired} THEN ['orphan:{column}'] ELSE _broken_rules END,
                            _state = CASE WHEN {expired} THEN NULL ELSE '{PENDING}' END
            WHERE len(_broken_rules) = 0 AND _state IS NULL AND {ident(column)} IN (SELECT k FROM wanted)""",
        f"UPDATE typed SET _pending_on = {literal(column)} WHERE _state = '{PENDING}' AND _pending_on IS NULL",
    ]


# ---- line numbers and counts -----------------------------------------------------------------

# Record-based line numbers (header = line 1) of rows that do not land, accounting for rejected
# lines: a parsed row with ordinal k sits on line k + 1 + (rejected lines before it); the j-th
# rejected line r_j has r_j - j - 1 parsed rows before it.
BAD_LINES = [
    """CREATE TEMP TABLE rej_gaps AS
       SELECT _file_rank, line - row_number() OVER (PARTITION BY _file_rank ORDER BY line) - 1 AS good_before
       FROM rejected""",
    f"""CREATE TEMP TABLE bad_lines AS
       SELECT t._file_rank, t._ord, t._ord + 1 + count(g.good_before) AS _line
       FROM (SELECT _file_rank, _ord FROM typed
             WHERE len(_broken_rules) > 0 OR _state IN ('{SUPERSEDED}', '{PENDING}')) t
       LEFT JOIN rej_gaps g ON g._file_rank = t._file_rank AND g.good_before < t._ord
       GROUP BY t._file_rank, t._ord""",
]


def typed_counts(table: Table) -> str:
    """Rows per (file, date, client, raw client) by state: the columns of a CountRow, in order."""
    raw_client = f"coalesce({ident(table.client_column)}, '')" if table.client_column else "''"
    return f"""SELECT _file_rank, _file, _date, _client, {raw_client},
               count(*) FILTER (len(_broken_rules) = 0 AND _state IS NULL),
               count(*) FILTER (len(_broken_rules) > 0),
               count(*) FILTER (_state = '{REPLAYED}'),
               count(*) FILTER (_state = '{SUPERSEDED}'),
               count(*) FILTER (_state = '{PENDING}')
        FROM typed GROUP BY ALL"""


# The columns of a RejectedCount, in order.
REJECTED_COUNTS = "SELECT _file_rank, _date, count(*) FROM rejected GROUP BY ALL"


def valid_keys(table: Table) -> str:
    return f"SELECT DISTINCT {ident(table.key)} FROM typed WHERE len(_broken_rules) = 0 ORDER BY 1"


def preview(table: Table, rows: int) -> str:
    cols = ", ".join(ident(c.name) for c in table.columns)
    return f"SELECT {cols} FROM typed WHERE len(_broken_rules) = 0 AND _state IS NULL LIMIT {rows}"


# ---- the partition writer ----------------------------------------------------------------------

# `targets (d, c)`: the partitions a batch writes; `_` stands for a NULL date or client.
TARGETS_TABLE = "CREATE OR REPLACE TEMP TABLE targets (d VARCHAR, c VARCHAR)"


def targets_insert(count: int) -> str:
    # One statement for all targets (executemany runs one INSERT per row: slow for a day's partitions).
    return "INSERT INTO targets VALUES " + ", ".join(["(?, ?)"] * count)


def picked_view(every_partition: bool) -> str:
    """`picked`: the rows of `typed` in a target partition, with the partition as `d`, `c`.

    When the batch writes every partition it holds (a backfill), `typed` needs no filter (or copy).
    """
    picked_from = (
        "typed"
        if every_partition
        else "typed SEMI JOIN targets ON coalesce(_date, '_') = d AND coalesce(_client, '_') = c"
    )
    return (
        "CREATE OR REPLACE TEMP VIEW picked AS "
        f"SELECT coalesce(_date, '_') AS d, coalesce(_client, '_') AS c, * FROM {picked_from}"
    )


def column_list(table: Table) -> str:
    return ", ".join(ident(c.name) for c in table.columns)


def copy_partitioned(query: str, folder: Path) -> str:
    """Write `query` (with columns `d`, `c`) as one Parquet file per partition under `folder`."""
    return f"""COPY ({query}) TO '{folder}' (FORMAT parquet, PARTITION_BY (d, c), FILENAME_PATTERN 'data')"""


def good_rows(table: Table) -> str:
    # No ORDER BY: `typed` is in file order and DuckDB keeps insertion order in the write.
    return f"SELECT d, c, {column_list(table)} FROM picked WHERE len(_broken_rules) = 0 AND _state IS NULL"


def bad_rows_table(table: Table, landed_at: str) -> str:
    """`bad_rows`: the quarantine of the picked partitions, rows that broke a rule and rejected lines.

    `_reason` is the first broken rule and `_reasons` all of them, `;`-separated.
    """
    text_cols = ", ".join(f"p.{ident(c.name)}::VARCHAR AS {ident(c.name)}" for c in table.columns)
    field_cols = ", ".join(f"f.{ident(c.name)}" for c in table.columns)
    unassigned = literal(UNASSIGNED_CLIENT) if table.is_fact else "'_'"
    stamp = literal(landed_at)
    # `_foreign_*`: for a row a source mapping rendered, the foreign file, line and original values
    # (a JSON object of the foreign record as it came), so quarantine shows what the client sent
    return f"""CREATE OR REPLACE TEMP TABLE bad_rows AS
        SELECT d, c, {text_cols}, _broken_rules[1] AS _reason, array_to_string(_broken_rules, ';') AS _reasons,
               _file AS _source_file, b._line::BIGINT AS _source_line, NULL::VARCHAR AS _raw_line,
               p._foreign_file, p._foreign_line, fr.record AS _foreign_values, {stamp} AS _landed_at
        FROM picked p JOIN bad_lines b USING (_file_rank, _ord)
        LEFT JOIN foreign_records fr ON fr.file = p._foreign_file AND fr.line = p._foreign_line
        WHERE len(_broken_rules) > 0
        UNION ALL
        SELECT coalesce(r._date, '_'), {unassigned}, {field_cols},
               split_part(r.reasons, ';', 1), r.reasons, r._file, r.line::BIGINT, r.csv_line,
               f._foreign_file, f._foreign_line, fr.record, {stamp}
        FROM rejected r JOIN rejected_fields f USING (_file_rank, line)
        LEFT JOIN foreign_records fr ON fr.file = f._foreign_file AND fr.line = f._foreign_line
        SEMI JOIN targets ON coalesce(r._date, '_') = d AND {unassigned} = c
        WHERE NOT r._replayed"""


# The foreign lines of a batch's rows that do not land, for their original values (see bad_rows_table).
FOREIGN_BAD_LINES = """SELECT DISTINCT _foreign_file, _foreign_line FROM (
        SELECT _foreign_file, _foreign_line FROM typed WHERE len(_broken_rules) > 0
        UNION ALL SELECT _foreign_file, _foreign_line FROM rejected_fields)
    WHERE _foreign_file IS NOT NULL AND _foreign_line IS NOT NULL ORDER BY ALL"""
FOREIGN_RECORDS_TABLE = "CREATE OR REPLACE TEMP TABLE foreign_records (file VARCHAR, line BIGINT, record VARCHAR)"
FOREIGN_RECORDS_INSERT = "INSERT INTO foreign_records VALUES (?, ?, ?)"


def pending_rows_table(table: Table) -> str:
    return f"""CREATE OR REPLACE TEMP TABLE pending_rows AS
        SELECT d, c, {column_list(table)}, _pending_on, _file AS _source_file, b._line::BIGINT AS _source_line
        FROM picked p JOIN bad_lines b USING (_file_rank, _ord) WHERE _state = '{PENDING}'"""


def history_rows_table(table: Table) -> str:
    return f"""CREATE OR REPLACE TEMP TABLE history_rows AS
        SELECT d, c, {", ".join(f"p.{ident(c.name)}" for c in table.columns)},
               p._file AS _source_file, b._line::BIGINT AS _source_line,
               f.path AS _superseded_by, f.arrived AS _superseded_at
        FROM picked p JOIN bad_lines b USING (_file_rank, _ord)
        JOIN versions v ON v.file_rank = p._file_rank AND v.row_ord = p._ord
        JOIN files f ON f.rank = v.winner_rank
        WHERE p._state = '{SUPERSEDED}'"""


def side_table_order(table: Table) -> dict[str, str]:
    """The sort of each side table's rows inside a partition (so a replay writes the same file)."""
    return {
        "bad_rows": "_source_file, _source_line",
        "pending_rows": "_source_file, _source_line",
        "history_rows": f"{ident(table.key)}, _superseded_at, _source_file, _source_line",
    }


def row_count(name: str) -> str:
    return f"SELECT count(*) FROM {name}"


def partition_digests(name: str, columns: list[str]) -> str:
    """Per partition of side table `name`: its row count and a sum of row hashes over `columns`."""
    return f"SELECT d, c, count(*), sum(hash({', '.join(ident(c) for c in columns)}))::VARCHAR FROM {name} GROUP BY ALL"


REASON_COUNTS = (
    "SELECT d, c, _reason, _source_file, _raw_line IS NOT NULL, count(*) "
    "FROM bad_rows GROUP BY ALL ORDER BY 1, 2, 6 DESC"
)
# Landed rows per partition and column holding a stand-in value (contract.PLACEHOLDERS).
PLACEHOLDER_COUNTS = f"""SELECT d, c, col, count(*) FROM (
        SELECT d, c, unnest(string_split({PLACEHOLDERS}, ';')) AS col FROM picked
        WHERE {PLACEHOLDERS} IS NOT NULL AND len(_broken_rules) = 0 AND _state IS NULL)
    GROUP BY ALL ORDER BY ALL"""
REPLAYED_REJECTED_COUNTS = "SELECT coalesce(_date, '_'), _file, count(*) FROM rejected WHERE _replayed GROUP BY ALL"


def empty_copy(query: str, dest: Path) -> str:
    """A Parquet file at `dest` with the columns of `query` and no rows."""
    return f"COPY ({query} LIMIT 0) TO '{dest}' (FORMAT parquet)"
