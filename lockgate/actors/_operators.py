"""Operators: the per-subtask instances of what the job graph names, each working a batch at a time.

This module gathers them: importing it registers every built-in operator kind, since each module
below registers its own with :func:`operator_for`, and :func:`create_operator` makes any of them
from its spec. A new built-in kind is a spec (in :mod:`lockgate.graph`) and an operator module
(here, in ``lockgate.actors``) that is imported below.

- ``_stream_operator``: :class:`StreamOperator`, the base, and the call forms of user functions;
- ``_registry``: :func:`operator_for` and :func:`create_operator`;
- ``_function_operators``: map, filter, flat map, process and broadcast process;
- ``_keyed_operators``: keyed map, keyed process, map with state and reduce;
- ``_event_time``: timestamps and watermarks (``assign_timestamps_and_watermarks``);
- ``_window_operator``: keyed windows;
- ``_sink_operator``: sinks.
"""

from lockgate.actors._event_time import TimestampsAndWatermarksOperator as TimestampsAndWatermarksOperator
from lockgate.actors._function_operators import BroadcastProcessOperator as BroadcastProcessOperator
from lockgate.actors._function_operators import FilterOperator as FilterOperator
from lockgate.actors._function_operators import FlatMapOperator as FlatMapOperator
from lockgate.actors._function_operators import MapOperator as MapOperator
from lockgate.actors._function_operators import ProcessOperator as ProcessOperator
from lockgate.actors._keyed_operators import KeyedMapOperator as KeyedMapOperator
from lockgate.actors._keyed_operators import KeyedMapWithStateOperator as KeyedMapWithStateOperator
from lockgate.actors._keyed_operators import KeyedProcessOperator as KeyedProcessOperator
from lockgate.actors._registry import create_operator as create_operator
from lockgate.actors._registry import operator_for as operator_for
from lockgate.actors._sink_operator import SinkOperator as SinkOperator
from lockgate.actors._stream_operator import CallForm as CallForm
from lockgate.actors._stream_operator import StreamOperator as StreamOperator
from lockgate.actors._stream_operator import call_form as call_form
from lockgate.actors._window_operator import WindowOperator as WindowOperator
