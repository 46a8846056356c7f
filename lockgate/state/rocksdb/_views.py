"""What 'checkpoint' queries read on RocksDB: the state of the last completed checkpoint.

A snapshot's synchronous part makes a RocksDB checkpoint (hard links to the database's files, which
later writes never change). While queries want checkpoint views, the backend keeps that directory
past the snapshot's upload; once the checkpoint completes it answers the queries, opened read-only
at the first one, until the next checkpoint completes. (A RocksDB snapshot would do for point reads,
but rocksdict's snapshot iterators read the live database, and a map's or list's entries need one.)
"""

from __future__ import annotations

import shutil
from typing import TYPE_CHECKING, Any

from rocksdict import Rdict

from lockgate.state._states import DEFAULT_NAMESPACE
from lockgate.state.rocksdb._encoding import CF_PREFIX
from lockgate.state.rocksdb._reading import _open_read_only

if TYPE_CHECKING:
    from lockgate.state.rocksdb._store import _EntrySpace, _Space, _Store, _Table


class CheckpointView:
    """The states of one checkpoint, as its snapshot froze them, in the RocksDB checkpoint at
    ``path``; :meth:`discard` closes and deletes it (blocking: in a worker thread)."""

    __slots__ = ("_db", "_spaces", "path", "tables")

    def __init__(self, path: str, tables: dict[str, _Table]) -> None:
        self.path = path
        self.tables = tables
        self._db: Rdict | None = None
        self._spaces: dict[str, _Space | _EntrySpace] = {}

    def __repr__(self) -> str:
        return f"<CheckpointView {self.path} [{'open' if self._db is not None else 'closed'}]>"

    def space(self, store: _Store, state: str) -> _Space | _EntrySpace | None:
        """The default namespace of ``state`` as the checkpoint holds it, None if the state was
        registered after it. The first call opens the checkpoint (a few milliseconds, once per
        checkpoint; reads then cost what reads of the live database do)."""
        space = self._spaces.get(state)
        if space is not None:
            return space
        table = self.tables.get(state)
        if table is None:
            return None
        if self._db is None:
            self._db = _open_read_only(self.path, self.tables)
        space = table.space(store, DEFAULT_NAMESPACE)  # outside any batch: reads go to its family
        family: Any = self._db.get_column_family(CF_PREFIX + state)
        space.cf = family
        self._spaces[state] = space
        return space

    def discard(self) -> None:
        """Close the checkpoint and delete its directory."""
        db, self._db = self._db, None
        self._spaces.clear()
        if db is not None:
            db.close()
        shutil.rmtree(self.path, ignore_errors=True)
