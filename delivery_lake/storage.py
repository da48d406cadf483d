"""The one module that knows where things live in the lake and how to write them safely.

Layout (Hive style, so DuckDB, Polars and pyarrow read it with hive partitioning):

    {LAKE_URL}/raw/{table}/date=YYYY-MM-DD/client={client_id}/data.parquet   facts
    {LAKE_URL}/raw/{table}/data.parquet                                      dimensions
    {LAKE_URL}/quarantine/{table}/date=.../client=.../data.parquet           rejected rows
    {LAKE_URL}/pending/{table}/date=.../client=.../data.parquet              rows waiting for a parent
    {LAKE_URL}/history/{table}/date=.../client=.../data.parquet              versions a correction replaced
    {LAKE_URL}/lastgood/{table}/date=.../client=.../data.parquet             last version that passed the gate
    {LAKE_URL}/curated/{model}/date=YYYY-MM-DD/data.parquet                  partitioned marts
    {LAKE_URL}/curated/{model}/data.parquet                                  unpartitioned marts
    {LAKE_URL}/ml/{table}/date=YYYY-MM-DD/data.parquet                       model features
    {LAKE_URL}/_meta/...                                                     manifests

Atomicity: every partition is exactly one object with a fixed name, replaced by a
single PUT (S3 has no rename, but a PUT, multipart or not, becomes visible whole or
not at all) or by `os.replace` of a temporary sibling on a local disk. A reader sees
the old or the new partition, never half of one, and a crash mid-write leaves the
previous object in place. Temporary names end in `.tmp-<uuid>` so `*.parquet` globs
never pick them up.
"""

from __future__ import annotations

import atexit
import contextlib
import glob
import hashlib
import json
import os
import queue
import re
import shutil
import subprocess
import threading
import uuid
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import duckdb

from delivery_lake.claims import Claims
from delivery_lake.config import Settings

if TYPE_CHECKING:
    import fsspec

DATA_FILE = "data.parquet"
UNASSIGNED_CLIENT = "_unassigned"


class StorageError(RuntimeError):
    pass


class _ListedFiles:
    """Small lake files (verdicts, manifests) this process fetched from S3, by path and ETag, so
    `Lake.read_jsons_matching` fetches again only what a fresh listing shows has changed. An
    ETag names the object's content, so a hit is the bytes the listing describes. Bounded in
    bytes; the oldest entry goes first."""

    def __init__(self, max_bytes: int):
        self.max_bytes, self.bytes = max_bytes, 0
        self.entries: OrderedDict[str, tuple[str, bytes]] = OrderedDict()
        self.lock = threading.Lock()

    def get(self, path: str, etag: str) -> bytes | None:
        with self.lock:
            entry = self.entries.get(path)
            if entry is None or not etag or entry[0] != etag:
                return None
            self.entries.move_to_end(path)
            return entry[1]

    def put(self, path: str, etag: str, data: bytes) -> None:
        if not etag or len(data) > self.max_bytes // 16:
            return
        with self.lock:
            old = self.entries.pop(path, None)
            if old is not None:
                self.bytes -= len(old[1])
            self.entries[path] = (etag, data)
            self.bytes += len(data)
            while self.bytes > self.max_bytes:
                _, (_, dropped) = self.entries.popitem(last=False)
                self.bytes -= len(dropped)


_LISTED_FILES = _ListedFiles(max_bytes=64 * 1024 * 1024)


class _DocumentCache:
    """The same documents kept on this machine's disk between processes (`DATA_DIR/cache`).

    Every Dagster run is a new process, and its first read of a table's verdicts and manifests
    fetched every one of them (a GET each: 120-130 per table on a 15-day lake of 8 clients, 0.5-1.2 s
    a table, 8.4 s of a warehouse refresh's 11 s, measured on SeaweedFS). Entries are keyed by
    endpoint, path and ETag, which the listing made in the same call reports, so a hit is the
    bytes the lake holds now; a changed document misses and is fetched. One SQLite file (WAL):
    concurrent runs read and write it. Any failure of the cache (read-only or full disk) only
    costs the fetches it would have saved."""

    def __init__(self, path: Path, scope: str):
        self.path, self.scope = path, scope
        self._con: Any = None
        self._pid = -1
        self._lock = threading.Lock()

    def _connection(self) -> Any:
        import sqlite3

        if self._con is None or self._pid != os.getpid():  # a forked child opens its own
            self.path.parent.mkdir(parents=True, exist_ok=True)
            con = sqlite3.connect(self.path, timeout=10, check_same_thread=False, isolation_level=None)
            con.execute("PRAGMA journal_mode=WAL")
            con.execute("PRAGMA synchronous=NORMAL")
            con.execute(
                "CREATE TABLE IF NOT EXISTS docs (key TEXT PRIMARY KEY, etag TEXT NOT NULL, data BLOB NOT NULL)"
            )
            self._con, self._pid = con, os.getpid()
        return self._con

    def get_many(self, versions: dict[str, str]) -> dict[str, bytes]:
        wanted = {f"{self.scope}|{p}": (p, e) for p, e in versions.items() if e}
        if not wanted:
            return {}
        out: dict[str, bytes] = {}
        try:
            with self._lock:
                con = self._connection()
                keys = list(wanted)
                for i in range(0, len(keys), 500):
                    chunk = keys[i : i + 500]
                    marks = ",".join("?" * len(chunk))
                    for key, etag, data in con.execute(
                        f"SELECT key, etag, data FROM docs WHERE key IN ({marks})", chunk
                    ):
                        path, want = wanted[key]
                        if etag == want:
                            out[path] = bytes(data)
        except Exception:  # a cache: fetch instead
            return {}
        return out

    def put_many(self, items: list[tuple[str, str, bytes]]) -> None:
        rows = [(f"{self.scope}|{p}", e, d) for p, e, d in items if e]
        if not rows:
            return
        try:
            with self._lock:
                con = self._connection()
                con.execute("BEGIN")
                con.executemany("INSERT OR REPLACE INTO docs (key, etag, data) VALUES (?, ?, ?)", rows)
                con.execute("COMMIT")
        except Exception:  # a cache: the next process fetches again
            with contextlib.suppress(Exception):
                self._con.execute("ROLLBACK")


