"""The database of one subtask and its states' buffers: RocksDB keys, the batch cache, buffered writes."""

from __future__ import annotations

import itertools
import sys
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any, Final

from rocksdict import Checkpoint, Rdict, ReadOptions, WriteBatch, WriteOptions

from lockgate._errors import StateSerializationError, StateValueTooLargeError
from lockgate.state._descriptors import StateDescriptor
from lockgate.state._keygroups import KeyCache, hash_of_key_bytes
from lockgate.state._serialization import canonical_key_bytes
from lockgate.state._serializers import DEFAULT_SERIALIZER
from lockgate.state._snapshot import StateCodec
from lockgate.state._states import _KEEP, DEFAULT_NAMESPACE, MISSING
from lockgate.state.rocksdb._encoding import (
    _DEFAULT_NS_BYTES,
    _LEN,
    _PICKLED_KEY,
    _PICKLED_KEYS,
    _PLAIN,
    CF_PREFIX,
    _decode_key,
    _decodes_exactly,
    _payload,
    _prefix_end,
    _stored_keys,
)
from lockgate.state.rocksdb._files import _close_and_remove
from lockgate.state.rocksdb._options import _KEY_CACHE_ENTRY_BYTES

# What the batch cache holds for a key it has not read yet (MISSING means "read, and absent").
_UNKNOWN: Final = object()


class _ClosedFamily:
    """Stands for a column family after :meth:`RocksDBKeyedStateBackend.dispose`: any use says so."""

    def __init__(self, operator_uid: str) -> None:
        self._operator_uid = operator_uid

    def __getattr__(self, name: str) -> Any:
        raise RuntimeError(
            f"the RocksDB state of operator {self._operator_uid!r} is disposed: its subtask has ended"
        )


class _Table:
    """One state: its column family, how its values become bytes, and its buffers.

    A map or list state keeps one RocksDB entry per map entry or element (:class:`_MapSpace`,
    :class:`_ListSpace`); every other kind one entry per key and namespace (:class:`_Space`)."""

    __slots__ = (
        "cf",
        "codec",
        "decode_raw",
        "default",
        "descriptor",
        "encode",
        "encode_slow",
        "extra",
        "handle",
        "name",
    )

    def __init__(
        self,
        store: _Store,
        descriptor: StateDescriptor[Any],
        cf: Any,
        handle: Any,
        encode: Callable[[Any], bytes],
        decode_raw: Callable[[bytes], Any],
        codec: StateCodec,
        encode_slow: Callable[[Any], bytes] | None = None,
    ) -> None:
        self.name = descriptor.name
        self.descriptor = descriptor
        self.cf = cf
        self.handle = handle
        self.encode = encode
        #: Decodes a stored value, trailer included.
        self.decode_raw = decode_raw
        #: What to call when ``encode`` (a fast path) raises, if anything.
        self.encode_slow = encode_slow
        #: The state's codec: what a map's entries go through one by one.
        self.codec = codec
        #: The default namespace's buffers live as long as the table, so state objects can hold them.
        self.default: _Space | _EntrySpace = self.space(store, DEFAULT_NAMESPACE)
        #: Other namespaces' buffers, for the open batch only.
        self.extra: dict[Any, _Space | _EntrySpace] = {}

    @property
    def per_entry(self) -> bool:
        """Whether the state keeps one RocksDB entry per map entry or list element."""
        return self.descriptor.kind in ("map", "list")

    def space(self, store: _Store, namespace: Any) -> _Space | _EntrySpace:
        """New buffers of ``namespace``."""
        if self.descriptor.kind == "map":
            return _MapSpace(store, self, namespace)
        if self.descriptor.kind == "list":
            return _ListSpace(store, self, namespace)
        return _Space(store, self, namespace)


class _Namespace:
    """What the buffers of one state and namespace share, whatever the state's layout: the store, the
    table and its column family, and the RocksDB key bytes of a key in the namespace."""

    __slots__ = ("cf", "is_default", "limit", "ns_bytes", "store", "table")

    def __init__(self, store: _Store, table: _Table, namespace: Any) -> None:
        self.store = store
        self.table = table
        self.cf = table.cf
        self.limit = store.max_value_size
        self.ns_bytes = canonical_key_bytes(namespace)
        self.is_default = namespace is DEFAULT_NAMESPACE

    def key_bytes(self, key: Any) -> bytes:
        """The RocksDB key of ``key`` in this namespace (a map's or list's entries start with it)."""
        key_bytes = self.store.key_bytes(key)
        return key_bytes if self.is_default else key_bytes[:-1] + self.ns_bytes

    def check(self, key: Any, data: bytes) -> bytes:
        """``data``, unless it is larger than ``max_value_size``."""
        if len(data) > self.limit:
            raise StateValueTooLargeError(
                self.store.operator_uid, self.table.name, key, len(data), self.limit
            )
        return data

    def unwritable(self, key: Any, error: Exception) -> StateSerializationError:
        """The error for a value of ``key`` that its serializer cannot write, naming state and key."""
        reason = f"{type(error).__name__}: {error}"
        return StateSerializationError(self.store.operator_uid, self.table.name, key, reason)


