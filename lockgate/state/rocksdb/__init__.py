"""The RocksDB state backend: live keyed state in an embedded RocksDB (through rocksdict), one database
per keyed operator subtask, in a working directory of its own that is deleted when the subtask ends.

Layout
    One column family per state (named ``state:<name>``), created when the state is registered. A
    RocksDB key is ``key group (2 bytes, big endian) + canonical_key_bytes(key) +
    canonical_key_bytes(namespace)`` (the default namespace is None), so a key group's entries are
    contiguous and can move between subtasks on rescale. A RocksDB value is the descriptor's serializer
    output (value state without TTL) or :class:`StateCodec` bytes (other kinds, TTL), then a trailer.
    Every write has the write-ahead log off: a restore rebuilds the database from a checkpoint.

Getting keys back
    :meth:`RocksDBKeyedStateBackend.items` has to return the original keys. Where the canonical key
    bytes decode to an object of the same type and value (None, int, non-integral float, str, bytes and
    tuples of those: what keys nearly always are), the key is decoded from the RocksDB key and the
    trailer is ``b"\\x00"``, or nothing at all when the value already ends with pickle's STOP byte
    (``"."``; a trailer never does), as the default serializer's values do. Otherwise (bool, integral
    float, dataclasses, subclasses, which canonical encoding folds into what they equal) the trailer
    holds the pickled key: the pickle, its length (4 bytes, big endian), ``b"\\x01"``. The trailer is
    at the end so pickled values load without slicing: pickle ignores the bytes past its own end.

Batches
    The runtime announces each batch's keys (:meth:`~RocksDBKeyedStateBackend.prepare_batch`) and its
    end (:meth:`~RocksDBKeyedStateBackend.finish_batch`). In between, the first read of a state fetches
    the values of all the batch's distinct keys with one multi-get into a per-batch cache of
    deserialised values (on first use rather than in ``prepare_batch``, so states a batch does not
    touch cost nothing); reads are served from it. Writes and deletes are serialised at once (so a size
    error points at the write) and buffered, and the batch's end writes them all with one atomic
    ``WriteBatch``. A read after a write or a delete of the same key in the same batch sees it. Values
    read inside a batch are the cache's objects: as on the heap, a value changed in place without
    ``update`` is seen by later reads of the same batch; unlike the heap, it is not stored.

    A value state without TTL stored with pickle keeps that cache across batches (the value cache,
    ``_store._Space``): plain immutable values (int, float, bool, str, bytes, None, small) as objects,
    others as the bytes written at ``update``, decoded afresh at each batch's first read. Its writes
    reach RocksDB, with one ``WriteBatch``, when it goes over its budget and evicts its oldest entries,
    and in every snapshot's synchronous part, so checkpoints and savepoints hold every write before the
    barrier. Queries read it without filling it.

    If a function raises in the middle of a batch, ``finish_batch`` is not called. The buffered writes
    then stay visible to reads through this backend, and are written (all at once, never half) when
    the next batch is announced, as the heap backend would have kept them; :meth:`dispose` drops them
    with the database. RocksDB itself only ever holds whole batches. Outside a batch every call goes
    straight to RocksDB; ``get_many`` is one multi-get and ``put_many`` one ``WriteBatch``.

Memory
    One LRU block cache per subtask, shared by all its column families (the default one too), and a
    write buffer manager that charges memtable memory to that cache: ``memory_budget`` bounds the block
    cache, the index and filter blocks and the memtables together (Flink's managed-memory scheme; see
    :func:`_memory_split`). On the Python side, a cache of the RocksDB keys of recent keys (at most a
    quarter of ``memory_budget`` in bytes, each entry charged its slot, its key object and its bytes:
    about 27 k keys like ``"k1234567"`` at 16 MiB) and the per-batch cache come on top.
    The key group of a key is hashed from the bytes made for its RocksDB key, not through the
    process's key-hash cache that partitioning uses (``stable_key_hash``), which would keep every key
    a second time.
    The value caches take 3/8 of ``memory_budget`` (RocksDB the rest), charged per entry (128 bytes,
    the key object, any bytes held).
    A state's memtable holds at most 2 MiB, whatever the budget: a checkpoint flushes it while the
    stream waits, so its size bounds that pause.

Snapshots
    The synchronous part writes the open batch, flushes and takes a RocksDB checkpoint (hard links to
    the immutable SST files, in a directory of its own). Incremental checkpoints then upload only the
    SST files that the last checkpoint this backend knows complete did not hold already, into the
    storage's shared area, and reference the others; the few other files (MANIFEST, CURRENT,
    OPTIONS) go into the checkpoint's own manifest (:class:`RocksDBManifest`). Full snapshots
    (savepoints, ``incremental=False``) read the checkpoint entry by entry instead. A restore
    downloads the files, opens them and takes the entries of its key groups.

Maps and lists
    Map and list state keep one RocksDB entry per map entry or element (``_EntrySpace``): its key is
    the state's key and namespace (the *prefix*) followed by the map key's canonical bytes, or by an
    8-byte big-endian sequence number one above the list's last (found once per list and batch with a
    reverse seek: an add never reads the list); its value is the element's bytes
    (``StateCodec.encode_element``) and a trailer (tag 2 holds the pickled key and map key where they do
    not decode from the RocksDB key). Reading the whole scans the prefix; clearing deletes its range. Their
    column families use the default skip-list memtable, which iterates in order. Snapshots join each map
    or list into the one value the canonical form holds (``join_map``, ``join_list``) and restores split
    it again, so savepoints are as before; incremental checkpoints' files hold the entries as they are
    (``RocksDBManifest.layout`` 2; a checkpoint of the older one-value layout is refused, naming the state).

Timers
    The timers of a domain are a column family of their own (``_timers``): one RocksDB entry per timer,
    keyed by key group, timestamp (sign bit flipped, so keys sort by time), key and namespace, the
    pickled key and namespace as the value where they do not decode from the key. In memory the queue
    keeps the earliest timestamp of each key group (a heap of them finds the earliest of all) and a
    bounded cache of each polled key group's first timers: peek reads nothing, a poll seeks only when
    its key group's cache runs out. Snapshots and restores carry the timers as entries ``(key,
    namespace, timestamp bytes)``, as the heap files them; checkpoints' files hold them as they are.

Modules
    ``_backend`` (:class:`RocksDBStateBackend`, the settings), ``_keyed`` (the keyed backend of a subtask
    and :class:`RocksDBValueState`), ``_entry_states`` (map and list state, entry by entry), ``_store``
    (its database, buffers and batches), ``_encoding`` (keys
    and value trailers), ``_options`` (sizes and the memory split), ``_snapshots`` (full and incremental
    snapshots), ``_native`` (:class:`RocksDBManifest` and native restore), ``_reading`` (a checkpoint's
    entries as stored), ``_timers`` (timer queues) and ``_files`` (working directories, file I/O).
"""

from lockgate.state.rocksdb._backend import RocksDBStateBackend
from lockgate.state.rocksdb._keyed import RocksDBKeyedStateBackend, RocksDBValueState

__all__ = ["RocksDBKeyedStateBackend", "RocksDBStateBackend", "RocksDBValueState"]