_DOCUMENT_CACHES: dict[tuple[str, str], _DocumentCache] = {}
_DOCUMENT_CACHES_LOCK = threading.Lock()


def _ipc_bytes(table: Any) -> bytes:
    """An Arrow table as one IPC stream (what the document cache keeps of a file's columns)."""
    import pyarrow as pa

    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return bytes(sink.getvalue())


# From this many dates of one month of a table, one listing of the month (`_listings`).
MONTH_LISTING_DATES = 8
# Beyond this many dates of one table, `existing` lists the table whole (one paginated listing).
WHOLE_TABLE_DATES = 62
# A date folder's name, and its month's prefix (what the month's dates share).
_DAY_FOLDER = re.compile(r"^(date=\d{4}-\d{2}-)\d{2}$")


def _listings(patterns: list[str]) -> dict[tuple[str, str], list[str]]:
    """(folder, key prefix) -> the glob patterns one recursive listing of that prefix answers.

    A pattern is answered below the folder before its first wildcard, by a listing of that
    folder's parent with its name as prefix (no HEAD when it holds nothing). Patterns whose such
    folders are MONTH_LISTING_DATES or more dates of one month in the same table are listed
    together, by the month's prefix (`.../date=2026-11-`): a month's refresh asked a listing
    per date and table, several times a step. Fewer dates are listed one by one: SeaweedFS walks
    every folder under a prefix, and a month of a table's partitions took 20 ms against 4 ms
    for one date (docs/performance.md)."""
    out: dict[tuple[str, str], list[str]] = {}
    by_root: dict[str, list[str]] = {}
    for pattern in patterns:
        first = min(i for i, ch in enumerate(pattern) if ch in "*?[")
        by_root.setdefault(pattern[:first].rsplit("/", 1)[0], []).append(pattern)
    months: dict[tuple[str, str], list[str]] = {}
    for root, group in by_root.items():
        parent, _, name = root.rpartition("/")
        day = _DAY_FOLDER.match(name)
        if parent and day:
            months.setdefault((parent, day.group(1)), []).append(root)
        elif parent:
            out[(parent, name + "/")] = group
        else:
            out[(root, "")] = group
    for (parent, month), roots in months.items():
        if len(roots) >= MONTH_LISTING_DATES:
            out[(parent, month)] = [p for r in roots for p in by_root[r]]
            continue
        for r in roots:  # the date's name: its folder and a file named after it (date=D.json)
            out[(parent, r.rpartition("/")[2])] = by_root[r]
    return out


# One s3fs filesystem per process and set of credentials. A new one builds its own botocore
# session, and its first request parses botocore's JSON models (the S3 service's is megabytes):
# 0.1-0.9 s of CPU each time, holding the GIL the other threads' S3 requests wait for. Every
# `Lake.from_settings` built one, dozens a run (a step asks its resource for the lake several
# times): 7 of the 8 seconds an S3 day waited on S3 (docs/performance.md).
_S3_FILESYSTEMS: dict[tuple[int, str, str, str, str], Any] = {}
_S3_FILESYSTEMS_LOCK = threading.Lock()


def _s3_filesystem(settings: Settings) -> Any:
    import s3fs

    secret = hashlib.sha256((settings.aws_secret_access_key or "").encode()).hexdigest()
    # the pid: a forked process (a run forked by assets/run_launcher.py) makes its own
    key = (
        os.getpid(),
        settings.aws_endpoint_url or "",
        settings.aws_region or "",
        settings.aws_access_key_id or "",
        secret,
    )
    with _S3_FILESYSTEMS_LOCK:
        fs = _S3_FILESYSTEMS.get(key)
        if fs is None:
            fs = _S3_FILESYSTEMS[key] = s3fs.S3FileSystem(
                key=settings.aws_access_key_id,
                secret=settings.aws_secret_access_key,
                endpoint_url=settings.aws_endpoint_url,
                client_kwargs={"region_name": settings.aws_region},
                # Listings must reflect writes made moments ago, by this process or another.
                use_listings_cache=False,
                # ours, not fsspec's shared instance (whoever else builds one sets its options)
                skip_instance_cache=True,
            )
        return fs


def _manifest_date(path: str) -> str | None:
    name = path.rsplit("/", 1)[-1].removesuffix(".json")
    return name.removeprefix("date=") if name.startswith("date=") else None