class _Encoded:
    """A value the value cache holds as its serialised bytes (written at ``update``), not decoded: a
    value of a type it does not keep as an object, after the batch that wrote it."""

    __slots__ = ("data",)

    def __init__(self, data: bytes) -> None:
        self.data = data


#: Types whose values the value cache keeps as objects across batches: immutable, and pickled back
#: to an equal object of the same type, so handing out the cached object is handing out a copy.
_KEPT_TYPES: Final = frozenset({int, float, bool, str, bytes, type(None)})
#: The largest such object kept (``sys.getsizeof``); a larger one is kept as its bytes.
_MAX_KEPT_OBJECT: Final = 96
#: What one entry of the value cache is charged beyond its key object and any bytes it holds: its
#: slots in the cache's dict and set (values, dirty keys) and a small value object (112 bytes measured
#: for an int with tracemalloc).
_CACHE_ENTRY_BYTES: Final = 128


class _Space(_Namespace):
    """The entries of one state and namespace, one RocksDB entry per key, and their value cache.

    ``values`` maps keys to their current values: the object (MISSING if absent), or an
    :class:`_Encoded` with its bytes; ``dirty`` maps the keys whose value RocksDB does not have yet to
    what to write (MISSING, an :class:`_Encoded`, or a kept object, pickled when written), so writing
    them looks nothing up. :meth:`flush` writes them. Inside a batch reads and writes go to the
    cache; a read it cannot answer fetches the batch's keys with one multi-get.

    A *persistent* space (the default namespace of a value state without TTL stored with pickle)
    keeps its cache across batches, bounded by the store's value cache budget: plain immutable
    values as objects, others as the bytes written at ``update`` (decoded afresh at each batch's
    first read, as a read of RocksDB would). Its writes reach RocksDB when the cache evicts, after
    a snapshot's barrier (in steps, see :meth:`_Store.hold_back`), or before anything reads the
    column family directly. Other spaces
    flush and empty their cache at each batch's end. Outside a batch writes go to RocksDB at once.
    """

    __slots__ = (
        "charge",
        "decode_raw",
        "dirty",
        "encode",
        "held",
        "in_batch",
        "loaded",
        "persistent",
        "values",
    )

    def __init__(self, store: _Store, table: _Table, namespace: Any) -> None:
        super().__init__(store, table, namespace)
        self.encode = table.encode
        self.decode_raw = table.decode_raw
        self.values: dict[Any, Any] = {}
        self.dirty: dict[Any, Any] = {}
        # Keys whose cached object goes at the batch's end (a mutable value, or a large one): their
        # bytes if written in the batch (kept as an _Encoded), else None (dropped).
        self.held: dict[Any, bytes | None] = {}
        self.in_batch = False
        self.loaded = False
        #: The bytes the cache is charged for (see ``_Store.trim``).
        self.charge = 0
        self.persistent = (
            self.is_default
            and table.encode_slow is not None  # pickle: decode_raw reads bytes without a trailer
            and store.max_value_size >= 4 * _MAX_KEPT_OBJECT  # a kept object is never too large
            and store.value_cache_limit > 0
        )

    def open(self) -> None:
        self.in_batch = True
        self.loaded = False

    def close(self) -> None:
        """End the batch (its writes flushed, if not persistent): objects kept for it only go (their
        written bytes stay); a space that is not persistent empties its cache."""
        self.in_batch = False
        self.loaded = False
        held = self.held
        if not self.persistent:
            self.values.clear()
            self.dirty.clear()
            held.clear()
            self.charge = 0
            return
        if held:
            values = self.values
            for key, data in held.items():
                if data is None:
                    if values.pop(key, _UNKNOWN) is not _UNKNOWN:
                        self.charge -= self.charge_of(key, None)
                else:
                    values[key] = _Encoded(data)
                    self.charge += len(data)
            held.clear()

    def charge_of(self, key: Any, value: Any) -> int:
        """What the value cache charges for ``key``'s entry holding ``value``."""
        charge = _CACHE_ENTRY_BYTES + sys.getsizeof(key)
        return charge + len(value.data) if type(value) is _Encoded else charge

    # ---- reads

    def read(self, key: Any) -> Any:
        """The value of ``key`` (MISSING if absent), from the cache or from RocksDB; inside a batch a
        read the cache cannot answer fills it."""
        value = self.values.get(key, _UNKNOWN)
        if value is _UNKNOWN or type(value) is _Encoded:
            return self.miss(key) if self.in_batch else self.peek(key)
        return value

    def peek(self, key: Any) -> Any:
        """The value of ``key`` (MISSING if absent) without filling the cache: what a query reads."""
        value = self.values.get(key, _UNKNOWN)
        if value is _UNKNOWN:
            return self.read_direct(key)
        if type(value) is _Encoded:
            return self.decode_raw(value.data)  # a copy of its own, as RocksDB's would be
        return value

    def read_direct(self, key: Any) -> Any:
        raw = self.cf.get(self.key_bytes(key))
        return MISSING if raw is None else self.decode_raw(raw)

    def miss(self, key: Any) -> Any:
        """A read in a batch that the cache cannot answer: the first fetches every key of the batch
        the cache does not hold (one multi-get), then a key outside the batch is read alone."""
        values = self.values
        value = values.get(key, _UNKNOWN)
        if not self.loaded:
            self.loaded = True
            keys = [k for k in self.store.batch_keys if k not in values]
            if keys:
                self.keep(keys, self.fetch(keys))
                value = values.get(key, _UNKNOWN)
        if value is _UNKNOWN:
            self.keep([key], [self.read_direct(key)])
        elif type(value) is _Encoded:
            data = value.data
            values[key] = self.decode_raw(data)
            self.held[key] = data  # back to its bytes at the batch's end
            self.charge -= len(data)
        return values[key]

    def keep(self, keys: list[Any], found: list[Any]) -> None:
        """Cache the values ``found`` in RocksDB for ``keys`` (none of them cached)."""
        values, held, charge, persistent = self.values, self.held, 0, self.persistent
        for key, value in zip(keys, found, strict=True):
            values[key] = value
            charge += _CACHE_ENTRY_BYTES + sys.getsizeof(key)
            if not persistent or not (
                value is MISSING or (type(value) in _KEPT_TYPES and sys.getsizeof(value) <= _MAX_KEPT_OBJECT)
            ):
                held[key] = None
        self.charge += charge

    def fetch(self, keys: Sequence[Any]) -> list[Any]:
        """The values of ``keys`` in RocksDB (MISSING where absent), with one multi-get."""
        store = self.store
        if self.is_default:
            key_bytes = [store.key_bytes(key) for key in keys]
        else:
            key_bytes = [self.key_bytes(key) for key in keys]
        raws: list[bytes | None] = self.cf.get(key_bytes)
        decode_raw = self.decode_raw
        return [MISSING if raw is None else decode_raw(raw) for raw in raws]

    # ---- writes

    def encode_again(self, key: Any, value: Any, error: Exception) -> bytes:
        """What to do when the fast path of ``encode`` raised ``error``: the slow path, if any; a
        value that cannot be written at all is an error naming the state and the key."""
        encode_slow = self.table.encode_slow
        try:
            if encode_slow is None:
                raise error
            return encode_slow(value)
        except Exception as exc:
            raise self.unwritable(key, exc) from exc

    def encode_checked(self, key: Any, value: Any) -> bytes:
        try:
            return self.encode(value)
        except Exception as error:
            return self.encode_again(key, value, error)

    def put(self, key: Any, value: Any) -> None:
        if (
            self.in_batch
            and self.persistent
            and type(value) in _KEPT_TYPES
            and sys.getsizeof(value) <= _MAX_KEPT_OBJECT
        ):
            # The hot path: the object is cached and pickled when the cache writes it.
            values = self.values
            if key not in values:
                self.charge += _CACHE_ENTRY_BYTES + sys.getsizeof(key)
            else:
                self.replacing(key)
            values[key] = value
            self.dirty[key] = value
            return
        try:
            data = self.encode(value)
        except Exception as error:
            data = self.encode_again(key, value, error)
        if len(data) > self.limit:
            self.check(key, data)
        if not self.in_batch:
            self.store.settle()
            self.forget(key)
            self.put_direct(key, data)
            return
        if key not in self.values:
            self.charge += _CACHE_ENTRY_BYTES + sys.getsizeof(key)
        else:
            self.replacing(key)
        self.values[key] = value
        self.held[key] = data
        self.dirty[key] = _Encoded(data)

    def map_batch_nowait(
        self,
        keys: Sequence[Any],
        records: Sequence[Any],
        step: Callable[[Any, Any], tuple[Any, Any]],
        fresh_default: Callable[[], Any],
    ) -> list[Any]:
        """A value state's ``map_batch_nowait`` on this space: each record's value read, passed to
        ``step``, and what it gives back written. In a batch of a persistent space, a read the cache
        answers and a write of a small immutable value over a cached object are done inline (what
        :meth:`read` and :meth:`put` would do); everything else goes through them."""
        read, put, delete = self.read, self.put, self.delete
        fast = self.in_batch and self.persistent  # for the whole batch: only open and close change them
        values, dirty, held = self.values, self.dirty, self.held
        getsizeof = sys.getsizeof
        out: list[Any] = []
        append = out.append
        for key, record in zip(keys, records, strict=True):
            value = values.get(key, _UNKNOWN)
            if not fast or value is _UNKNOWN or type(value) is _Encoded:
                value = read(key)
            if value is MISSING:
                value = fresh_default()
            output, value = step(record, value)
            if value is None:
                delete(key)
            elif fast and not held and type(value) in _KEPT_TYPES and getsizeof(value) <= _MAX_KEPT_OBJECT:
                # put's hot path for a key the read just cached: with nothing held, replacing it
                # changes no charge.
                values[key] = value
                dirty[key] = value
            else:
                put(key, value)
            append(output)
        return out

    def replacing(self, key: Any) -> None:
        """``key``'s cached entry is about to hold a new object: what it held goes."""
        previous = self.values[key]
        if type(previous) is _Encoded:
            self.charge -= len(previous.data)
        elif self.held:
            self.held.pop(key, None)

    def forget(self, key: Any) -> None:
        """Drop ``key`` from the cache (a write outside a batch goes to RocksDB)."""
        value = self.values.pop(key, _UNKNOWN)
        if value is not _UNKNOWN:
            self.charge -= self.charge_of(key, value)
            self.dirty.pop(key, None)
            self.held.pop(key, None)

    def put_direct(self, key: Any, data: bytes) -> None:
        store = self.store
        self.cf.put(self.key_bytes(key), store.stored(key, data), store.write_options)

    def delete(self, key: Any) -> None:
        if not self.in_batch:
            self.store.settle()
            self.forget(key)
            self.cf.delete(self.key_bytes(key), self.store.write_options)
            return
        values = self.values
        if key not in values:
            self.charge += _CACHE_ENTRY_BYTES + sys.getsizeof(key)
        else:
            self.replacing(key)
        values[key] = MISSING
        self.dirty[key] = MISSING

    # ---- the cache

    def flush(self, batch: WriteBatch | None = None) -> None:
        """Write the dirty entries: into ``batch``, or with a WriteBatch of their own."""
        dirty = self.dirty
        if not dirty:
            return
        own = batch is None
        if batch is None:
            batch = WriteBatch(raw_mode=True)
        self.write(dirty.items(), batch)
        dirty.clear()
        if own:
            self.store.require_db().write(batch, self.store.write_options)

    def write(self, entries: Iterable[tuple[Any, Any]], batch: WriteBatch) -> None:
        """Add ``entries`` (key, what to write: see ``dirty``) to ``batch``."""
        put, delete, handle, encode = batch.put, batch.delete, self.table.handle, self.encode
        store = self.store
        stored = store.stored
        # The default namespace's key bytes are mostly in the store's key cache: looked up inline.
        cached = store.keys.entries if self.is_default else {}
        key_bytes_of = store.key_bytes if self.is_default else self.key_bytes
        for key, value in entries:
            key_bytes = cached.get(key)
            if key_bytes is None:
                key_bytes = key_bytes_of(key)
            if value is MISSING:
                delete(key_bytes, handle)
                continue
            data = value.data if type(value) is _Encoded else encode(value)  # kept objects always pickle
            if type(key) is str and data[-1:] == b".":  # the usual case, inline
                put(key_bytes, data, handle)
            else:
                put(key_bytes, stored(key, data), handle)

    def evict(self, share: float) -> None:
        """Drop the oldest ``share`` of the cache's entries (their writes flushed first)."""
        values = self.values
        count = int(len(values) * share) + 1
        charge = 0
        held = self.held
        for key in list(itertools.islice(values, count)):
            if key in held:
                continue  # in use by the open batch
            charge += self.charge_of(key, values.pop(key))
        self.charge -= charge

    def drop(self) -> None:
        """Empty the cache, writing what it holds first (RocksDB is about to be changed or read
        directly)."""
        self.flush()
        self.values.clear()
        self.held.clear()


