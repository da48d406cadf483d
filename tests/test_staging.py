"""Stages (storage.staging_dir): private local folders on the way to the lake, leaving nothing behind.

A stage leaves its place at once (renamed into `.staging/.trash`) and is deleted by a background
thread of the process; what a process could not delete (killed, or a forked step ending with
`os._exit`) is deleted by the next process that stages."""

from __future__ import annotations

import os
from pathlib import Path

from delivery_lake.config import Settings
from delivery_lake.storage import drain_staging_trash, staging_dir


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