class Lake:
    """A lake rooted at a local folder or an `s3://bucket/prefix` URL."""

    def __init__(self, url: str, fs: fsspec.AbstractFileSystem | None = None, settings: Settings | None = None):
        self.settings = settings
        self.is_s3 = url.startswith("s3://")
        if self.is_s3:
            if fs is None:
                raise StorageError("an S3 lake needs a filesystem; use Lake.from_settings")
            self.root = url.removeprefix("s3://").rstrip("/")
        else:
            self.root = str(Path(url.removeprefix("file://")).resolve())
        self._fs = fs
        self._pa_fs: Any = None  # pyarrow's S3 client, made on first use (_arrow_fs)
        self.url = url.rstrip("/")

    @property
    def fs(self) -> fsspec.AbstractFileSystem:
        """The lake's fsspec filesystem. A local lake creates it on first use: its everyday
        reads go through `os`, so a process that never needs fsspec never imports it."""
        if self._fs is None:
            from fsspec.implementations.local import LocalFileSystem

            self._fs = LocalFileSystem()
        return self._fs

    @classmethod
    def from_settings(cls, settings: Settings) -> Lake:
        if settings.lake_url.startswith("s3://"):
            return cls(settings.lake_url, _s3_filesystem(settings), settings)
        return cls(settings.lake_url, None, settings)

    # ---- paths (nobody else formats a lake path) -------------------------------------
    def path(self, *parts: str) -> str:
        return "/".join([self.root, *parts])

    def uri(self, path: str) -> str:
        """What DuckDB / Polars / pyarrow should be given for `path`."""
        return f"s3://{path}" if self.is_s3 else path

    def table_dir(self, zone: str, table: str) -> str:
        return self.path(zone, table)

    def partition_dir(self, zone: str, table: str, date: str | None = None, client: str | None = None) -> str:
        parts = [zone, table]
        if date is not None:
            parts.append(f"date={date}")
        if client is not None:
            parts.append(f"client={client}")
        return self.path(*parts)

    def data_file(self, zone: str, table: str, date: str | None = None, client: str | None = None) -> str:
        return self.partition_dir(zone, table, date, client) + "/" + DATA_FILE

    def glob_uri(self, zone: str, table: str, partitioned: bool) -> str:
        pattern = "**/*.parquet" if partitioned else DATA_FILE
        return self.uri(self.table_dir(zone, table) + "/" + pattern)

    def meta_path(self, *parts: str) -> str:
        return self.path("_meta", *parts)

    def build_manifest(self, zone: str, table: str, date: str | None = None) -> str:
        """The build record of one partition of a built zone (curated), written after its data file."""
        return self.meta_path(zone, table, f"date={date}.json" if date is not None else "manifest.json")

    def external_table_spec(self, table: str) -> str:
        """Declaration of a curated table built outside the SQL project (e.g. model scores),
        so the warehouse loads it like a model's table."""
        return self.meta_path("warehouse", "external", f"{table}.json")

    def claims(self) -> Claims:
        """Where writers of this lake claim a partition before publishing it (delivery_lake.claims)."""
        if self.settings is not None and self.settings.claims_dir is not None:
            return Claims(self.settings.claims_dir)
        if not self.is_s3:
            return Claims(Path(self.root) / "_meta" / "claims")
        # S3 has no lock: a local folder, which guards the workers of this machine only.
        return Claims((self.settings.data_dir if self.settings else Path.cwd()) / "claims")

    def glob(self, pattern: str) -> list[str]:
        """Paths matching `pattern` (`**` spans folders), sorted."""
        if self.is_s3:
            return self.glob_many([pattern])
        # fsspec's local glob stats every entry it walks: a local lake lists through the
        # standard library instead (docs/performance.md).
        return sorted(glob.glob(pattern, recursive=True))

    def glob_many(self, patterns: list[str]) -> list[str]:
        """Paths matching any of `patterns`, sorted.

        On S3 each pattern is answered by a recursive listing of the folder before its first
        wildcard (a LIST per 1,000 keys; a month's dates share one, `_listings`), filtered here,
        and the listings run concurrently. fsspec's glob
        walks such a pattern a folder level at a time, a request per folder in turn: 40-90 ms
        for one date's clients on SeaweedFS, and a day's run made 150 of them.
        """
        if not self.is_s3:
            return sorted({p for pattern in patterns for p in glob.glob(pattern, recursive=True)})
        return sorted(self._s3_versions(patterns))

    def _s3_versions(self, patterns: list[str]) -> dict[str, str]:
        """Path -> ETag of every object matching any of `patterns` (listed as `glob_many` says)."""
        import asyncio

        from fsspec.asyn import sync
        from fsspec.utils import glob_translate

        fs: Any = self.fs

        def etag(info: dict[str, Any]) -> str:
            return str(info.get("ETag") or "")

        async def listed(folder: str, prefix: str, wanted: list[re.Pattern[str]]) -> dict[str, str]:
            # Always the parent and a prefix: s3fs then makes one LIST, where a LIST of a folder
            # that holds nothing is followed by a HEAD of its name (a date without data, a table
            # never built: two requests, 20 of a warehouse refresh's).
            found = await fs._find(folder, detail=True, prefix=prefix)
            return {p: etag(info) for p, info in found.items() if any(w.match(p) for w in wanted)}

        async def exact(folder: str, paths: set[str]) -> dict[str, str]:
            # one path: a HEAD; several in one folder: one listing of the folder, not a HEAD each
            if len(paths) == 1:
                (path,) = paths
                try:
                    info = await fs._info(path)
                except FileNotFoundError:
                    return {}
                return {path: etag(info)} if info.get("type") != "directory" else {}
            listed = await fs._lsdir(folder)
            return {info["name"]: etag(info) for info in listed if info["name"] in paths and info["type"] == "file"}

        stripped = [fs._strip_protocol(p) for p in patterns]
        listings = _listings([p for p in stripped if any(ch in p for ch in "*?[")])
        by_folder: dict[str, set[str]] = {}
        for p in stripped:
            if not any(ch in p for ch in "*?["):
                # answered by a listing made anyway when one covers it (a date's own verdict
                # beside its clients' ones), else by a request of its own
                covering = next((k for k in listings if p.startswith(f"{k[0]}/{k[1]}")), None)
                if covering is not None:
                    listings[covering].append(p)
                else:
                    by_folder.setdefault(p.rsplit("/", 1)[0], set()).add(p)

        async def all_of() -> list[dict[str, str]]:
            return list(
                await asyncio.gather(
                    *(
                        listed(folder, prefix, [re.compile(glob_translate(p)) for p in group])
                        for (folder, prefix), group in listings.items()
                    ),
                    *(exact(folder, paths) for folder, paths in by_folder.items()),
                )
            )

        return {p: etag for found in sync(fs.loop, all_of) for p, etag in found.items()}

    def read_jsons_matching(self, patterns: list[str]) -> dict[str, Any]:
        """Path -> document of every file matching any of `patterns`, in path order.

        On S3 the listing gives each file's ETag, and a file this process read before under the
        same ETag is not fetched again: a run's steps re-read the same verdicts and manifests
        (36 reads of the gate in one day's run), each a GET per file. What is served is what the
        listing, made in this call, says is there now."""
        if not self.is_s3:
            paths = self.glob_many(patterns)
            return {p: doc for p, doc in zip(paths, self.read_jsons(paths), strict=True) if doc is not None}
        versions = self._s3_versions(patterns)
        raw: dict[str, bytes] = {}
        for path, etag in versions.items():
            cached = _LISTED_FILES.get(path, etag)
            if cached is not None:
                raw[path] = cached
        disk = self._document_cache()
        if disk is not None:
            for path, data in disk.get_many({p: e for p, e in versions.items() if p not in raw}).items():
                _LISTED_FILES.put(path, versions[path], data)
                raw[path] = data
        fetched = self._cat_many([p for p in versions if p not in raw])
        for path, data in fetched.items():
            _LISTED_FILES.put(path, versions[path], data)
            raw[path] = data
        if disk is not None and fetched:
            disk.put_many([(p, versions[p], d) for p, d in fetched.items()])
        return {p: json.loads(raw[p]) for p in sorted(raw)}

    def _document_cache(self) -> _DocumentCache | None:
        """This machine's cache of the lake's small documents, in DATA_DIR (None for a Lake built without settings)."""
        if self.settings is None:
            return None
        path = Path(self.settings.data_dir) / "cache" / "lake_documents.sqlite"
        scope = f"{self.settings.aws_endpoint_url or ''}|{self.settings.aws_region or ''}"
        with _DOCUMENT_CACHES_LOCK:
            cache = _DOCUMENT_CACHES.get((str(path), scope))
            if cache is None:
                cache = _DOCUMENT_CACHES[(str(path), scope)] = _DocumentCache(path, scope)
            return cache

    def list_external_table_specs(self) -> list[str]:
        return self.glob(self.meta_path("warehouse", "external") + "/*.json")

    def list_build_manifests(self, zone: str, table: str) -> dict[str | None, str]:
        """date (None for an unpartitioned table) -> manifest path, for every built partition."""
        return {_manifest_date(f): f for f in self.glob(self.meta_path(zone, table) + "/*.json")}

    def read_build_manifests(self, zone: str, table: str) -> dict[str | None, Any]:
        """date (None for an unpartitioned table) -> manifest, for every built partition."""
        found = self.read_jsons_matching([self.meta_path(zone, table) + "/*.json"])
        return {_manifest_date(f): doc for f, doc in found.items()}

    # ---- reads ---------------------------------------------------------------------
    def exists(self, path: str) -> bool:
        return bool(self.fs.exists(path)) if self.is_s3 else os.path.exists(path)

    def version(self, path: str) -> str:
        """Size and version of a file (ETag on S3, modification time locally); raises
        FileNotFoundError."""
        if not self.is_s3:
            st = os.stat(path)
            return f"{st.st_size} {st.st_mtime}"
        info = self.fs.info(path)
        return f"{info.get('size')} {info.get('ETag') or info.get('LastModified')}"

    def stamp(self, pattern: str) -> str:
        """A digest of the local files matching `pattern`, each one's path, size, modification
        time and inode: it changes when one is added, removed or replaced (a publish renames a
        new file in). Local lakes only: on S3 it would be a listing per call."""
        if self.is_s3:
            raise StorageError(f"{pattern}: file stamps are for local lakes")
        found = []
        for path in self.glob(pattern):
            st = os.stat(path)
            found.append((path, st.st_size, st.st_mtime_ns, st.st_ino))
        return hashlib.sha256(repr(found).encode()).hexdigest()

    def sha256(self, path: str) -> str:
        if not self.is_s3:
            return sha256_file(path)
        with self.fs.open(path, "rb") as fh:
            return _sha256_stream(fh)

    def read_json(self, path: str, default: Any = None) -> Any:
        try:
            if self.is_s3:
                # one GET (opening a file first asks its size; so does cat_file unless told not to split)
                return json.loads(self.fs.cat_file(path, max_concurrency=1))
            with open(path, "rb") as fh:
                return json.loads(fh.read())
        except FileNotFoundError:
            return default

    def read_columns(self, zone: str, table: str, columns: list[str], partitioned: bool) -> Any:
        """`columns` of every data file of a lake table as one Arrow table (with `date` and
        `client` as text from the path when `partitioned`); None when the table has no file.

        For whole-table scans of a few columns (the checks' key snapshots). DuckDB reads an S3
        lake through fsspec one file and one round trip at a time; pyarrow's own S3 client reads
        the files' footers and columns concurrently: 0.04 s against 0.21-0.26 s for ten files.
        """
        import pyarrow as pa
        import pyarrow.compute as pc
        import pyarrow.dataset as ds

        base = self.table_dir(zone, table)
        pattern = base + ("/date=*/client=*/" if partitioned else "/") + DATA_FILE
        wanted = [*columns, *(["date", "client"] if partitioned else [])]
        partitioning = None
        if partitioned:
            # declared, not inferred: a client id such as 007 must stay text
            partitioning = ds.partitioning(pa.schema([("date", pa.string()), ("client", pa.string())]), flavor="hive")

        def read(files: list[str], extra: list[str]) -> Any:
            dataset = ds.dataset(
                files,
                filesystem=self._arrow_fs(),
                format="parquet",
                partitioning=partitioning,
                partition_base_dir=base if partitioned else None,
            )
            return dataset.to_table(columns=[*wanted, *extra])

        if not self.is_s3:
            files = self.glob(pattern)
            return read(files, []) if files else None
        # On S3 each file's columns are also kept in this machine's document cache under the
        # file's ETag: a new process (each Dagster run) read the whole key column of a table
        # again, 0.3-0.5 s a table and a check step reads up to three (measured on SeaweedFS).
        versions = self._s3_versions([pattern])
        if not versions:
            return None
        disk = self._document_cache()
        tag = "#columns:" + ",".join(wanted)
        found = disk.get_many({p + tag: e for p, e in versions.items()}) if disk is not None else {}
        parts = {p.removesuffix(tag): pa.ipc.open_stream(data).read_all() for p, data in found.items()}
        missing = [p for p in sorted(versions) if p not in parts]
        if missing:
            fetched = read(missing, ["__filename"])
            names = fetched.column("__filename")
            fetched = fetched.drop_columns(["__filename"])
            for path in missing:
                parts[path] = fetched.filter(pc.equal(names, path))
            if disk is not None:
                disk.put_many([(p + tag, versions[p], _ipc_bytes(parts[p])) for p in missing])
        return pa.concat_tables([parts[p] for p in sorted(parts)])

    def read_files_columns(self, paths: list[str], columns: list[str]) -> Any:
        """`columns` of the Parquet files at `paths` (lake paths) as one Arrow table, read by
        pyarrow (on S3 its own client, footers and columns fetched concurrently)."""
        import pyarrow.dataset as ds

        return ds.dataset(paths, filesystem=self._arrow_fs(), format="parquet").to_table(columns=columns)

    def _arrow_fs(self) -> Any:
        """pyarrow's filesystem for this lake: its own S3 client (credentials from the settings
        the lake was built with), or the local disk."""
        import pyarrow.fs as pafs

        if not self.is_s3:
            return pafs.LocalFileSystem()
        if self._pa_fs is not None:
            return self._pa_fs
        s = self.settings
        if s is None:
            raise StorageError("an S3 lake needs its settings to be read by pyarrow; use Lake.from_settings")
        endpoint = s.aws_endpoint_url or ""
        scheme, _, host = endpoint.partition("://")
        self._pa_fs = pafs.S3FileSystem(
            access_key=s.aws_access_key_id,
            secret_key=s.aws_secret_access_key,
            region=s.aws_region,
            **({"endpoint_override": host, "scheme": scheme} if endpoint else {}),
        )
        return self._pa_fs

    def read_jsons(self, paths: list[str]) -> list[Any]:
        """`read_json` of each path (None where missing), in order. On S3 the files are fetched
        in one batch of concurrent GETs: status pages and manifests are read by the hundred,
        and one at a time each paid a HEAD and a GET in turn (0.9 s for 131 of them)."""
        if not self.is_s3:
            return [self.read_json(p) for p in paths]
        if not paths:
            return []
        by_path = self._cat_many(list(dict.fromkeys(paths)))
        return [json.loads(by_path[p]) if p in by_path else None for p in (self.fs._strip_protocol(p) for p in paths)]

    def _cat_many(self, paths: list[str]) -> dict[str, bytes]:
        """Path (without the protocol) -> bytes of the S3 objects at `paths`, fetched concurrently;
        a missing one is left out, any other failure raised (refused, unreachable: loud, never
        an empty page)."""
        if not paths:
            return {}
        # max_concurrency=1: s3fs otherwise asks each file's size (a HEAD) before its GET, to
        # split big files into ranges; these are small documents
        found = self.fs.cat(paths, on_error="return", max_concurrency=1)
        by_path: dict[str, bytes] = {}
        for key, value in found.items():
            if isinstance(value, FileNotFoundError):
                continue
            if isinstance(value, BaseException):
                raise value
            by_path[self.fs._strip_protocol(key)] = value
        return by_path

    def list_partitions(self, zone: str, table: str, dates: Iterable[str] | None = None) -> list[tuple[str, str]]:
        """(date, client) pairs that hold a data file (only under `dates` when given: a day's
        refresh lists a few folders, not the whole table)."""
        if dates is None:
            found = self.glob(self.table_dir(zone, table) + f"/date=*/client=*/{DATA_FILE}")
        else:
            found = self.glob_many([self.table_dir(zone, table) + f"/date={d}/client=*/{DATA_FILE}" for d in dates])
        out = []
        for f in found:
            parts = f.split("/")
            out.append((parts[-3].removeprefix("date="), parts[-2].removeprefix("client=")))
        return sorted(out)

    def list_dates(self, zone: str, table: str) -> list[str]:
        """Dates holding at least one data file (emptied folders may linger on S3 stores)."""
        base = self.table_dir(zone, table)
        if self.is_s3:
            # one recursive listing (a LIST per 1,000 keys); the two globs below listed it twice
            found = [f for f in self.fs.find(base) if f.endswith("/" + DATA_FILE) and "/date=" in f]
        else:
            found = self.glob(base + f"/date=*/**/{DATA_FILE}")  # `**` also matches no folder
        return sorted({f.split("/date=", 1)[1].split("/", 1)[0] for f in found})

    def existing(self, paths: list[str]) -> set[str]:
        """Those of `paths` that exist. On S3 by listing the date folders they sit in (`_listings`:
        a month's dates in one listing) or, for a long history, their table folder once: asking
        for a missing key costs s3fs a HEAD and then a listing, in turn, 190 ms a check on
        SeaweedFS, and a few dates need not list a table's whole history."""
        if not self.is_s3:
            return {p for p in paths if os.path.exists(p)}
        dates: dict[str, set[str]] = {}  # table folder -> its date folders asked about
        folders: set[str] = set()
        for p in paths:
            if "/date=" in p:
                table, rest = p.split("/date=", 1)
                dates.setdefault(table, set()).add(rest.split("/", 1)[0])
            else:
                folders.add(p.rsplit("/", 1)[0])
        for table, days in dates.items():
            # a date's folder, or a month's dates by one listing (`_listings`); a long history whole
            if len(days) > WHOLE_TABLE_DATES:
                folders.add(table)
            else:
                folders |= {f"{table}/date={d}" for d in days}
        listed = set(self.glob_many([f"{folder}/**" for folder in sorted(folders)]))
        return {p for p in paths if self.fs._strip_protocol(p) in listed}

    # ---- atomic writes ---------------------------------------------------------------
    def publish_file(self, local_file: str | Path, dest: str, move: bool = False) -> int:
        """Replace `dest` with `local_file` atomically; returns the bytes written.

        `move=True` lets a local lake take the staged file by rename (no copy) when both
        sit on one filesystem. No fsync: readers need atomic visibility, which rename and
        PUT give; a power cut may lose the newest version, never expose half of one.
        """
        size = os.path.getsize(local_file)
        if self.is_s3:
            # One PUT (multipart above the threshold): the object appears whole or not at all.
            self.fs.put_file(str(local_file), dest)
            return size
        if move:
            try:
                _in_folder(dest, lambda: os.replace(local_file, dest))
                return size
            except OSError:  # another filesystem: fall back to copy + rename
                pass
        tmp = f"{dest}.tmp-{uuid.uuid4().hex}"
        try:
            _in_folder(dest, lambda: shutil.copyfile(local_file, tmp))
            os.replace(tmp, dest)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
        return size

    def copy(self, src: str, dest: str) -> None:
        """Copy one object within the lake, atomically at the destination (server-side on S3)."""
        if self.is_s3:
            self.fs.copy(src, dest)
            return
        Path(dest).parent.mkdir(parents=True, exist_ok=True)
        tmp = f"{dest}.tmp-{uuid.uuid4().hex}"
        try:
            shutil.copyfile(src, tmp)
            os.replace(tmp, dest)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)

    def write_bytes(self, dest: str, data: bytes) -> None:
        if self.is_s3:
            self.fs.pipe_file(dest, data)
            return
        write_file_atomic(dest, data)

    def write_json(self, dest: str, obj: Any) -> None:
        # Compact: with `indent` Python's json falls back to its pure-Python encoder, 5-10x slower
        # than the C one, and a backfill of a sparse history writes a document per partition
        # (13,000 of them): py-spy samples of this method 4.3 -> 1.7 s. `jq` or
        # `python -m json.tool` pretty-print them.
        self.write_bytes(dest, json.dumps(obj, sort_keys=True, default=str, separators=(",", ":")).encode())

    def delete(self, path: str, recursive: bool = False) -> None:
        """Delete and verify: S3 batch deletes can report per-key errors inside a 200."""
        if not self.exists(path):
            return
        self.fs.rm(path, recursive=recursive)
        if self.is_s3:
            self.fs.invalidate_cache(path)
        # Check the objects, not the prefix: SeaweedFS keeps listing emptied folders.
        if recursive:
            left = [p for p, info in self.fs.find(path, detail=True).items() if info.get("type") != "directory"]
        else:
            left = [path] if self.exists(path) else []
        if left:
            raise StorageError(
                f"delete of {self.uri(path)} was not applied to {len(left)} object(s) (permission denied?)"
            )

    # ---- engines -----------------------------------------------------------------------
    def duckdb(self, database: str = ":memory:", read_only: bool = False) -> duckdb.DuckDBPyConnection:
        """A DuckDB connection that can read this lake (S3 through the fsspec filesystem)."""
        con = duckdb.connect(database, read_only=read_only)
        configure_duckdb(con, self.settings)
        if self.is_s3:
            con.register_filesystem(self.fs)
        return con

    def polars_storage_options(self) -> dict[str, str] | None:
        if not self.is_s3 or self.settings is None:
            return None
        s = self.settings
        opts = {"aws_region": s.aws_region, "aws_allow_http": "true"}
        if s.aws_endpoint_url:
            opts["aws_endpoint_url"] = s.aws_endpoint_url
        if s.aws_access_key_id:
            opts["aws_access_key_id"] = s.aws_access_key_id
        if s.aws_secret_access_key:
            opts["aws_secret_access_key"] = s.aws_secret_access_key
        return opts

    def __repr__(self) -> str:
        return f"Lake({self.url!r})"