#: How many entries a scan reads from RocksDB at once.
_CHUNK: Final = 512

#: An entry buffered in a batch: (key, map key or None, element bytes or None if removed, element).
_EntryWrite = tuple[Any, Any, bytes | None, Any]


class _EntrySpace(_Namespace):
    """The entries of one map or list state and namespace, one RocksDB entry per map entry or list
    element: its RocksDB key is the key's and namespace's (the *prefix*) followed by the map key's
    canonical bytes or the element's sequence number, its value the element bytes
    (:meth:`StateCodec.encode_element`) and a trailer (see ``_encoding``). A read, a write or a removal
    touches one entry; reading the whole scans the prefix lazily; clearing deletes its range.

    Outside a batch every access goes to RocksDB. Inside one, writes are buffered by RocksDB key
    (``writes``), and ``cleared`` holds the prefixes cleared in the batch: at its end their ranges are
    deleted first, then the writes made after the clear are written, in one WriteBatch. Reads see the
    batch's writes.
    """

    __slots__ = ("cleared", "codec", "writes")

    def __init__(self, store: _Store, table: _Table, namespace: Any) -> None:
        super().__init__(store, table, namespace)
        self.codec = table.codec
        self.writes: dict[bytes, _EntryWrite] | None = None
        self.cleared: set[bytes] | None = None

    def open(self) -> None:
        self.writes = {}
        self.cleared = set()

    def close(self) -> None:
        self.writes = self.cleared = None

    def stored(self, key: Any, user_key: Any, data: bytes) -> bytes:
        """What RocksDB stores for an entry of ``key`` with the element bytes ``data``."""
        raise NotImplementedError

    def encode(self, key: Any, element: Any) -> bytes:
        try:
            data = self.codec.encode_element(element)
        except Exception as exc:
            raise self.unwritable(key, exc) from exc
        return self.check(key, data)

    def write(self, entry_key: bytes, key: Any, user_key: Any, element: Any) -> None:
        data = self.encode(key, element)
        writes = self.writes
        if writes is None:
            self.store.settle()
            self.cf.put(entry_key, self.stored(key, user_key, data), self.store.write_options)
        else:
            writes[entry_key] = (key, user_key, data, element)

    def erase(self, entry_key: bytes, key: Any, user_key: Any) -> None:
        writes = self.writes
        if writes is None:
            self.store.settle()
            self.cf.delete(entry_key, self.store.write_options)
        else:
            writes[entry_key] = (key, user_key, None, MISSING)

    def clear(self, key: Any) -> None:
        """Remove ``key``'s entries: one range deletion."""
        prefix = self.key_bytes(key)
        writes = self.writes
        if writes is None:
            self.store.settle()
            self.cf.delete_range(prefix, _prefix_end(prefix), self.store.write_options)
            return
        for entry_key in [entry_key for entry_key in writes if entry_key.startswith(prefix)]:
            del writes[entry_key]
        self.cleared.add(prefix)  # type: ignore[union-attr]

    def scan(self, key: Any) -> Iterator[tuple[bytes, Any, Any]]:
        """``(RocksDB key, map key or None, element)`` of every entry of ``key``, read lazily in the
        order of their RocksDB keys with the batch's writes in place, then the batch's new entries."""
        prefix = self.key_bytes(key)
        writes = self.writes
        buffered: dict[bytes, _EntryWrite] = {}
        if writes:
            buffered = {
                entry_key: entry for entry_key, entry in writes.items() if entry_key.startswith(prefix)
            }
        if writes is None or prefix not in self.cleared:  # type: ignore[operator]
            decode, start = self.codec.decode_element, len(prefix)
            after = prefix
            while True:
                # A chunk at a time: no RocksDB iterator lives on while the caller holds the generator
                # (one alive when its database closes can stall or hang the close).
                chunk = self.read_chunk(prefix, after)
                for entry_key, raw in chunk:
                    write = buffered.pop(entry_key, None)
                    if write is None:
                        yield entry_key, self.user_key(entry_key, start, raw), decode(_payload(raw))
                    elif write[2] is not None:
                        yield entry_key, write[1], write[3]
                if len(chunk) < _CHUNK:
                    break
                after = chunk[-1][0] + b"\x00"  # the next key after the chunk's last
        for entry_key in sorted(buffered):
            _, user_key, data, element = buffered[entry_key]
            if data is not None:
                yield entry_key, user_key, element

    def read_chunk(self, prefix: bytes, start: bytes) -> list[tuple[bytes, bytes]]:
        """Up to ``_CHUNK`` stored ``(RocksDB key, value)`` from ``start`` on that begin with ``prefix``."""
        chunk: list[tuple[bytes, bytes]] = []
        iterator = self.cf.iter(self.store.read_all)
        iterator.seek(start)
        while iterator.valid() and len(chunk) < _CHUNK:
            entry_key: bytes = iterator.key()
            if not entry_key.startswith(prefix):
                break
            chunk.append((entry_key, iterator.value()))
            iterator.next()
        return chunk

    def user_key(self, entry_key: bytes, start: int, raw: bytes) -> Any:
        """The map key of a stored entry (None for a list element)."""
        return None

    def read(self, key: Any) -> Any:
        """``key``'s whole value (a dict or a list of elements), or MISSING if it has no entry."""
        raise NotImplementedError

    def replace(self, key: Any, whole: Any) -> None:
        """Store ``whole`` (a dict or a list of elements) as ``key``'s value."""
        raise NotImplementedError

    def settle(self, entry_key: bytes, key: Any, user_key: Any, replacement: Any) -> None:
        """Apply what reading an entry under TTL decided (``State._read_entry``): remove it (MISSING),
        keep it (``_KEEP``), or store the refreshed entry."""
        if replacement is MISSING:
            self.erase(entry_key, key, user_key)
        elif replacement is not _KEEP:
            self.write(entry_key, key, user_key, replacement)

    def commit(self, batch: WriteBatch) -> None:
        """Add the batch's range deletions, then its writes, to ``batch``."""
        handle = self.table.handle
        for prefix in self.cleared or ():
            batch.delete_range(prefix, _prefix_end(prefix), handle)
        for entry_key, (key, user_key, data, _) in (self.writes or {}).items():
            if data is None:
                batch.delete(entry_key, handle)
            else:
                batch.put(entry_key, self.stored(key, user_key, data), handle)


