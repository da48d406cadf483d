"""The S3 side of the lake against a real SeaweedFS server (fixtures in tests/s3_server.py)."""

from __future__ import annotations

import dataclasses
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from delivery_lake.storage import MONTH_LISTING_DATES, Lake, StorageError
from infra.processes import listening, pid_alive, port_is_free
from infra.seaweed import SeaweedServer, identities_config, s3_filesystem
from tests.s3_server import SeaweedInfo  # fixtures `seaweed` and `s3_settings` come from conftest.py

pytestmark = pytest.mark.s3


@pytest.fixture(autouse=True)
def _own_filesystems() -> None:
    """Each test's lakes get filesystems of their own (a process shares one per credentials): the
    request counters below patch a lake's filesystem."""
    from delivery_lake import storage

    storage._S3_FILESYSTEMS.clear()


ROOT = Path(__file__).resolve().parents[1]  # `python -m infra.seaweed` runs from the repository root


def _table() -> pa.Table:
    return pa.table({"order_id": [1, 2, 3], "client": ["a", "b", "a"], "amount": [9.5, 12.0, 3.25]})


# ---- the manager ------------------------------------------------------------------------------
def test_server_starts_on_free_ports_and_stops(tmp_path: Path, seaweed: SeaweedInfo) -> None:
    """A second server coexists with the session one (all ports distinct); stop() ends its pid."""
    server = SeaweedServer().start(tmp_path / "sw", access_key="dev-key", secret_key="dev-secret", buckets=["bkt1"])
    pid, port = server.pid, server.s3_port
    try:
        assert pid and pid_alive(pid)
        assert server.endpoint_url == f"http://127.0.0.1:{port}"
        assert port != 8333 and port != seaweed.server.s3_port
        assert not set(server.ports.values()) & set(seaweed.server.ports.values())
        # start() returns once S3 serves signed requests; weed mini brings up its other
        # services (the admin UI last) around then, so give the rest a few seconds.
        deadline = time.monotonic() + 20
        while (silent := [n for n, p in server.ports.items() if not listening(p)]) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not silent, f"allocated but not listening: {silent}"
        assert (tmp_path / "sw" / "weed.log").stat().st_size > 0
        # keys-from-environment mode (no identities): right keys work, a wrong secret is denied
        fs = s3_filesystem(server.endpoint_url, "dev-key", "dev-secret")
        fs.pipe_file("bkt1/x.txt", b"hi")
        assert fs.cat_file("bkt1/x.txt") == b"hi"
        server.create_bucket("bkt2")
        server.create_bucket("bkt2")  # idempotent
        assert {"bkt1", "bkt2"} <= set(fs.ls(""))
        with pytest.raises(PermissionError):
            s3_filesystem(server.endpoint_url, "dev-key", "wrong").cat_file("bkt1/x.txt")
    finally:
        server.stop()
    assert not pid_alive(pid)
    assert not listening(port)
    assert port_is_free(port)
    assert seaweed.server.running()  # the other server was not touched


def test_identities_config_format() -> None:
    cfg = identities_config(
        {
            "pipeline": {"access_key": "p", "secret_key": "ps", "actions": ["Read", "Write"], "buckets": ["lake"]},
            "analyst": {"access_key": "a", "secret_key": "as", "actions": ["Read", "List:other"]},
        },
        "adm",
        "admsecret",
    )
    ids = {i["name"]: i for i in cfg["identities"]}
    assert ids["admin"]["credentials"] == [{"accessKey": "adm", "secretKey": "admsecret"}]
    assert "Admin" in ids["admin"]["actions"]
    assert ids["pipeline"]["actions"] == ["Read:lake", "Write:lake"]
    assert ids["analyst"]["actions"] == ["Read", "List:other"]