class Mirror:
    """Local copies of the lake files one build reads, fetched together.

    DuckDB reads an S3 lake through the fsspec filesystem one file at a time, and each file
    costs several sequential round trips (its size, its footer, its columns): a day's refresh
    reads tens of small partitions per model, so it waited on the network, not on work (the
    curated step of a new day took 5.0 s on SeaweedFS against 1.0 s on a local lake). A build
    of a few dates asks for its files here instead: the ones not fetched yet are downloaded in
    one concurrent batch into a private folder that keeps the lake's layout (so hive partition
    values still come from the path), and DuckDB reads the copies. The folder belongs to one
    build and goes with it, so a copy is never older than the build; a local lake is read in
    place.
    """

    def __init__(self, lake: Lake, folder: Path):
        self.lake, self.folder = lake, Path(folder)
        self._local: dict[str, str] = {}

    def uris(self, paths: list[str]) -> list[str]:
        """What DuckDB should read for each lake path (a local copy on S3)."""
        if not self.lake.is_s3:
            return [self.lake.uri(p) for p in paths]
        missing = list(dict.fromkeys(p for p in paths if p not in self._local))
        if missing:
            targets = [str(self.folder / p) for p in missing]
            for t in {str(Path(t).parent) for t in targets}:
                Path(t).mkdir(parents=True, exist_ok=True)
            self.lake.fs.get(missing, targets)  # s3fs: one batch of concurrent GETs
            self._local.update(zip(missing, targets, strict=True))
        return [self._local[p] for p in paths]