class _MapSpace(_EntrySpace):
    """A map state's entries: the RocksDB key of an entry ends with its map key's canonical bytes."""

    __slots__ = ()

    def stored(self, key: Any, user_key: Any, data: bytes) -> bytes:
        return _stored_entry(key, user_key, data)

    def user_key(self, entry_key: bytes, start: int, raw: bytes) -> Any:
        _, user_key = _stored_keys(raw)
        return _decode_key(entry_key, start)[0] if user_key is _PLAIN else user_key

    def entry_key(self, key: Any, user_key: Any) -> bytes:
        """The RocksDB key of the entry of ``user_key`` in ``key``'s map."""
        return self.key_bytes(key) + canonical_key_bytes(user_key)

    def get(self, key: Any, user_key: Any) -> Any:
        """The element of ``user_key`` in ``key``'s map (a TtlValue under TTL), or MISSING."""
        prefix = self.key_bytes(key)
        entry_key = prefix + canonical_key_bytes(user_key)
        writes = self.writes
        if writes is not None:
            written = writes.get(entry_key)
            if written is not None:
                return MISSING if written[2] is None else written[3]
            if prefix in self.cleared:  # type: ignore[operator]
                return MISSING
        raw = self.cf.get(entry_key)
        return MISSING if raw is None else self.codec.decode_element(_payload(raw))

    def put(self, key: Any, user_key: Any, element: Any) -> None:
        self.write(self.entry_key(key, user_key), key, user_key, element)

    def remove(self, key: Any, user_key: Any) -> None:
        self.erase(self.entry_key(key, user_key), key, user_key)

    def entries(self, key: Any) -> Iterator[tuple[Any, Any]]:
        """Every ``(map key, element)`` of ``key``'s map, read lazily."""
        for _, user_key, element in self.scan(key):
            yield user_key, element

    # ---- the whole map, for the backend's interface (restores, queries, tests)

    def read(self, key: Any) -> Any:
        """``key``'s map as a dict of elements, or MISSING if it has no entry."""
        entries = dict(self.entries(key))
        return entries if entries else MISSING

    def replace(self, key: Any, whole: Any) -> None:
        self.clear(key)
        for user_key, element in whole.items():
            self.put(key, user_key, element)