def test_cli_up_and_down(tmp_path: Path) -> None:
    port = None
    while port is None or not port_is_free(port):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
    cli = [sys.executable, "-m", "infra.seaweed"]
    pidfile = tmp_path / "weed.pid"
    base_env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_") and k != "LAKE_URL"}
    refused = subprocess.run(
        [*cli, "up", "--dir", str(tmp_path / "d"), "--port", str(port)],
        env=base_env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert refused.returncode == 2 and "AWS_ACCESS_KEY_ID" in refused.stderr
    env = {
        **base_env,
        "AWS_ACCESS_KEY_ID": "cli-key",
        "AWS_SECRET_ACCESS_KEY": "cli-secret",
        "LAKE_URL": "s3://clilake/x",
    }
    up = subprocess.run(
        [*cli, "up", "--dir", str(tmp_path / "d"), "--port", str(port), "--pidfile", str(pidfile)],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=90,
    )
    pid = int(pidfile.read_text()) if pidfile.exists() else None
    try:
        assert up.returncode == 0, up.stderr
        assert up.stdout.strip() == f"http://127.0.0.1:{port}"
        assert pid and pid_alive(pid)
        fs = s3_filesystem(up.stdout.strip(), "cli-key", "cli-secret")
        assert "clilake" in fs.ls("")  # bucket taken from LAKE_URL
    finally:
        down = subprocess.run(
            [*cli, "down", "--pidfile", str(pidfile)],
            env=base_env,
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert down.returncode == 0, down.stderr
    assert not pid_alive(pid)
    assert not pidfile.exists()


# ---- the lake on S3 ----------------------------------------------------------------------------
def test_lake_on_s3_roundtrip(s3_settings, tmp_path: Path) -> None:
    lake = Lake.from_settings(s3_settings)
    assert lake.is_s3 and lake.url == s3_settings.lake_url

    marker = lake.meta_path("marker.bin")
    lake.write_bytes(marker, b"\x00\x01")
    assert lake.exists(marker) and lake.fs.cat_file(marker) == b"\x00\x01"

    manifest = lake.meta_path("manifests", "run.json")
    lake.write_json(manifest, {"rows": 3, "ok": True})
    assert lake.read_json(manifest) == {"ok": True, "rows": 3}
    assert lake.read_json(lake.meta_path("missing.json"), default={}) == {}

    local = tmp_path / "part.parquet"
    pq.write_table(_table(), local)
    for date, client in [("2024-01-01", "a"), ("2024-01-02", "b")]:
        size = lake.publish_file(local, lake.data_file("raw", "orders", date, client))
        assert size == local.stat().st_size
    assert lake.list_partitions("raw", "orders") == [("2024-01-01", "a"), ("2024-01-02", "b")]
    assert lake.list_dates("raw", "orders") == ["2024-01-01", "2024-01-02"]

    one = lake.data_file("raw", "orders", "2024-01-01", "a")
    assert pq.read_table(one, filesystem=lake.fs).equals(_table())

    con = lake.duckdb()
    try:
        rows = con.execute(f"SELECT count(*), sum(amount) FROM read_parquet('{lake.uri(one)}')").fetchone()
        assert rows == (3, 24.75)
        by_date = con.execute(
            f"SELECT date, count(*) FROM read_parquet('{lake.glob_uri('raw', 'orders', True)}', hive_partitioning=true)"
            " GROUP BY 1 ORDER BY 1"
        ).fetchall()
        assert [(str(d), n) for d, n in by_date] == [("2024-01-01", 3), ("2024-01-02", 3)]
    finally:
        con.close()

    lake.delete(marker)
    assert not lake.exists(marker)
    lake.delete(marker)  # deleting what is gone is a no-op
    lake.delete(one)
    assert not lake.exists(one)
    assert lake.list_partitions("raw", "orders") == [("2024-01-02", "b")]


def test_json_documents_are_read_in_one_batch(s3_settings) -> None:
    """`read_jsons` gives what `read_json` gives, in order, None where a document is missing."""
    lake = Lake.from_settings(s3_settings)
    paths = [lake.meta_path("quality", "orders", f"date=2024-01-0{i}.json") for i in range(1, 5)]
    for i, path in enumerate(paths[:3]):
        lake.write_json(path, {"n": i, "text": "é"})
    wanted = [paths[2], lake.meta_path("nowhere.json"), paths[0], paths[1], paths[0]]
    assert lake.read_jsons(wanted) == [
        {"n": 2, "text": "é"},
        None,
        {"n": 0, "text": "é"},
        {"n": 1, "text": "é"},
        {"n": 0, "text": "é"},
    ]
    assert lake.read_jsons(wanted) == [lake.read_json(p) for p in wanted]
    assert lake.read_jsons([]) == []


def test_listed_documents_are_fetched_again_only_when_changed(s3_settings, tmp_path: Path) -> None:
    """`read_jsons_matching`: what the listing shows now, byte for byte; a document this process
    read before under the same ETag is served without a GET; an overwritten one is fetched anew,
    a deleted one is gone, a new one appears, also for another Lake object of the same process."""
    lake = Lake.from_settings(s3_settings)
    base = lake.meta_path("quality", "listed")
    paths = [f"{base}/date=2024-01-0{i}/client=a.json" for i in range(1, 4)]
    for i, path in enumerate(paths):
        lake.write_json(path, {"n": i})
    fetched = _count_gets(lake)
    pattern = [f"{base}/date=*/client=*.json"]
    assert lake.read_jsons_matching(pattern) == {p: {"n": i} for i, p in enumerate(paths)}
    assert fetched == [sorted(paths)]
    assert lake.read_jsons_matching(pattern) == {p: {"n": i} for i, p in enumerate(paths)}
    assert fetched == [sorted(paths)]  # nothing changed: no GET

    lake.write_json(paths[1], {"n": 10})  # overwritten
    lake.fs.rm(paths[2])
    assert not lake.exists(paths[2])  # deleted (verified, as the brief asks of deletes)
    extra = f"{base}/date=2024-01-09/client=b.json"
    lake.write_json(extra, {"n": 9})  # new
    assert lake.read_jsons_matching(pattern) == {paths[0]: {"n": 0}, paths[1]: {"n": 10}, extra: {"n": 9}}
    assert fetched[1:] == [sorted([paths[1], extra])]

    other = Lake.from_settings(s3_settings)  # the cache is the process's, the listing each call's
    other.write_json(paths[0], {"n": 100})
    assert lake.read_jsons_matching([paths[0], paths[2]]) == {paths[0]: {"n": 100}}
    # exact paths sharing a folder are found by one listing of it: present ones only
    third = f"{base}/date=2024-01-09/client=c.json"
    other.write_json(third, {"n": 3})
    assert lake.read_jsons_matching([extra, third, f"{base}/date=2024-01-09/client=z.json"]) == {
        extra: {"n": 9},
        third: {"n": 3},
    }


def test_listed_documents_are_kept_on_disk_for_the_next_process(s3_settings, tmp_path: Path) -> None:
    """A new process (every Dagster run is one) finds the documents an earlier one fetched in
    DATA_DIR/cache under their ETag, and fetches only those changed since; a cache it cannot
    write costs fetches, never a wrong document."""
    from delivery_lake import storage

    lake = Lake.from_settings(s3_settings)
    base = lake.meta_path("quality", "on_disk")
    paths = [f"{base}/date=2024-02-0{i}/client=a.json" for i in range(1, 5)]
    for i, path in enumerate(paths):
        lake.write_json(path, {"n": i})
    pattern = [f"{base}/date=*/client=*.json"]
    assert lake.read_jsons_matching(pattern) == {p: {"n": i} for i, p in enumerate(paths)}
    assert (s3_settings.data_dir / "cache" / "lake_documents.sqlite").is_file()

    def fresh_process_lake(settings) -> tuple[Lake, list[list[str]]]:
        # what a new process starts with: no documents in memory, no open cache connection
        storage._LISTED_FILES.entries.clear()
        storage._LISTED_FILES.bytes = 0
        storage._DOCUMENT_CACHES.clear()
        storage._S3_FILESYSTEMS.clear()
        new = Lake.from_settings(settings)
        return new, _count_gets(new)

    lake.write_json(paths[2], {"n": 20})  # changed after the first process read it
    new, fetched = fresh_process_lake(s3_settings)
    assert new.read_jsons_matching(pattern) == {p: {"n": 20 if i == 2 else i} for i, p in enumerate(paths)}
    assert fetched == [[paths[2]]]
    new, fetched = fresh_process_lake(s3_settings)
    assert new.read_jsons_matching(pattern)[paths[2]] == {"n": 20} and fetched == []

    # a DATA_DIR where the cache cannot be written: every document fetched, all correct
    blocked = tmp_path / "blocked"
    blocked.mkdir()
    (blocked / "cache").write_text("a file where the cache folder would be")
    new, fetched = fresh_process_lake(dataclasses.replace(s3_settings, data_dir=blocked))
    assert new.read_jsons_matching(pattern)[paths[3]] == {"n": 3} and fetched == [sorted(paths)]


def test_a_builds_copies_keep_the_layout_and_are_fetched_once(s3_settings, tmp_path: Path) -> None:
    """storage.Mirror: the files a build reads, fetched together, byte for byte, under the lake's
    layout (DuckDB still reads hive partition values from the path); asked again, not refetched."""
    from delivery_lake.storage import Mirror

    lake = Lake.from_settings(s3_settings)
    local = tmp_path / "part.parquet"
    pq.write_table(_table(), local)
    paths = [lake.data_file("raw", "orders", d, c) for d, c in [("2024-01-01", "a"), ("2024-01-02", "b")]]
    for path in paths:
        lake.publish_file(local, path)
    fetched: list[list[str]] = []
    real_get = lake.fs.get

    def counting_get(rpaths: list[str], lpaths: list[str]) -> None:  # the real download, counted
        fetched.append(list(rpaths))
        real_get(rpaths, lpaths)

    lake.fs.get = counting_get  # type: ignore[method-assign]
    mirror = Mirror(lake, tmp_path / "copies")
    copies = mirror.uris(paths)
    assert fetched == [paths]
    assert all(not c.startswith("s3://") and Path(c).read_bytes() == local.read_bytes() for c in copies)
    assert mirror.uris([paths[1], paths[0], paths[1]]) == [copies[1], copies[0], copies[1]]
    assert fetched == [paths]  # nothing fetched twice
    con = lake.duckdb()
    try:
        by_date = con.execute(
            f"SELECT date, client, count(*) FROM read_parquet({copies!r}, hive_partitioning=true) "
            "GROUP BY ALL ORDER BY 1"
        ).fetchall()
    finally:
        con.close()
    assert [(str(d), c, n) for d, c, n in by_date] == [("2024-01-01", "a", 3), ("2024-01-02", "b", 3)]
    # a local lake is read in place
    in_place = Lake(str(tmp_path / "lake"))
    assert Mirror(in_place, tmp_path / "unused").uris([in_place.path("x")]) == [in_place.path("x")]


def test_columns_of_a_whole_table_are_read_by_pyarrows_s3_client(
    s3_settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Lake.read_columns (the checks' key snapshots on S3): the same rows DuckDB reads, partition
    values as text from the path (a client id 007 is not the number 7), None for no file."""
    lake = Lake.from_settings(s3_settings)
    local = tmp_path / "part.parquet"
    pq.write_table(_table(), local)
    for d, c in [("2024-01-01", "007"), ("2024-01-02", "b")]:
        lake.publish_file(local, lake.data_file("raw", "orders", d, c))
    got = lake.read_columns("raw", "orders", ["order_id"], partitioned=True)
    assert got.column_names == ["order_id", "date", "client"]
    assert sorted(zip(*got.to_pydict().values(), strict=True)) == sorted(
        (i, d, c) for d, c in [("2024-01-01", "007"), ("2024-01-02", "b")] for i in (1, 2, 3)
    )
    lake.publish_file(local, lake.data_file("raw", "clients"))
    assert lake.read_columns("raw", "clients", ["client", "amount"], partitioned=False).to_pydict() == {
        "client": ["a", "b", "a"],
        "amount": [9.5, 12.0, 3.25],
    }
    assert lake.read_columns("raw", "deliveries", ["delivery_id"], partitioned=True) is None

    # Kept on disk under each file's ETag: a new Lake (as in a new process) reads the same rows
    # without fetching a file; a replaced file is read again, and what it holds now is served.
    from delivery_lake import storage

    storage._DOCUMENT_CACHES.clear()
    again = Lake.from_settings(s3_settings)
    fetched = _count_arrow_reads(again, monkeypatch)
    cached = again.read_columns("raw", "orders", ["order_id"], True).to_pydict().values()
    assert sorted(zip(*cached, strict=True)) == sorted(zip(*got.to_pydict().values(), strict=True))
    assert fetched == []
    pq.write_table(pa.table({"order_id": [7], "client": ["b"], "amount": [1.0]}), local)
    lake.publish_file(local, lake.data_file("raw", "orders", "2024-01-02", "b"))
    rows = sorted(zip(*again.read_columns("raw", "orders", ["order_id"], True).to_pydict().values(), strict=True))
    assert rows == [
        (1, "2024-01-01", "007"),
        (2, "2024-01-01", "007"),
        (3, "2024-01-01", "007"),
        (7, "2024-01-02", "b"),
    ]
    assert fetched == [[lake.data_file("raw", "orders", "2024-01-02", "b")]]


def _count_gets(lake: Lake) -> list[list[str]]:
    """The keys of each batch of GETs `lake`'s documents cost (the real requests, recorded)."""
    fetched: list[list[str]] = []
    real_cat = lake.fs.cat

    def counting_cat(keys: list[str], **kw: object) -> object:
        fetched.append(sorted(keys))
        return real_cat(keys, **kw)

    lake.fs.cat = counting_cat  # type: ignore[method-assign]
    return fetched


def _count_arrow_reads(lake: Lake, monkeypatch: pytest.MonkeyPatch) -> list[list[str]]:
    """The files each of `lake`'s pyarrow dataset reads opens (real reads, recorded)."""
    import pyarrow.dataset as ds

    seen: list[list[str]] = []
    real = ds.dataset

    def recording(source, *args, **kwargs):
        if isinstance(source, list) and kwargs.get("filesystem") is lake._arrow_fs():
            seen.append(sorted(source))
        return real(source, *args, **kwargs)

    monkeypatch.setattr(ds, "dataset", recording)
    return seen


def test_dates_and_existence_are_listed_in_few_requests(s3_settings) -> None:
    """list_dates from one recursive listing (partitioned by date and client, or by date only, and
    a date with a temporary file only is not a date); existing() asks for many paths at once."""
    lake = Lake.from_settings(s3_settings)
    for path in [
        lake.data_file("raw", "orders", "2024-01-01", "a"),
        lake.data_file("raw", "orders", "2024-01-03", "b"),
        lake.data_file("curated", "fct", "2024-01-02"),
        lake.partition_dir("raw", "orders", "2024-01-04", "c") + "/data.parquet.tmp-1",
    ]:
        lake.write_bytes(path, b"x")
    assert lake.list_dates("raw", "orders") == ["2024-01-01", "2024-01-03"]
    assert lake.list_dates("curated", "fct") == ["2024-01-02"]
    assert lake.list_dates("raw", "nothing") == []
    wanted = [
        lake.data_file("raw", "orders", d, c)
        for d, c in [("2024-01-01", "a"), ("2024-01-01", "b"), ("2024-01-03", "b")]
    ]
    assert lake.existing(wanted) == {wanted[0], wanted[2]}


def _count_requests(lake: Lake) -> list[str]:
    """The S3 operations `lake`'s filesystem sends from now on (the real requests, recorded)."""
    sent: list[str] = []
    real = lake.fs._call_s3

    async def counting(method: object, *args: object, **kwargs: object) -> object:
        sent.append(getattr(method, "__name__", str(method)))
        return await real(method, *args, **kwargs)

    lake.fs._call_s3 = counting  # type: ignore[method-assign]
    return sent


def test_a_months_dates_are_one_listing_and_an_empty_folder_costs_no_head(s3_settings) -> None:
    """Asked about many dates of one month, the lake lists the month's prefix once, and answers
    no date of it that was not asked; a few dates are a listing each; a date with nothing costs
    its listing only (s3fs followed an empty listing with a HEAD); a date's own document beside
    its clients' ones comes from the date's listing."""
    lake = Lake.from_settings(s3_settings)
    days = [f"2024-06-{d:02d}" for d in range(1, 8)]
    for d in [*days, "2024-06-09", "2024-07-01"]:
        for c in ("a", "b"):
            lake.write_bytes(lake.data_file("raw", "orders", d, c), b"x")
    sent = _count_requests(lake)
    asked = [*days, "2024-06-20"]  # the 20th has no data; the 9th is not asked
    assert len(asked) == MONTH_LISTING_DATES
    assert lake.list_partitions("raw", "orders", dates=asked) == [(d, c) for d in days for c in ("a", "b")]
    assert sent == ["list_objects_v2"]

    sent.clear()
    assert lake.list_partitions("raw", "orders", dates=["2024-06-09", "2024-06-21"]) == [
        ("2024-06-09", "a"),
        ("2024-06-09", "b"),
    ]
    assert sent == ["list_objects_v2", "list_objects_v2"]

    sent.clear()
    wanted = [lake.data_file("raw", "orders", d, c) for d, c in [("2024-06-03", "b"), ("2024-06-20", "a")]]
    wanted += [lake.data_file("raw", "orders", "2024-07-01", "a"), lake.data_file("raw", "orders", "2024-07-02", "a")]
    assert lake.existing(wanted) == {wanted[0], wanted[2]}
    assert sent == ["list_objects_v2"] * 4  # a listing per date, none followed by a HEAD

    sent.clear()
    folder = lake.meta_path("quality", "orders")
    docs = {f"{folder}/date=2024-06-03.json": {"date": 1}, f"{folder}/date=2024-06-03/client=a.json": {"client": 1}}
    for path, doc in docs.items():
        lake.write_json(path, doc)
    lake.write_json(f"{folder}/date=2024-06-04/client=a.json", {"other": 1})
    sent.clear()
    found = lake.read_jsons_matching([f"{folder}/date=2024-06-03/client=*.json", f"{folder}/date=2024-06-03.json"])
    assert found == docs
    assert sent == ["list_objects_v2", "get_object", "get_object"]


def test_recursive_delete_of_a_prefix(s3_settings) -> None:
    lake = Lake.from_settings(s3_settings)
    for date in ("2024-01-01", "2024-01-02"):
        lake.write_bytes(lake.data_file("raw", "orders", date, "a"), b"x")
    table = lake.table_dir("raw", "orders")
    lake.delete(table, recursive=True)
    assert [p for p, i in lake.fs.find(table, detail=True).items() if i["type"] != "directory"] == []
    assert lake.list_partitions("raw", "orders") == []
    assert lake.list_dates("raw", "orders") == []


def test_analyst_reads_but_cannot_write_or_delete(seaweed: SeaweedInfo, s3_settings, tmp_path: Path) -> None:
    lake = Lake.from_settings(s3_settings)
    obj = lake.meta_path("state.json")
    lake.write_json(obj, {"v": 1})
    analyst = Lake.from_settings(
        dataclasses.replace(
            s3_settings,
            aws_access_key_id=seaweed.analyst.access_key,
            aws_secret_access_key=seaweed.analyst.secret_key,
        )
    )
    assert analyst.read_json(obj) == {"v": 1}
    assert analyst.fs.ls(lake.meta_path()) == [obj]

    with pytest.raises(PermissionError):
        analyst.write_bytes(lake.meta_path("evil.bin"), b"x")
    with pytest.raises(PermissionError):
        analyst.write_json(obj, {"v": 2})
    local = tmp_path / "x.parquet"
    pq.write_table(_table(), local)
    with pytest.raises(PermissionError):
        analyst.publish_file(local, lake.data_file("raw", "orders", "2024-01-01", "a"))
    assert not lake.exists(lake.meta_path("evil.bin"))
    assert lake.read_json(obj) == {"v": 1}

    # s3fs rm() goes through DeleteObjects: SeaweedFS answers 200 with a per-key AccessDenied
    with pytest.raises(StorageError, match="not applied"):
        analyst.delete(obj)
    assert lake.exists(obj)

    lake.delete(obj)  # the pipeline identity may delete
    assert not lake.exists(obj)


def test_pipeline_is_limited_to_its_bucket(seaweed: SeaweedInfo) -> None:
    fs = s3_filesystem(seaweed.endpoint_url, seaweed.pipeline.access_key, seaweed.pipeline.secret_key)
    with pytest.raises(PermissionError):
        fs.mkdir("another-bucket")


@pytest.mark.parametrize("who", ["wrong-secret", "unknown-key"])
def test_bad_credentials_are_denied(seaweed: SeaweedInfo, s3_settings, who: str) -> None:
    Lake.from_settings(s3_settings).write_bytes(Lake.from_settings(s3_settings).meta_path("a.bin"), b"a")
    key = seaweed.pipeline.access_key if who == "wrong-secret" else "nobody"
    bad = Lake.from_settings(dataclasses.replace(s3_settings, aws_access_key_id=key, aws_secret_access_key="wrong"))
    with pytest.raises(PermissionError):
        bad.fs.cat_file(bad.meta_path("a.bin"))
    with pytest.raises(PermissionError):
        bad.read_json(bad.meta_path("a.bin"))
    with pytest.raises(PermissionError):  # a refused batch is an error, not a page of missing documents
        bad.read_jsons([bad.meta_path("a.bin"), bad.meta_path("c.json")])
    with pytest.raises(PermissionError):
        bad.write_bytes(bad.meta_path("b.bin"), b"b")