def sha256_file(path: str | Path) -> str:
    """The sha256 of a local file (a lake partition's version, as the landing records it)."""
    with open(path, "rb") as fh:
        return _sha256_stream(fh)


def _sha256_stream(fh: Any) -> str:
    h = hashlib.sha256()
    for block in iter(lambda: fh.read(1 << 20), b""):
        h.update(block)
    return h.hexdigest()


def configure_duckdb(con: duckdb.DuckDBPyConnection, settings: Settings | None) -> None:
    con.execute("SET TimeZone = 'UTC'")
    if settings is not None:
        con.execute(f"SET memory_limit = '{settings.duckdb_memory_limit}'")
        con.execute(f"SET threads = {int(settings.duckdb_threads)}")
        # An in-memory database spills past memory_limit into ./.tmp of whatever folder the
        # process runs in (a full build of the benchmark lake did, inside the checkout).
        # DuckDB creates the folder when it first spills, but not its parents.
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        con.execute(f"SET temp_directory = '{str(settings.data_dir / '.duckdb_tmp').replace(chr(39), chr(39) * 2)}'")


# Folders this process made or found, so that a write into one does not ask for it again. A sparse
# history's backfill writes 13,000 documents and publishes 10,000 files, most into a folder an
# earlier write made: `mkdir(parents=True, exist_ok=True)` on an existing folder is a failing
# system call and a Python exception each (1.2 s of py-spy samples). A folder removed since (a
# partition deleted, a lake wiped) is made again: the write that finds it missing retries once.
_FOLDERS: set[str] = set()
_MAX_FOLDERS = 200_000