#: A list element's sequence number in its RocksDB key: 8 bytes, big endian, so keys sort in order.
_SEQUENCE_BYTES: Final = 8
#: Above every sequence number: where the search for a list's last element starts.
_AFTER_SEQUENCES: Final = b"\xff" * (_SEQUENCE_BYTES + 1)


class _ListSpace(_EntrySpace):
    """A list state's elements: the RocksDB key of an element ends with its sequence number, one more
    than the list's last at the time it was added, so a prefix scan reads the list in order. An add
    reads at most the list's last key (once per list and batch), never the list; the batch keeps each
    list's next sequence number in ``following``."""

    __slots__ = ("following",)

    def __init__(self, store: _Store, table: _Table, namespace: Any) -> None:
        super().__init__(store, table, namespace)
        self.following: dict[bytes, int] | None = None

    def open(self) -> None:
        super().open()
        self.following = {}

    def close(self) -> None:
        super().close()
        self.following = None

    def stored(self, key: Any, user_key: Any, data: bytes) -> bytes:
        return self.store.stored(key, data)

    def next_sequence(self, prefix: bytes) -> int:
        following = self.following
        sequence = None if following is None else following.get(prefix)
        if sequence is None:
            sequence = 0
            iterator = self.cf.iter(self.store.read_all)
            iterator.seek_for_prev(prefix + _AFTER_SEQUENCES)
            if iterator.valid():
                last: bytes = iterator.key()
                if last.startswith(prefix):
                    sequence = int.from_bytes(last[len(prefix) :], "big") + 1
        if following is not None:
            following[prefix] = sequence + 1
        return sequence

    def add(self, key: Any, element: Any) -> None:
        prefix = self.key_bytes(key)
        entry_key = prefix + self.next_sequence(prefix).to_bytes(_SEQUENCE_BYTES, "big")
        self.write(entry_key, key, None, element)

    def elements(self, key: Any) -> Iterator[tuple[bytes, Any]]:
        """Every ``(RocksDB key, element)`` of ``key``'s list, in order, read lazily."""
        for entry_key, _, element in self.scan(key):
            yield entry_key, element

    # ---- the whole list, for the backend's interface (restores, queries, tests)

    def read(self, key: Any) -> Any:
        """``key``'s list of elements, or MISSING if it has none."""
        elements = [element for _, element in self.elements(key)]
        return elements if elements else MISSING

    def replace(self, key: Any, whole: Any) -> None:
        self.clear(key)
        for element in whole:
            self.add(key, element)


