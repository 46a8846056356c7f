"""Keyed state: descriptors, state objects, key groups, key serialisation and the state backends."""

from lockgate.state._backend import (
    KeyedStateBackend as KeyedStateBackend,
)
from lockgate.state._backend import (
    StateBackend as StateBackend,
)
from lockgate.state._descriptors import AggregateFunction as AggregateFunction
from lockgate.state._descriptors import AggregatingStateDescriptor as AggregatingStateDescriptor
from lockgate.state._descriptors import ListStateDescriptor as ListStateDescriptor
from lockgate.state._descriptors import MapStateDescriptor as MapStateDescriptor
from lockgate.state._descriptors import ReducingStateDescriptor as ReducingStateDescriptor
from lockgate.state._descriptors import StateDescriptor as StateDescriptor
from lockgate.state._descriptors import StateTtlConfig as StateTtlConfig
from lockgate.state._descriptors import ValueStateDescriptor as ValueStateDescriptor
from lockgate.state._keygroups import (
    UPPER_BOUND_MAX_PARALLELISM as UPPER_BOUND_MAX_PARALLELISM,
)
from lockgate.state._keygroups import (
    KeyGroupRange as KeyGroupRange,
)
from lockgate.state._keygroups import (
    check_parallelism as check_parallelism,
)
from lockgate.state._keygroups import (
    key_group_for as key_group_for,
)
from lockgate.state._keygroups import (
    key_group_owners as key_group_owners,
)
from lockgate.state._keygroups import (
    stable_key_hash as stable_key_hash,
)
from lockgate.state._keygroups import (
    subtask_for_key_group as subtask_for_key_group,
)
from lockgate.state._operator import BroadcastState as BroadcastState
from lockgate.state._operator import OperatorListState as OperatorListState
from lockgate.state._operator import OperatorStateBackend as OperatorStateBackend
from lockgate.state._operator import OperatorStateEntry as OperatorStateEntry
from lockgate.state._operator import OperatorStateSnapshot as OperatorStateSnapshot
from lockgate.state._operator import RestoredOperatorState as RestoredOperatorState
from lockgate.state._operator import redistribute as redistribute
from lockgate.state._presets import FsStateBackend as FsStateBackend
from lockgate.state._presets import MemoryStateBackend as MemoryStateBackend
from lockgate.state._presets import StatePreset as StatePreset
from lockgate.state._serialization import canonical_key_bytes as canonical_key_bytes
from lockgate.state._serializers import DEFAULT_SERIALIZER as DEFAULT_SERIALIZER
from lockgate.state._serializers import PickleSerializer as PickleSerializer
from lockgate.state._serializers import Serializer as Serializer
from lockgate.state._serializers import SerializerSnapshot as SerializerSnapshot
from lockgate.state._snapshot import IncrementalKeyedState as IncrementalKeyedState
from lockgate.state._snapshot import IncrementalSnapshotResources as IncrementalSnapshotResources
from lockgate.state._snapshot import KeyedStateManifest as KeyedStateManifest
from lockgate.state._snapshot import KeyedStateSnapshot as KeyedStateSnapshot
from lockgate.state._snapshot import PreparedKeyedState as PreparedKeyedState
from lockgate.state._snapshot import SharedStateWriter as SharedStateWriter
from lockgate.state._snapshot import SnapshotResources as SnapshotResources
from lockgate.state._snapshot import StateCodec as StateCodec
from lockgate.state._snapshot import StateMetaInfo as StateMetaInfo
from lockgate.state._snapshot import pickle_snapshot as pickle_snapshot
from lockgate.state._states import DEFAULT_NAMESPACE as DEFAULT_NAMESPACE
from lockgate.state._states import MISSING as MISSING
from lockgate.state._states import STATE_TYPES as STATE_TYPES
from lockgate.state._states import AggregatingState as AggregatingState
from lockgate.state._states import ListState as ListState
from lockgate.state._states import MapState as MapState
from lockgate.state._states import ReducingState as ReducingState
from lockgate.state._states import State as State
from lockgate.state._states import TtlValue as TtlValue
from lockgate.state._states import ValueState as ValueState
from lockgate.state.heap import HeapKeyedStateBackend as HeapKeyedStateBackend
from lockgate.state.heap import HeapStateBackend as HeapStateBackend
from lockgate.state.heap import HeapValueState as HeapValueState
from lockgate.state.rocksdb import RocksDBKeyedStateBackend as RocksDBKeyedStateBackend
from lockgate.state.rocksdb import RocksDBStateBackend as RocksDBStateBackend
from lockgate.state.rocksdb import RocksDBValueState as RocksDBValueState
