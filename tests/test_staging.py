"""Stages (storage.staging_dir): private local folders on the way to the lake, leaving nothing behind.

A stage leaves its place at once (renamed into `.staging/.trash`) and is deleted by a background
thread of the process; what a process could not delete (killed, or a forked step ending with
`os._exit`) is deleted by the next process that stages."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from delivery_lake.config import Settings
from delivery_lake.storage import Lake, _in_folder, drain_staging_trash, staging_dir, write_file_atomic


def _settings(tmp_path: Path) -> Settings:
    return Settings.from_env(data_dir=tmp_path / "data", lake_url=str(tmp_path / "lake"))


def _fill(folder: Path, n: int = 40) -> None:
    # the shape of a partitioned COPY's output: a folder per date and client, a file in each
    for i in range(n):
        part = folder / f"d=2026-01-{i % 28 + 1:02d}" / f"c=C{i}"
        part.mkdir(parents=True)
        (part / "data_0.parquet").write_bytes(b"x" * 100)


def test_a_stage_leaves_its_place_at_once_and_is_deleted_in_the_background(tmp_path: Path) -> None:
    settings = _settings(tmp_path)
    with staging_dir(settings) as stage:
        _fill(stage)
        assert len(list(stage.rglob("*.parquet"))) == 40
    assert not stage.exists()  # gone from .staging before the caller goes on
    drain_staging_trash()
    base = settings.data_dir / ".staging"
    assert [p.name for p in base.iterdir()] == [".trash"] and list((base / ".trash").iterdir()) == []


def test_what_a_dead_process_left_in_the_trash_goes_with_the_next_stage(tmp_path: Path) -> None:
    settings = _settings(tmp_path)
    left = settings.data_dir / ".staging" / ".trash" / "0123abcd"
    _fill(left, 5)
    with staging_dir(settings) as stage:
        (stage / "one.parquet").write_bytes(b"y")
    drain_staging_trash()
    assert not left.exists() and list(left.parent.iterdir()) == []


def test_a_forked_process_deletes_its_own_stages(tmp_path: Path) -> None:
    """A child forked after the parent staged (the forkserver's steps) has no trash thread of
    its own until it stages: it starts one, and its stages go too."""
    settings = _settings(tmp_path)
    with staging_dir(settings) as stage:
        _fill(stage, 3)
    drain_staging_trash()
    pid = os.fork()
    if pid == 0:  # the child: stage, drain, report by exit code only
        code = 1
        try:
            with staging_dir(settings) as child_stage:
                _fill(child_stage, 10)
            drain_staging_trash()
            trash = settings.data_dir / ".staging" / ".trash"
            code = 0 if not child_stage.exists() and list(trash.iterdir()) == [] else 2
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0


def test_a_folder_removed_after_a_write_is_made_again_by_the_next_write(tmp_path: Path) -> None:
    """Writes remember the folders they made (storage._in_folder); a folder deleted since, by this
    process or another, is made again rather than failing the write or landing it elsewhere."""
    lake = Lake.from_settings(_settings(tmp_path))
    doc = lake.meta_path("quality", "orders", "date=2026-01-02", "client=C1.json")
    lake.write_json(doc, {"passed": True})
    staged = tmp_path / "staged.parquet"
    for _ in range(2):  # the second round writes into folders this process remembers, then removed
        target = lake.data_file("raw", "orders", "2026-01-02", "C1")
        staged.write_bytes(b"PAR1")
        assert lake.publish_file(staged, target, move=True) == 4 and not staged.exists()
        assert lake.read_json(doc) == {"passed": True} and Path(target).read_bytes() == b"PAR1"
        lake.delete(lake.table_dir("raw", "orders"), recursive=True)
        lake.delete(lake.meta_path("quality", "orders"), recursive=True)
        assert not Path(target).parent.exists() and not lake.exists(doc)
        write_file_atomic(doc, b'{"passed": true}')
    assert lake.read_json(doc) == {"passed": True}
    # a move whose source is missing fails, in a folder it knows, and is not retried forever
    Path(target).parent.mkdir(parents=True)
    with pytest.raises(FileNotFoundError):
        _in_folder(target, lambda: os.replace(tmp_path / "gone.parquet", target))
    _in_folder(target, lambda: None)  # now remembered
    with pytest.raises(FileNotFoundError):
        _in_folder(target, lambda: os.replace(tmp_path / "gone.parquet", target))
    assert not Path(target).exists()


@pytest.mark.parametrize("rm", ["found", "missing"])
def test_the_trash_deletes_every_folder_handed_over_with_rm_or_without(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, rm: str
) -> None:
    """More folders than one `rm` call takes, deleted by `rm -rf` or, where it cannot be started,
    by `shutil.rmtree`; the queue is done with each one."""
    import queue
    import shutil
    import threading

    from delivery_lake import storage

    if rm == "missing":
        monkeypatch.setattr(shutil, "which", lambda _name: str(tmp_path / "no-rm-here"))
    folders = []
    for i in range(storage._TRASH_PER_CALL + 30):
        folder = tmp_path / "trash" / f"stage{i}"
        _fill(folder, n=2)
        folders.append(folder)
    pending: queue.Queue[Path] = queue.Queue()
    for folder in folders:
        pending.put(folder)
    threading.Thread(target=storage._Trash._run, args=(pending,), daemon=True).start()
    pending.join()
    assert not [f for f in folders if f.exists()] and (tmp_path / "trash").exists()