def _stored_entry(key: Any, user_key: Any, data: bytes) -> bytes:
    """What RocksDB stores for a map entry: the element bytes and a trailer with the key and the map
    key, unless both decode exactly from the RocksDB key."""
    if (type(key) is str or _decodes_exactly(key)) and _decodes_exactly(user_key):
        return data if data[-1:] == b"." else data + _PLAIN
    pickled = DEFAULT_SERIALIZER.dumps((key, user_key))
    return data + pickled + _LEN.pack(len(pickled)) + bytes((_PICKLED_KEYS,))


#: How many held-back entries (see :class:`_HeldBack`) one step writes: about a millisecond's work,
#: so the batches in between wait no longer than that.
_STEP_ENTRIES: Final = 2000
#: What an entry of the value cache held back for a snapshot costs beyond its charge while its key is
#: dirty again: the new dirty slot and the superseded value object, kept by the held-back entry.
_HELD_BACK_ENTRY_BYTES: Final = 72


class _HeldBack:
    """The value caches' dirty entries as of a barrier, and the RocksDB checkpoint the barrier's snapshot
    takes once they are written (see :meth:`_Store.hold_back`).

    Each part is a space and an iterator over the dirty dict it had at the barrier: the space has a new
    one since, so nothing changes the old one while its entries are written in steps."""

    __slots__ = ("checkpoint_taken", "parts", "path", "remaining")

    def __init__(
        self, path: str, parts: list[tuple[_Space, Iterator[tuple[Any, Any]]]], remaining: int
    ) -> None:
        self.path = path
        self.parts = parts
        self.remaining = remaining
        self.checkpoint_taken = False


