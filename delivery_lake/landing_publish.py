"""Writing a batch's target partitions to the lake: data, quarantine, pending rows, history, manifests.

Each kind is cut into per-partition files by one COPY ... PARTITION_BY in a local staging
folder, then published object by object (storage.py). A partition whose content is what the
lake already holds is not published again (a re-sent file rewrites nothing); the manifest,
published last, vouches for every object of the partition.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any, NamedTuple

from delivery_lake import gate
from delivery_lake import landing_sql as sql
from delivery_lake.landing_records import (
    PENDING,
    REPLAYED,
    STATES,
    SUPERSEDED,
    BatchCounts,
    LandingContext,
    LandingError,
    PartitionKey,
    PartitionResult,
    manifest_path,
    zero_counts,
)
from delivery_lake.storage import DATA_FILE, UNASSIGNED_CLIENT, Lake

# A partition's key in the staging folders and the side tables: a NULL date or client is `_`.
StagedKey = tuple[str, str]


class SideZone(NamedTuple):
    """A zone of the lake that holds the rows of a partition that did not land as themselves."""

    zone: str
    staged: str  # the side table and staging folder its rows come from
    # True: an emptied partition keeps an empty object (a reader listing the zone sees the
    # partition go from some rows to none); False: the object only exists while it holds rows.
    keep_empty: bool


SIDE_ZONES = (
    SideZone("quarantine", "bad_rows", keep_empty=True),
    SideZone("pending", "pending_rows", keep_empty=False),
    SideZone("history", "history_rows", keep_empty=False),
)


def passed_versions(lake: Lake, table: str) -> dict[PartitionKey, str]:
    """Partitions whose latest verdict passed, with the data file's sha256 it was computed on."""
    return {
        (s.get("date"), s.get("client")): s["data_sha256"]
        for s in gate.statuses(lake, table)
        if s.get("passed") and s.get("data_sha256")
    }