def _in_folder(dest: str | Path, write: Callable[[], object]) -> None:
    """`write()` a file at `dest`, its folder made first unless this process knows it is there."""
    folder = os.path.dirname(dest)
    known = folder in _FOLDERS
    if not known:
        _make_folder(folder)
    try:
        write()
    except FileNotFoundError:
        if not known or os.path.isdir(folder):
            raise  # the folder is there: what is missing is something else (the source of a move)
        _make_folder(folder)  # removed since this process made or found it
        write()


def _make_folder(folder: str) -> None:
    Path(folder).mkdir(parents=True, exist_ok=True)
    if len(_FOLDERS) >= _MAX_FOLDERS:
        _FOLDERS.clear()
    _FOLDERS.add(folder)


def write_file_atomic(dest: str | Path, data: bytes) -> None:
    """Replace a local file whole (temporary name, then rename): readers see the old or the new."""
    tmp = f"{dest}.tmp-{uuid.uuid4().hex}"

    def write() -> None:
        with open(tmp, "wb") as fh:
            fh.write(data)

    try:
        _in_folder(dest, write)
        os.replace(tmp, dest)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


@contextmanager
def staging_dir(settings: Settings | None) -> Iterator[Path]:
    """A private local folder for files on their way to the lake, removed afterwards.

    Removed off the caller's path: renamed into `.staging/.trash` (one rename) and deleted there
    by a background thread. A stage is a tree of one folder per partition (DuckDB's partitioned
    COPY), and deleting folders is what the file system does slowest here (freeing each one's
    block, discarded on this disk): a sparse history's backfill waited 4.0 s on its stages'
    13,000 folders while the second core was idle. What a process leaves in the trash (it was
    killed, or a forked step ended with `os._exit`) the next process that stages deletes."""
    base = (settings.data_dir if settings else Path.cwd()) / ".staging"
    base.mkdir(parents=True, exist_ok=True)
    path = base / uuid.uuid4().hex
    path.mkdir()
    try:
        yield path
    finally:
        _TRASH.discard(base, path)