class _Store:
    """The database of one subtask and what its states share: key bytes, the open batch.

    A snapshot taken by an actor holds back its value caches' writes (:meth:`hold_back`): RocksDB gets
    them in steps between the next batches, then the RocksDB checkpoint is taken. Until then no other
    write may reach RocksDB and no cached entry may go: whatever would (a write outside the value
    caches, an eviction, a direct read of a column family) calls :meth:`settle` first.

    It holds no reference to the backend, so the backend's finalizer can release it (see
    :meth:`release`) should :meth:`RocksDBKeyedStateBackend.dispose` never be called.
    """

    def __init__(
        self,
        operator_uid: str,
        max_parallelism: int,
        max_value_size: int,
        key_cache_limit: int,
        path: str,
        db: Rdict,
        value_cache_limit: int = 0,
    ) -> None:
        self.operator_uid = operator_uid
        self.max_parallelism = max_parallelism
        self.max_value_size = max_value_size
        self.path = path
        self.db: Rdict | None = db
        self.tables: dict[str, _Table] = {}
        # RocksDB holds the state of this run only, rebuilt from a checkpoint on restore: no WAL.
        self.write_options = WriteOptions()
        # The stub declares disable_wal a method; rocksdict 0.3 has a property.
        self.write_options.disable_wal = True  # type: ignore[method-assign, assignment]
        self.read_all = ReadOptions()
        self.read_all.set_total_order_seek(True)  # hash memtables iterate in key order only so
        self.key_group_bytes = [group.to_bytes(2, "big") for group in range(max_parallelism)]
        #: The RocksDB key of each recent key in the default namespace (see :meth:`key_bytes`), within
        #: ``key_cache_limit`` bytes.
        self.keys: KeyCache[bytes] = KeyCache(key_cache_limit)
        self.batch_keys: list[Any] = []
        self.in_batch = False
        #: The bytes of memory budget the value caches of all states may take (see ``_Space``).
        self.value_cache_limit = value_cache_limit
        #: The snapshots holding writes back, oldest first (see :meth:`hold_back`).
        self.held_back: list[_HeldBack] = []

    def require_db(self) -> Rdict:
        db = self.db
        if db is None:
            raise RuntimeError(
                f"the RocksDB state of operator {self.operator_uid!r} is disposed: its subtask has ended"
            )
        return db

    # ---- keys

    def key_bytes(self, key: Any) -> bytes:
        """The RocksDB key of ``key`` in the default namespace (cached: keys repeat).

        The cache is bounded in bytes: an entry is charged its slot, its key object and its bytes
        object (:class:`~lockgate.state._keygroups.KeyCache`)."""
        try:
            key_bytes = self.keys.entries.get(key)
        except TypeError:  # an unhashable key (a mutable dataclass) is not cacheable
            return self.make_key_bytes(key)
        if key_bytes is None:
            key_bytes = self.make_key_bytes(key)
            self.keys.add(
                key, key_bytes, _KEY_CACHE_ENTRY_BYTES + sys.getsizeof(key) + sys.getsizeof(key_bytes)
            )
        return key_bytes

    def make_key_bytes(self, key: Any) -> bytes:
        # The key's bytes are made once, and hashed here: through the process's key-hash cache, each
        # key would stay in memory there as well as in this store's own cache, beyond any budget.
        data = canonical_key_bytes(key)
        group = self.key_group_bytes[hash_of_key_bytes(data) % self.max_parallelism]
        return group + data + _DEFAULT_NS_BYTES

    @staticmethod
    def stored(key: Any, data: bytes) -> bytes:
        """What RocksDB stores for ``key`` with the serialised value ``data``: ``data`` and a trailer
        that tells how to get the key back (none for a plain key if ``data`` ends with pickle's STOP)."""
        if type(key) is str or _decodes_exactly(key):
            return data if data[-1:] == b"." else data + _PLAIN
        pickled = DEFAULT_SERIALIZER.dumps(key)
        return data + pickled + _LEN.pack(len(pickled)) + bytes((_PICKLED_KEY,))

    # ---- batches

    def open_batch(self, keys: Sequence[Any]) -> None:
        if self.in_batch:  # the last batch did not finish (its function raised): keep its writes
            self.commit()
        self.require_db()
        self.batch_keys = list(dict.fromkeys(keys))
        self.in_batch = True
        for table in self.tables.values():
            table.default.open()

    def commit(self) -> None:
        """End the open batch: the writes of spaces that keep no cache across batches, with one
        WriteBatch; then, if the value cache is over its budget, it writes and evicts."""
        batch = WriteBatch(raw_mode=True)
        try:
            for table in self.tables.values():
                for space in (table.default, *table.extra.values()):
                    if isinstance(space, _EntrySpace):
                        space.commit(batch)
                    elif not space.persistent:
                        space.flush(batch)
        finally:
            self.close_batch()
        if len(batch):
            self.settle()
            self.require_db().write(batch, self.write_options)
        self.trim()

    def value_spaces(self) -> list[_Space]:
        """The spaces whose value cache lives across batches."""
        return [
            space
            for table in self.tables.values()
            if isinstance(space := table.default, _Space) and space.persistent
        ]

    def value_cache_usage(self) -> int:
        """The bytes the value caches are charged for, what a snapshot holds back included."""
        spaces = self.value_spaces()
        usage = sum(space.charge for space in spaces)
        if self.held_back:  # held-back entries whose key is dirty again hold a second value
            held = sum(held_back.remaining for held_back in self.held_back)
            usage += _HELD_BACK_ENTRY_BYTES * min(held, sum(len(space.dirty) for space in spaces))
        return usage

    def trim(self) -> None:
        """Keep the value caches within their budget: past it, write their dirty entries and evict
        the oldest quarter of each until within it (oldest by first caching: cheaper than an LRU on every
        access)."""
        if self.value_cache_usage() <= self.value_cache_limit:
            return
        spaces = self.value_spaces()
        self.flush()
        while sum(space.charge for space in spaces) > self.value_cache_limit and any(
            space.values for space in spaces
        ):
            for space in spaces:
                space.evict(0.25)

    def flush(self) -> None:
        """Write every value cache's dirty entries, with one WriteBatch: RocksDB then holds every
        write made so far (what a snapshot and a direct read of RocksDB need)."""
        self.settle()
        batch = WriteBatch(raw_mode=True)
        for space in self.value_spaces():
            space.flush(batch)
        if len(batch):
            self.require_db().write(batch, self.write_options)

    # ---- snapshots that hold writes back

    def hold_back(self, path: str) -> _HeldBack:
        """The synchronous part of a snapshot in O(states): the value caches' dirty entries are set
        aside as they are at the barrier (each space starts a new dirty dict), to be written in steps
        (:meth:`write_step`) before the RocksDB checkpoint at ``path`` is taken (:meth:`take_checkpoint`).

        The checkpoint then holds exactly the writes before the barrier: the set-aside entries are
        the values as of the barrier (the batches after it change only the new dirty dicts); the
        snapshots held back before it write theirs and take their checkpoints first, in the order
        of their barriers; and every other write to RocksDB settles them all first. Reads stay right
        meanwhile: a set-aside key stays cached (evicting settles first), so no read of it goes to
        RocksDB. The caller has committed the open batch."""
        parts: list[tuple[_Space, Iterator[tuple[Any, Any]]]] = []
        remaining = 0
        for space in self.value_spaces():
            if space.dirty:
                parts.append((space, iter(space.dirty.items())))
                remaining += len(space.dirty)
                space.dirty = {}
        held_back = _HeldBack(path, parts, remaining)
        self.held_back.append(held_back)
        return held_back

    def write_step(self, limit: int | None = _STEP_ENTRIES) -> bool:
        """Write up to ``limit`` entries (all if None) of the oldest held-back snapshot, with one
        WriteBatch; whether it has entries left."""
        if not self.held_back:
            return False
        held_back = self.held_back[0]
        batch = WriteBatch(raw_mode=True)
        parts = held_back.parts
        while parts and (limit is None or len(batch) < limit):
            space, entries = parts[-1]
            wanted = None if limit is None else limit - len(batch)
            chunk = list(itertools.islice(entries, wanted))
            space.write(chunk, batch)
            if wanted is None or len(chunk) < wanted:
                parts.pop()
        held_back.remaining -= len(batch)
        if len(batch):
            self.require_db().write(batch, self.write_options)
        return bool(parts)

    def take_checkpoint(self) -> None:
        """Write the rest of the oldest held-back snapshot's entries and take its RocksDB checkpoint."""
        self.write_step(None)
        held_back = self.held_back.pop(0)
        Checkpoint(self.require_db()).create_checkpoint(held_back.path)
        held_back.checkpoint_taken = True

    def settle(self, upto: _HeldBack | None = None) -> None:
        """Take the checkpoints of the held-back snapshots (of those up to ``upto``, if given), their
        entries written first: from here on RocksDB may change again."""
        while self.held_back and (upto is None or upto in self.held_back):
            self.take_checkpoint()

    def flush_memtables(self) -> None:
        """Start flushing every column family's memtable in RocksDB's background threads."""
        for table in self.tables.values():
            table.cf.flush(False)

    def flushing(self) -> bool:
        """Whether some column family still has entries in memory (a checkpoint would flush them)."""
        return any(
            table.cf.property_int_value("rocksdb.num-entries-active-mem-table")
            or table.cf.property_int_value("rocksdb.num-immutable-mem-table")
            for table in self.tables.values()
        )

    def close_batch(self) -> None:
        self.in_batch = False
        self.batch_keys = []
        for table in self.tables.values():
            table.default.close()
            table.extra.clear()

    # ---- the end

    def detach(self) -> tuple[Rdict | None, list[str]]:
        """Drop the open batch and every reference to the database's column families, and hand over
        the database and the names of the states' column families, to close. Idempotent."""
        db, self.db = self.db, None
        self.held_back = []  # their snapshots fail: their checkpoints are never taken
        self.close_batch()
        closed = _ClosedFamily(self.operator_uid)
        for table in self.tables.values():
            space = table.default
            if isinstance(space, _Space):  # the cache's unwritten writes go with the database
                space.values.clear()
                space.dirty.clear()
                space.charge = 0
            # Column family handles must go before their database closes: rocksdict stalls for a
            # second dropping one of a closed database. State objects in users' hands keep only the space.
            table.cf = table.handle = closed
            table.default.cf = closed
        self.keys.clear()
        return db, [CF_PREFIX + name for name in self.tables]

    def release(self) -> None:
        """Close the database and delete the working directory here and now (the finalizer's way)."""
        db, names = self.detach()
        _close_and_remove(db, names, self.path)