class PartitionWriter:
    """Writes one batch's target partitions: stages them, counts them, publishes them."""

    def __init__(self, lake: Lake, con: Any, shared: LandingContext, stage: Path):
        self.lake, self.con, self.shared, self.stage = lake, con, shared, stage
        self.table = shared.table

    def write(self, targets: list[PartitionKey], counts: BatchCounts) -> list[PartitionResult]:
        self._stage(targets, counts)
        results = self._results(targets, counts)
        digests = {side.staged: self._digests(side.staged) for side in SIDE_ZONES}
        existing = {side.zone: self._existing(side.zone, results) for side in SIDE_ZONES}
        claims = self.lake.claims()
        out = []
        for key, res in results.items():
            # One writer at a time per partition, across processes and workers: the manifest
            # read here and the objects published below stay one consistent set (claims.py).
            # `existing` was listed before the claim: a writer that changed the partition since
            # landed the same files (the same objects) unless the inbox changed in between, and
            # then the next landing of the partition sets it right.
            with claims.hold("landing", self.table.name, res.date, res.client):
                path = manifest_path(self.lake, self.table.name, res.date, res.client)
                old = self.lake.read_json(path) or {}
                manifest: dict[str, Any] = {}
                for side in SIDE_ZONES:
                    self._publish_side(side, res, key, digests[side.staged], old, existing[side.zone], manifest)
                if res.client != UNASSIGNED_CLIENT:
                    self._publish_data(res, key, old, manifest)
                manifest |= self._manifest_counts(res, old)
                self.lake.write_json(path, manifest)
            out.append(res)
        return out

    # -- staging ---------------------------------------------------------------------------
    def _stage(self, targets: list[PartitionKey], counts: BatchCounts) -> None:
        """The targets' good rows and side tables, one staged Parquet file per partition and kind."""
        con = self.con
        con.execute(sql.TARGETS_TABLE)
        keys = [_staged_key(t) for t in targets]
        if keys:
            con.execute(sql.targets_insert(len(keys)), [v for k in keys for v in k])
        wanted = set(keys)
        every_partition = all(_staged_key((r.date, r.client)) in wanted for r in counts.typed)
        con.execute(sql.picked_view(every_partition))
        con.execute(sql.copy_partitioned(sql.good_rows(self.table), self.stage / "good"))
        self._side_tables()

    def _side_tables(self) -> None:
        """Quarantined, pending and superseded rows of the picked partitions (usually a handful)."""
        con = self.con
        con.execute(sql.bad_rows_table(self.table, self.shared.landed_at))
        con.execute(sql.pending_rows_table(self.table))
        con.execute(sql.history_rows_table(self.table))
        for name, order in sql.side_table_order(self.table).items():
            if con.execute(sql.row_count(name)).fetchone()[0]:
                con.execute(sql.copy_partitioned(f"SELECT * FROM {name} ORDER BY d, c, {order}", self.stage / name))

    # -- counting ----------------------------------------------------------------------------
    def _digests(self, name: str) -> dict[StagedKey, str]:
        """A content digest per partition (arrival stamps left out), to tell a change from a replay."""
        cols = [r[0] for r in self.con.execute(f"DESCRIBE {name}").fetchall() if r[0] not in ("d", "c", "_landed_at")]
        rows = self.con.execute(sql.partition_digests(name, cols)).fetchall()
        return {(d, c): f"{count}:{hash_sum}" for d, c, count, hash_sum in rows}

    def _existing(self, zone: str, results: dict[StagedKey, PartitionResult]) -> set[str]:
        """Objects of `zone` under this batch's dates (only those may need emptying)."""
        found: set[str] = set()
        for d in sorted({res.date for res in results.values()}, key=str):
            folder = self.lake.partition_dir(zone, self.table.name, d)
            found.update(self.lake.glob(folder + ("/*/" if d else "/") + DATA_FILE))
        return found

    def _results(self, targets: list[PartitionKey], counts: BatchCounts) -> dict[StagedKey, PartitionResult]:
        """What became of the rows of each target partition, per source file and per reason."""
        # `changed` turns true as soon as an object of the partition is published or removed.
        results = {_staged_key((d, c)): PartitionResult(self.table.name, d, c, changed=False) for d, c in targets}
        for row in counts.typed:
            res = results.get(_staged_key((row.date, row.client)))
            if res is not None:
                slot = res.by_file.setdefault(row.file, zero_counts())
                for state, n in (
                    ("landed", row.landed),
                    ("quarantined", row.quarantined),
                    (REPLAYED, row.replayed),
                    (SUPERSEDED, row.superseded),
                    (PENDING, row.pending),
                ):
                    slot[state] += int(n)
        for reasons in map(_ReasonCount._make, self.con.execute(sql.REASON_COUNTS).fetchall()):
            res = results[(reasons.date, reasons.client)]
            res.by_reason[reasons.reason] = res.by_reason.get(reasons.reason, 0) + int(reasons.rows)
            if reasons.rejected_line:  # lines the reader rejected are not in `picked`
                res.by_file.setdefault(reasons.file, zero_counts())["quarantined"] += int(reasons.rows)
        for d, c, column, rows in self.con.execute(sql.PLACEHOLDER_COUNTS).fetchall():
            if (d, c) in results:
                results[(d, c)].placeholders[column] = int(rows)
        unassigned = UNASSIGNED_CLIENT if self.table.is_fact else "_"
        for replayed in map(_ReplayedLines._make, self.con.execute(sql.REPLAYED_REJECTED_COUNTS).fetchall()):
            res = results.get((replayed.date, unassigned))
            if res is not None:
                res.by_file.setdefault(replayed.file, zero_counts())[REPLAYED] += int(replayed.lines)
        for res in results.values():
            for state in STATES:
                setattr(res, state, sum(v[state] for v in res.by_file.values()))
        return results

    # -- publishing --------------------------------------------------------------------------
    def _staged(self, name: str, key: StagedKey) -> Path | None:
        return _only_staged_file(self.stage / name / f"d={key[0]}" / f"c={key[1]}")

    def _publish_side(
        self,
        side: SideZone,
        res: PartitionResult,
        key: StagedKey,
        digests: dict[StagedKey, str],
        old: dict[str, Any],
        existing: set[str],
        manifest: dict[str, Any],
    ) -> None:
        dest = self.lake.data_file(side.zone, self.table.name, res.date, res.client)
        digest = digests.get(key)
        manifest[f"{side.zone}_digest"] = digest
        staged = self._staged(side.staged, key)
        if staged is not None:
            if digest == old.get(f"{side.zone}_digest") and dest in existing:
                return  # the same rows are there already
            self.lake.publish_file(staged, dest, move=True)
            res.changed = True
        elif dest in existing:
            res.changed = True
            if side.keep_empty:
                # An empty quarantine object, not a delete: a reader listing the zone sees the
                # partition go from some rows to none, never a half-deleted folder.
                empty = self.stage / f"empty_{side.staged}.parquet"
                if not empty.exists():
                    self.con.execute(sql.empty_copy(f"SELECT * EXCLUDE (d, c) FROM {side.staged}", empty))
                self.lake.publish_file(empty, dest)
            else:
                # Pending and history objects exist only while they hold rows (the release scan
                # lists pending/), so emptied ones go; Lake.delete verifies the delete.
                self.lake.delete(dest)

    def _publish_data(
        self, res: PartitionResult, key: StagedKey, old: dict[str, Any], manifest: dict[str, Any]
    ) -> None:
        dest = self.lake.data_file("raw", self.table.name, res.date, res.client)
        good = self._staged("good", key)
        if good is None and res.landed:
            # The writer named the folder differently (an escaped value): never publish an
            # empty file for rows the manifest would count as landed.
            raise LandingError(f"{self.table.name} {res.date}/{res.client}: {res.landed} rows counted, no file written")
        if good is None:
            good = self.stage / "empty_good.parquet"
            if not good.exists():
                self.con.execute(sql.empty_copy(f"SELECT {sql.column_list(self.table)} FROM typed", good))
        sha = hashlib.sha256(good.read_bytes()).hexdigest()
        manifest["sha256"] = sha
        res.bytes = good.stat().st_size
        if old.get("sha256") == sha and self.lake.exists(dest):
            return  # byte-identical to what is landed: a replay rewrites nothing
        res.changed = True
        # Keep the version the gate last passed before replacing it: while the new version is
        # blocked, the curated layer reads that one instead (transform.Runner).
        passed_sha = self.shared.verdicts.get((res.date, res.client))
        if passed_sha is not None and passed_sha == old.get("sha256") and self.lake.exists(dest):
            self.lake.copy(dest, self.lake.data_file("lastgood", self.table.name, res.date, res.client))
        self.lake.publish_file(good, dest, move=good.name == DATA_FILE)

    def _manifest_counts(self, res: PartitionResult, old: dict[str, Any]) -> dict[str, Any]:
        """The manifest's account of the partition (after the digests and sha256 of its objects)."""
        landed_at = self.shared.landed_at if res.changed or not old else old.get("landed_at", self.shared.landed_at)
        return {
            "table": self.table.name,
            "date": res.date,
            "client": res.client,
            "landed": res.landed,
            "quarantined": res.quarantined,
            "replayed": res.replayed,
            "superseded": res.superseded,
            "pending": res.pending,
            "by_reason": res.by_reason,
            "by_file": res.by_file,
            "placeholders": res.placeholders,
            "bytes": res.bytes,
            "landed_at": landed_at,
        }


class _ReasonCount(NamedTuple):
    """Quarantined rows of a partition by first reason and source file (a row of sql.REASON_COUNTS)."""

    date: str
    client: str
    reason: str
    file: str
    rejected_line: bool  # a line the CSV reader set aside (not a typed row)
    rows: int


class _ReplayedLines(NamedTuple):
    """Rejected lines an earlier file already brought, per date and file (sql.REPLAYED_REJECTED_COUNTS)."""

    date: str
    file: str
    lines: int


def _staged_key(key: PartitionKey) -> StagedKey:
    return (key[0] or "_", key[1] or "_")


def _only_staged_file(folder: Path) -> Path | None:
    """The one Parquet file DuckDB wrote for a partition (None when it had no rows)."""
    files = sorted(folder.glob("*.parquet")) if folder.is_dir() else []
    if len(files) > 1:
        raise LandingError(f"expected one staged file in {folder}, found {len(files)}")
    return files[0] if files else None
