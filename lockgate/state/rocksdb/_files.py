"""Local files of the RocksDB backend: subtasks' working directories (made, reclaimed, removed), file I/O."""

from __future__ import annotations

import glob
import logging
import os
import re
import shutil
import tempfile

from rocksdict import Rdict

from lockgate._processes import process_alive

logger = logging.getLogger("lockgate")


#: A working directory's name starts with this and the id of the process that made it.
_WORKING_PREFIX = "lockgate-rocksdb-p"
_WORKING_NAME = re.compile(re.escape(_WORKING_PREFIX) + r"(\d+)-")
_reclaimed: set[str] = set()  # the directories swept by this process already


def reclaim_working_directories(local_dir: str | None) -> list[str]:
    """Delete the working directories under ``local_dir`` (the system temporary directory if None)
    that processes no longer running left behind: a process killed with SIGKILL never deletes its own.
    Done once per directory and process; returns what it deleted. A directory whose process id is
    alive, or that lockgate did not name, is never touched."""
    where = local_dir if local_dir is not None else tempfile.gettempdir()
    if where in _reclaimed:
        return []
    _reclaimed.add(where)
    deleted = []
    try:
        names = os.listdir(where)
    except OSError:
        return []
    for name in names:
        match = _WORKING_NAME.match(name)
        if match is None or process_alive(int(match[1])):
            continue
        shutil.rmtree(os.path.join(where, name), ignore_errors=True)
        deleted.append(name)
    if deleted:
        logger.info(
            "deleted %d RocksDB working director(ies) in %s left by processes no longer running",
            len(deleted),
            where,
        )
    return deleted


def _close_and_remove(db: Rdict | None, column_families: list[str], path: str) -> None:
    try:
        if db is not None:
            # Dropping the states' column families first spares the flush of their memtables that
            # closing a database without a WAL does (rocksdict has no avoid_flush_during_shutdown).
            for name in column_families:
                db.drop_column_family(name)
            db.close()
    finally:
        shutil.rmtree(path, ignore_errors=True)
        # Snapshot checkpoints whose asynchronous part never ran (the job ended first).
        for leftover in glob.glob(glob.escape(path) + ".snapshot-*"):
            shutil.rmtree(leftover, ignore_errors=True)


def _read_file(path: str) -> bytes:
    with open(path, "rb") as file:
        return file.read()


def _read_files(directory: str, names: list[str]) -> dict[str, bytes]:
    return {name: _read_file(os.path.join(directory, name)) for name in names}


def _write_file(path: str, data: bytes) -> None:
    with open(path, "wb") as file:
        file.write(data)
