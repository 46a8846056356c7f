"""The RocksDB state backend: live keyed state in an embedded RocksDB on local disk."""

from lockgate.state.rocksdb._rocksdb import RocksDBKeyedStateBackend, RocksDBStateBackend, RocksDBValueState

__all__ = ["RocksDBKeyedStateBackend", "RocksDBStateBackend", "RocksDBValueState"]
