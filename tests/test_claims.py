"""Partition claims (delivery_lake/claims.py) between real processes: exclusive, free again the moment
their holder is killed, bounded waits that name the holder, and landing publishes under them."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from delivery_lake import claims as claims_module
from delivery_lake.claims import Claims, ClaimTimeout
from delivery_lake.config import Settings
from delivery_lake.contract import TABLES
from delivery_lake.landing import Landing
from delivery_lake.storage import Lake
from tests.helpers import START

KEY = ("landing", "orders", "2026-01-05", "C001")


def _python(code: str) -> subprocess.Popen:
    root = Path(__file__).resolve().parent.parent
    return subprocess.Popen(
        [sys.executable, "-c", code],
        cwd=root,
        env={**os.environ, "PYTHONPATH": str(root)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _hold_forever(root: Path, key: tuple[str, ...] = KEY, seconds: float = 120) -> subprocess.Popen:
    """A process that takes the claim, says so on stdout, and holds it for `seconds`."""
    proc = _python(
        "import sys, time\n"
        "from delivery_lake.claims import Claims\n"
        f"with Claims({str(root)!r}).hold(*{key!r}):\n"
        "    print('held', flush=True)\n"
        f"    time.sleep({seconds})\n"
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    assert line.strip() == "held", proc.communicate()[1][-2000:]
    return proc


def test_claims_exclude_each_other_across_processes(tmp_path: Path) -> None:
    journal = tmp_path / "journal"
    code = (
        "import os, time\n"
        "from delivery_lake.claims import Claims\n"
        f"claims = Claims({str(tmp_path / 'claims')!r})\n"
        "for _ in range(15):\n"
        f"    with claims.hold(*{KEY!r}):\n"
        f"        fd = os.open({str(journal)!r}, os.O_WRONLY | os.O_CREAT | os.O_APPEND)\n"
        "        os.write(fd, f'in {os.getpid()}\\n'.encode())\n"
        "        time.sleep(0.005)\n"
        "        os.write(fd, f'out {os.getpid()}\\n'.encode())\n"
        "        os.close(fd)\n"
    )
    procs = [_python(code) for _ in range(3)]
    errs = [p.communicate(timeout=120)[1] for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0], errs
    lines = journal.read_text().split()
    events = list(zip(lines[0::2], lines[1::2], strict=True))
    assert len(events) == 2 * 3 * 15
    # Strictly in, out, in, out...: nobody entered while another was inside, and each left itself.
    for (kind_in, pid_in), (kind_out, pid_out) in zip(events[0::2], events[1::2], strict=True):
        assert (kind_in, kind_out, pid_in) == ("in", "out", pid_out)
    assert len({pid for _, pid in events}) == 3
    assert not list((tmp_path / "claims").rglob("*.claim"))  # released claims leave no file


def test_the_claim_of_a_killed_holder_is_taken_at_once_and_says_who_held_it(tmp_path: Path) -> None:
    claims = Claims(tmp_path / "claims", wait_seconds=5)
    holder = _hold_forever(tmp_path / "claims")
    try:
        record = claims.holder(*KEY)
        assert record is not None and record["pid"] == holder.pid and record["host"]
        holder.send_signal(signal.SIGKILL)
        holder.wait(timeout=30)
    finally:
        if holder.poll() is None:
            holder.kill()
    # The file is still there with the dead holder's record; its lock died with the process.
    assert claims.path(*KEY).exists()
    started = time.monotonic()
    with claims.hold(*KEY):
        waited = time.monotonic() - started
        assert claims.holder(*KEY)["pid"] == os.getpid()  # type: ignore[index]
    assert waited < 1.0, waited
    assert not claims.path(*KEY).exists()


def test_a_claim_held_too_long_times_out_naming_the_holder(tmp_path: Path) -> None:
    holder = _hold_forever(tmp_path / "claims")
    try:
        with pytest.raises(ClaimTimeout, match=f"'pid': {holder.pid}"), Claims(tmp_path / "claims", 0.3).hold(*KEY):
            pytest.fail("the claim was taken while another process held it")
        # Another partition is not held up by it.
        with Claims(tmp_path / "claims", 0.3).hold("landing", "orders", "2026-01-05", "C002"):
            pass
    finally:
        holder.kill()
        holder.wait(timeout=30)


def test_the_holder_is_recorded_on_the_inode_or_else_in_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The record is an extended attribute where the file system has them (the claim file stays
    empty: no data block to allocate and free per partition), and the file's content where not;
    `holder` reads either."""
    claims = Claims(tmp_path / "claims")
    with claims.hold(*KEY):
        path = claims.path(*KEY)
        record = claims.holder(*KEY)
        assert record is not None and record["pid"] == os.getpid() and record["host"] and record["since"]
        assert path.stat().st_size == 0
        host, pid, _since = os.getxattr(path, claims_module.HOLDER_ATTRIBUTE).decode().split(" ")
        assert (host, int(pid)) == (record["host"], os.getpid())
    assert not path.exists()

    def refused(*_args: object) -> None:
        raise OSError(95, "Operation not supported")

    monkeypatch.setattr(os, "setxattr", refused)
    with claims.hold(*KEY):
        assert path.stat().st_size > 0
        assert claims.holder(*KEY)["pid"] == os.getpid()  # type: ignore[index]
    assert claims.holder(*KEY) is None


def test_landing_publishes_a_partition_only_once_its_claim_is_free(local_settings: Settings) -> None:
    lake = Lake.from_settings(local_settings)
    day = START.isoformat()
    claims = lake.claims()
    assert claims.root == Path(lake.root) / "_meta" / "claims"
    landing = Landing(lake, local_settings.inbox_dir, local_settings)
    for name in ("clients", "depots"):
        landing.land_dimension(TABLES[name])
    hold_seconds = 6.0
    holder = _hold_forever(claims.root, ("landing", "orders", day, "C002"), seconds=hold_seconds)
    held_until = time.time() + hold_seconds
    try:
        report = landing.land_fact(TABLES["orders"], {day: None})
    finally:
        holder.wait(timeout=60)
    assert {(p.date, p.client) for p in report.partitions} >= {(day, "C001"), (day, "C002")}
    manifests = Path(lake.meta_path("landing", "orders", f"date={day}"))
    # The held partition's manifest was written after its holder let go, the others' before.
    assert (manifests / "client=C002.json").stat().st_mtime >= held_until - 0.5
    assert (manifests / "client=C001.json").stat().st_mtime < held_until - 1.0