_TRASH_PER_CALL = 256  # folders per `rm` call: its argument list stays far below the system's limit


class _Trash:
    """Folders to delete, handed to one background thread per process; drained at exit."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pid: int | None = None
        self._queue: queue.Queue[Path] | None = None
        self._swept: set[Path] = set()

    def discard(self, base: Path, path: Path) -> None:
        trash = base / ".trash"
        try:
            trash.mkdir(exist_ok=True)
            moved = trash / path.name
            os.replace(path, moved)
        except OSError:  # e.g. a file still open on a system that forbids the rename: delete here
            shutil.rmtree(path, ignore_errors=True)
            return
        pending = self._worker()
        if trash not in self._swept:
            # leftovers of processes that did not drain their trash; deleting one twice is harmless
            self._swept.add(trash)
            for left in trash.iterdir():
                if left != moved:
                    pending.put(left)
        pending.put(moved)

    def _worker(self) -> queue.Queue[Path]:
        with self._lock:
            if self._queue is None or self._pid != os.getpid():  # first use, or a forked child: no thread
                self._pid, self._queue, self._swept = os.getpid(), queue.Queue(), set()
                threading.Thread(target=self._run, args=(self._queue,), name="staging-trash", daemon=True).start()
                atexit.register(self.drain)
            return self._queue

    @staticmethod
    def _run(pending: queue.Queue[Path]) -> None:
        # Deleted by `rm -rf` in a child process where there is one, the thread only waiting on it:
        # `shutil.rmtree` here made one system call per file and folder (26,000 in a sparse
        # history's backfill), each taking the GIL back from the thread doing the run's work.
        # Five alternated pairs of that backfill: 45.4 s with `rm`, 48.6 s with `rmtree` (means;
        # docs/performance.md 2026-12-08, evening). `rmtree` still follows, for what `rm` left.
        rm = shutil.which("rm")
        while True:
            paths = [pending.get()]
            while len(paths) < _TRASH_PER_CALL:  # what else is waiting goes in the same call
                try:
                    paths.append(pending.get_nowait())
                except queue.Empty:
                    break
            try:
                if rm:
                    # no process to start (OSError): rmtree below does it all
                    with contextlib.suppress(OSError, subprocess.SubprocessError):
                        subprocess.run([rm, "-rf", "--", *map(str, paths)], check=False, stdin=subprocess.DEVNULL)
                for path in paths:
                    shutil.rmtree(path, ignore_errors=True)
            except Exception:  # never die: the exit waits on this queue (a folder left is swept later)
                pass
            finally:
                for _ in paths:
                    pending.task_done()

    def drain(self) -> None:
        """Wait until every folder handed over so far is deleted (at exit, and for tests)."""
        with self._lock:
            pending = self._queue if self._pid == os.getpid() else None
        if pending is not None:
            pending.join()


_TRASH = _Trash()


def drain_staging_trash() -> None:
    """Wait until the stages this process left are deleted (the exit waits for it anyway)."""
    _TRASH.drain()


# ---- storage failures, explained ---------------------------------------------------------------
# Exception class names (and message fragments) of the S3 client stack, by what they mean. The
# stack is s3fs -> aiobotocore -> aiohttp, and a failure arrives wrapped in any of them (or
# serialised by Dagster, where only names and messages survive), so names are matched, not types.
_DENIED = ("PermissionError", "AccessDenied", "Forbidden", "InvalidAccessKeyId", "SignatureDoesNotMatch")
_UNREACHABLE = (
    "ConnectionRefusedError",
    "ClientConnectorError",
    "EndpointConnectionError",
    "ServerDisconnectedError",
    "Cannot connect to host",
    "Connection refused",
)


def explain_storage_failure(chain: Iterable[tuple[str, str]], settings: Settings | None) -> str | None:
    """One line saying which endpoint, what happened and the likely cause, from a chain of
    (exception class name, message) pairs; None when the chain is not a storage failure."""
    endpoint = (settings.aws_endpoint_url if settings else None) or "the S3 endpoint"
    lake = settings.lake_url if settings else "the lake"
    for name, message in chain:
        text = f"{name} {message}"
        if any(k in text for k in _DENIED):
            return (
                f"storage at {endpoint} refused the request ({message.strip()[:160] or name}) for {lake}: "
                "the credentials were refused or lack permission; check AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY"
            )
        if any(k in text for k in _UNREACHABLE):
            return (
                f"storage at {endpoint} is unreachable ({message.strip()[:160] or name}) for {lake}: "
                "is the S3 server running and AWS_ENDPOINT_URL right?"
            )
    return None


def exception_chain(exc: BaseException) -> list[tuple[str, str]]:
    """(class name, message) of an exception and everything that caused it, outermost first."""
    out: list[tuple[str, str]] = []
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        out.append((type(current).__name__, str(current)))
        current = current.__cause__ or current.__context__
    return out
