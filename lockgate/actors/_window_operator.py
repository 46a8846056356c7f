"""The window operator: keyed windows whose contents, merging-window sets, trigger state and timers
all live in keyed state, under the window as namespace, so checkpoints, rescaling and savepoints carry
them like any other state.

Per record: the assigner names its windows; a window already past its cleanup time (its end plus the
allowed lateness, in event time) takes nothing, and a record that no window took goes to the late side
output if there is one. Otherwise the record joins the window's contents (pre-aggregated for
``reduce``/``aggregate``, kept whole for a ``ProcessWindowFunction`` or an evictor), the trigger
decides whether the window fires or purges now, and a cleanup timer is set. Timers call the trigger
again; at cleanup time every trace of the window goes.

Session windows merge: each key keeps the map from its windows to the window whose namespace holds
their contents (Flink's merging window set); when windows merge, their contents and trigger state
fold into one namespace and their timers move to the merged window.
"""

from __future__ import annotations

import copy
from typing import Any

from lockgate._errors import ConfigurationError
from lockgate.actors._context import SubtaskContext
from lockgate.actors._event_time import InternalTimers, TimerOperator, now_millis
from lockgate.actors._keyed_operators import _keys_of
from lockgate.actors._registry import operator_for
from lockgate.actors._stream_operator import (
    CallForm,
    _copy_per_subtask,
    call_form,
    outputs_of,
)
from lockgate.eventtime import (
    MAX_WATERMARK,
    EventTimeTrigger,
    SlidingEventTimeWindows,
    TimeDomain,
    TimeWindow,
    TriggerResult,
    TumblingEventTimeWindows,
    Window,
    resolve,
)
from lockgate.functions import KeyedStateStore, OutputTag, ProcessWindowFunction, WindowContext
from lockgate.graph import WindowSpec
from lockgate.mailbox import StampedBatch
from lockgate.state import (
    AggregatingStateDescriptor,
    KeyedStateBackend,
    ListState,
    ListStateDescriptor,
    MapState,
    MapStateDescriptor,
    ReducingStateDescriptor,
    StateDescriptor,
    TimerQueue,
    ValueState,
    ValueStateDescriptor,
)
from lockgate.state._states import MISSING, STATE_TYPES

#: The state of a window's contents: its elements, or their pre-aggregated value.
_CONTENTS = "window-contents"


class _WindowStates:
    """State objects of a backend scoped to one namespace at a time (a window's), by descriptor."""

    def __init__(self, backend: KeyedStateBackend) -> None:
        self._backend = backend
        self._states: dict[str, Any] = {}
        self.namespace: Any = None

    def state(self, descriptor: StateDescriptor[Any]) -> Any:
        state = self._states.get(descriptor.name)
        if state is None:
            state = self._backend.create_state(descriptor, STATE_TYPES[descriptor.kind], namespaced=True)
            self._states[descriptor.name] = state
        state.namespace = self.namespace
        return state

    def get_state(self, descriptor: ValueStateDescriptor[Any]) -> Any:
        return self.state(descriptor)

    def get_list_state(self, descriptor: ListStateDescriptor[Any]) -> Any:
        return self.state(descriptor)

    def get_map_state(self, descriptor: MapStateDescriptor[Any]) -> Any:
        return self.state(descriptor)

    def get_reducing_state(self, descriptor: ReducingStateDescriptor[Any]) -> Any:
        return self.state(descriptor)

    def get_aggregating_state(self, descriptor: AggregatingStateDescriptor[Any, Any, Any]) -> Any:
        return self.state(descriptor)


class _TriggerContext:
    """What a trigger reaches for one window of the current key: timers in the window's namespace,
    state scoped to it, and (in ``on_merge``) the state of the windows merged into it."""

    def __init__(self, operator: WindowOperator) -> None:
        self._operator = operator
        self._states = _WindowStates(operator.backend)
        self.window: Any = None
        self.merged: list[Any] = []

    def current_watermark(self) -> int:
        return self._operator.time.watermark

    def current_processing_time(self) -> int:
        return now_millis()

    def register_event_time_timer(self, timestamp: int) -> None:
        self._operator.time.register_event_time_timer(timestamp, self.window)

    def register_processing_time_timer(self, timestamp: int) -> None:
        self._operator.time.register_processing_time_timer(timestamp, self.window)

    def delete_event_time_timer(self, timestamp: int) -> None:
        self._operator.time.delete_event_time_timer(timestamp, self.window)

    def delete_processing_time_timer(self, timestamp: int) -> None:
        self._operator.time.delete_processing_time_timer(timestamp, self.window)

    def get_partitioned_state(self, descriptor: StateDescriptor[Any]) -> Any:
        self._states.namespace = self.window
        return self._states.state(descriptor)

    def merge_partitioned_state(self, descriptor: StateDescriptor[Any]) -> None:
        if descriptor.kind not in ("reducing", "list"):
            raise ConfigurationError(
                f"a trigger can merge reducing or list state of merged windows, not {descriptor.kind} "
                f"state ({descriptor.name!r})"
            )
        states = self._states
        for window in self.merged:
            states.namespace = window
            source = states.state(descriptor)
            values = source.get_nowait()
            source.clear_nowait()
            states.namespace = self.window
            target = states.state(descriptor)
            if descriptor.kind == "list":
                target.add_all_nowait(values)
            elif values is not None:
                target.add_nowait(values)


class _Context(WindowContext):
    def __init__(self, operator: WindowOperator) -> None:
        self._operator = operator
        self._window_states = _WindowStates(operator.backend)
        self._global_states = _WindowStates(operator.backend)
        self.window: Any = None

    def current_watermark(self) -> int:
        return self._operator.time.watermark

    def current_processing_time(self) -> int:
        return now_millis()

    def window_state(self) -> KeyedStateStore:
        self._window_states.namespace = self.window
        return self._window_states

    def global_state(self) -> KeyedStateStore:
        return self._global_states

    def output(self, tag: OutputTag, value: Any) -> None:
        self._operator.ctx.output(tag, value)


class WindowOperator(TimerOperator):
    """Runs one ``keyed.window(...)`` (see the module)."""

    def __init__(self, ctx: SubtaskContext, spec: WindowSpec) -> None:
        super().__init__(ctx)
        backend = ctx.keyed_backend
        assert backend is not None
        self.backend = backend
        self.spec = spec
        self._key_selector = spec.key_selector
        self.assigner = spec.assigner
        self.event_time = spec.assigner.is_event_time
        self.trigger = spec.trigger if spec.trigger is not None else spec.assigner.default_trigger()
        self.merging = spec.assigner.merging
        self.lateness = spec.allowed_lateness
        self.late_tag = spec.late_tag
        self.evictor = spec.evictor
        self.function = (
            None if spec.window_function is None else _copy_per_subtask(spec.window_function, self.uid)
        )
        self._process_form = None if self.function is None else call_form(self.function.process)
        self._reduce = spec.reduce_function
        if self._reduce is not None and call_form(self._reduce) is not CallForm.SYNC:
            raise ConfigurationError(
                f"window operator {self.uid!r}: reduce() of windows takes a plain def (fn(a, b) -> "
                "combined), not an async def or a generator"
            )
        self._aggregate = None if spec.aggregate_function is None else copy.deepcopy(spec.aggregate_function)
        # Whole elements, as (value, timestamp), for a window function of all elements or an evictor;
        # else one pre-aggregated value (the reduced value, or the aggregate's accumulator).
        self.keeps_elements = self.evictor is not None or (self._reduce is None and self._aggregate is None)
        if self.keeps_elements:
            self.contents: Any = backend.create_state(
                ListStateDescriptor[Any](_CONTENTS), ListState, namespaced=True
            )
        else:
            self.contents = backend.create_state(
                ValueStateDescriptor[Any](_CONTENTS), ValueState, namespaced=True
            )
        self.windows_of_key: MapState[Any, Any] | None = None
        if self.merging:
            self.windows_of_key = backend.create_state(MapStateDescriptor[Any]("merging-windows"), MapState)
        self._trigger_ctx = _TriggerContext(self)
        self._context = _Context(self)
        #: Records no window took because they came after their windows' cleanup time.
        self.late_records_dropped = 0
        # Aligned event-time windows fired by the default trigger take a batch at once.
        assigner = spec.assigner
        self._grouped = (
            isinstance(assigner, TumblingEventTimeWindows | SlidingEventTimeWindows)
            and type(self.trigger) is EventTimeTrigger
            and self.evictor is None
        )
        self._function_clears = (
            self.function is not None and type(self.function).clear is not ProcessWindowFunction.clear
        )
        self._windows: dict[int, TimeWindow] = {}  # the open windows' objects, by start
        self._size = getattr(assigner, "size", 0)
        self._slide = getattr(assigner, "slide", self._size)
        self._offset = getattr(assigner, "offset", 0)

    @property
    def time(self) -> InternalTimers:
        """Its timers (a window operator refuses to open on a backend without them)."""
        assert self.timers is not None
        return self.timers

    async def open(self) -> None:
        ctx = self.ctx
        self.timers = ctx.timers = InternalTimers(self.backend, ctx.request_wakeup)
        if self.function is not None:
            self.function.open(ctx)
        self.time.schedule_processing()

    async def close(self) -> None:
        if self.function is not None:
            self.function.close()

    # ---- records

    async def process_batch(self, batch: list[Any]) -> list[Any]:
        backend = self.backend
        keys = _keys_of(self._key_selector, batch)
        timestamps: list[Any]
        if self.event_time:
            if type(batch) is not StampedBatch or None in batch.timestamps:
                raise ConfigurationError(
                    f"window operator {self.uid!r} assigns event-time windows, but records have no "
                    "timestamp; give the source a watermark_strategy= (or use "
                    "assign_timestamps_and_watermarks), or use processing-time windows"
                )
            timestamps = batch.timestamps
        else:
            timestamps = [now_millis()] * len(batch)
        await backend.prepare_batch(keys)
        out: list[Any] = []
        stamps: list[int | None] = []
        if self._grouped:
            await self._process_grouped(keys, batch, timestamps, out, stamps)
        else:
            for key, value, timestamp in zip(keys, batch, timestamps, strict=True):
                backend.current_key = key
                await self._process_element(key, value, timestamp, out, stamps)
        await backend.finish_batch()
        return StampedBatch(out, stamps) if out else out

    async def _process_grouped(
        self,
        keys: list[Any],
        batch: list[Any],
        timestamps: list[Any],
        out: list[Any],
        stamps: list[int | None],
    ) -> None:
        """The batch at once, for aligned event-time windows (tumbling or sliding) that the default
        trigger fires: the watermark stands still within a batch, so each record's windows and
        lateness are known up front; the records of one key and window are added to its contents in
        one state access, and its timer is set once. A window already due (within the allowed
        lateness) fires once per record, as the trigger would."""
        watermark, lateness = self.time.watermark, self.lateness
        size, slide, offset = self._size, self._slide, self._offset
        keeps = self.keeps_elements
        # The records of each window by key, windows by start: dicts of ints and keys, not of tuples
        # (a tuple key is made and hashed anew for every lookup).
        by_start: dict[int, dict[Any, list[Any]]] = {}
        late: list[tuple[Any, int]] = []
        # A window [start, start + size) is cleaned up (takes nothing more) once the watermark
        # reaches start + size - 1 + lateness.
        newest_gone = watermark - size + 1 - lateness  # starts up to this are gone
        items = zip(batch, timestamps, strict=True) if keeps else batch
        if slide == size:  # tumbling: one window per record
            run: list[Any] = []
            run_key: Any = None
            run_start: int | None = None
            for key, item, timestamp in zip(keys, items, timestamps, strict=True):
                start = timestamp - (timestamp - offset) % size
                if start <= newest_gone:
                    late.append((item[0] if keeps else item, timestamp))
                    continue
                # Records of a key and window often come in runs: the last group first, then the dicts.
                if start != run_start or key != run_key:
                    run_start, run_key = start, key
                    per_key = by_start.get(start)
                    if per_key is None:
                        per_key = by_start[start] = {}
                    found = per_key.get(key)
                    if found is None:
                        found = per_key[key] = []
                    run = found
                run.append(item)
        elif size % slide == 0:  # sliding, a record's windows those of its slide: found once per slide
            last_seen: int | None = None
            targets: list[dict[Any, list[Any]]] = []
            for key, item, timestamp in zip(keys, items, timestamps, strict=True):
                last = timestamp - (timestamp - offset) % slide
                if last != last_seen:
                    last_seen, targets = last, []
                    for start in range(last, last - size, -slide):
                        if start <= newest_gone:
                            break  # older windows are gone too
                        per_key = by_start.get(start)
                        if per_key is None:
                            per_key = by_start[start] = {}
                        targets.append(per_key)
                if not targets:
                    if timestamp + lateness <= watermark:
                        late.append((item[0] if keeps else item, timestamp))
                    continue
                for per_key in targets:  # each record joins each of its windows' groups, in order
                    group = per_key.get(key)
                    if group is None:
                        per_key[key] = [item]
                    else:
                        group.append(item)
        else:  # sliding: each record joins each of its windows' groups, so each keeps arrival order
            for key, item, timestamp in zip(keys, items, timestamps, strict=True):
                taken = False
                for start in range(timestamp - (timestamp - offset) % slide, timestamp - size, -slide):
                    if start <= newest_gone:
                        break  # older windows are gone too
                    taken = True
                    per_key = by_start.get(start)
                    if per_key is None:
                        by_start[start] = {key: [item]}
                        continue
                    group = per_key.get(key)
                    if group is None:
                        per_key[key] = [item]
                    else:
                        group.append(item)
                if not taken and timestamp + lateness <= watermark:
                    late.append((item[0] if keeps else item, timestamp))
        backend = self.backend
        add_timer = self.time.event.add
        windows = self._windows
        add_all = self._add_all
        for start, per_key in by_start.items():
            window = windows.get(start)
            if window is None:  # one object per window: table lookups then match by identity
                window = windows[start] = TimeWindow(start, start + size)
            last = start + size - 1
            if last <= watermark:  # due already: added and fired one by one, as the trigger would
                for key, group_items in per_key.items():
                    backend.current_key = key
                    await self._fire_each(key, window, group_items, out, stamps)
                continue
            for key, group_items in per_key.items():
                backend.current_key = key
                if add_all(key, window, group_items):  # new contents: set the window's timers
                    add_timer(last, key, window)  # the trigger's
                    if lateness:
                        add_timer(last + lateness, key, window)  # the cleanup
        for value, timestamp in late:
            self._late(value, timestamp)

    async def _fire_each(
        self, key: Any, window: TimeWindow, items: list[Any], out: list[Any], stamps: list[int | None]
    ) -> None:
        """Records of a window already due (within the allowed lateness): each is added and fires
        the window, and the cleanup timer is set."""
        keeps = self.keeps_elements
        for item in items:
            value, timestamp = item if keeps else (item, 0)
            self._add(window, value, timestamp)
            await self._emit(key, window, window, out, stamps)
        self.time.event.add(window.end - 1 + self.lateness, key, window)

    def _add_all(self, key: Any, namespace: Any, items: list[Any]) -> bool:
        """Add ``items`` to the window's contents; whether it held none before (its timers are then
        still to set: a window that holds contents has them)."""
        if self.keeps_elements:
            contents = self.contents
            contents.namespace = namespace
            contents.add_all_nowait(items)
            return True  # cheaper to set the timers again than to read the list
        # A pre-aggregated value straight from the backend: the contents state has no TTL and no
        # default, so the stored value is the value (a state object would add only checks).
        backend = self.backend
        held = backend.get_nowait(_CONTENTS, key, namespace)
        aggregate = self._aggregate
        if aggregate is not None:
            accumulator = aggregate.create_accumulator() if held is MISSING else held
            add = aggregate.add
            for value in items:
                accumulator = add(value, accumulator)
            backend.put_nowait(_CONTENTS, key, namespace, accumulator)
            return held is MISSING
        reduce = self._reduce
        assert reduce is not None
        reduced = None if held is MISSING else held
        for value in items:
            reduced = value if reduced is None else reduce(reduced, value)
        backend.put_nowait(_CONTENTS, key, namespace, reduced)
        return held is MISSING

    def _late(self, value: Any, timestamp: int) -> None:
        """A record too late for every window of its own."""
        if self.late_tag is None:
            self.late_records_dropped += 1
            return
        ctx = self.ctx
        ctx.current_timestamp = timestamp
        ctx.output(self.late_tag, value)
        ctx.current_timestamp = None

    async def _process_element(
        self, key: Any, value: Any, timestamp: int, out: list[Any], stamps: list[int | None]
    ) -> None:
        windows = self.assigner.assign_windows(value, timestamp)
        taken = False
        if self.merging:
            taken = await self._process_merging(key, value, timestamp, windows, out, stamps)
        else:
            trigger, tctx = self.trigger, self._trigger_ctx
            for window in windows:
                if self._is_late(window):
                    continue
                taken = True
                self._add(window, value, timestamp)
                tctx.window = window
                result = await resolve(trigger.on_element(value, timestamp, window, tctx))
                if result is not TriggerResult.CONTINUE:
                    await self._on_result(result, key, window, window, out, stamps)
                self._register_cleanup(window)
        if not taken and self.event_time and timestamp + self.lateness <= self.time.watermark:
            self._late(value, timestamp)

    async def _process_merging(
        self,
        key: Any,
        value: Any,
        timestamp: int,
        windows: list[Window],
        out: list[Any],
        stamps: list[int | None],
    ) -> bool:
        assert self.windows_of_key is not None
        mapping = {window: state_window async for window, state_window in self.windows_of_key.items()}
        before = dict(mapping)
        taken = False
        trigger, tctx = self.trigger, self._trigger_ctx
        for new_window in windows:
            window = await self._add_window(mapping, new_window)
            if self._is_late(window):
                # Merged into a window already cleaned up: it takes nothing and is forgotten.
                mapping.pop(window, None)
                continue
            taken = True
            state_window = mapping[window]
            self._add(state_window, value, timestamp)
            tctx.window = window
            result = await resolve(trigger.on_element(value, timestamp, window, tctx))
            if result is not TriggerResult.CONTINUE:
                await self._on_result(result, key, window, state_window, out, stamps)
            self._register_cleanup(window)
        await self._persist(before, mapping)
        return taken

    async def _persist(self, before: dict[Any, Any], mapping: dict[Any, Any]) -> None:
        state = self.windows_of_key
        assert state is not None
        for window in before.keys() - mapping.keys():
            await state.remove(window)
        for window, state_window in mapping.items():
            if before.get(window) != state_window or window not in before:
                await state.put(window, state_window)

    async def _add_window(self, mapping: dict[Any, Any], new_window: Any) -> Any:
        """Add ``new_window`` to the key's windows, merging what it overlaps; the window it became."""
        result_window = new_window
        merged_new = False
        for cover, members in self.assigner.merge_windows([*mapping, new_window]):
            members = list(members)
            if new_window in members:
                members.remove(new_window)
                merged_new = True
                result_window = cover
            if not members:
                continue
            state_window = mapping[members[0]]
            merged_state_windows = [mapping.pop(window) for window in members]
            mapping[cover] = state_window
            merged_state_windows.remove(state_window)
            if not (len(members) == 1 and members[0] == cover):
                await self._merge(cover, members, state_window, merged_state_windows)
        if not merged_new:
            mapping[new_window] = new_window
        return result_window

    async def _merge(
        self, cover: Any, merged: list[Any], state_window: Any, merged_state_windows: list[Any]
    ) -> None:
        """Windows ``merged`` became ``cover``: trigger state and timers follow, contents fold into
        ``state_window``'s namespace."""
        trigger, tctx = self.trigger, self._trigger_ctx
        tctx.window, tctx.merged = cover, merged
        await resolve(trigger.on_merge(cover, tctx))
        tctx.merged = []
        for window in merged:
            tctx.window = window
            await resolve(trigger.clear(window, tctx))
            self._delete_cleanup(window)
        contents = self.contents
        for source in merged_state_windows:
            contents.namespace = source
            if self.keeps_elements:
                elements = contents.get_nowait()
                contents.clear_nowait()
                contents.namespace = state_window
                contents.add_all_nowait(elements)
                continue
            value = contents.value_nowait()
            contents.clear_nowait()
            if value is None:
                continue
            contents.namespace = state_window
            held = contents.value_nowait()
            if held is not None:
                value = self._combine(held, value)
            contents.update_nowait(value)

    def _combine(self, held: Any, value: Any) -> Any:
        if self._reduce is not None:
            return self._reduce(held, value)
        assert self._aggregate is not None
        return self._aggregate.merge(held, value)

    def _add(self, namespace: Any, value: Any, timestamp: int) -> None:
        contents = self.contents
        contents.namespace = namespace
        if self.keeps_elements:
            contents.add_nowait((value, timestamp))
        elif self._aggregate is not None:
            accumulator = contents.value_nowait()
            if accumulator is None:
                accumulator = self._aggregate.create_accumulator()
            contents.update_nowait(self._aggregate.add(value, accumulator))
        else:
            reduced = contents.value_nowait()
            if reduced is not None:
                assert self._reduce is not None
                value = self._reduce(reduced, value)
            contents.update_nowait(value)

    # ---- firing

    async def _on_result(
        self,
        result: TriggerResult,
        key: Any,
        window: Any,
        state_window: Any,
        out: list[Any],
        stamps: list[int | None],
    ) -> None:
        if result.fires:
            await self._emit(key, window, state_window, out, stamps)
        if result.purges:
            contents = self.contents
            contents.namespace = state_window
            contents.clear_nowait()

    async def _emit(
        self, key: Any, window: Any, state_window: Any, out: list[Any], stamps: list[int | None]
    ) -> None:
        contents = self.contents
        contents.namespace = state_window
        if self.keeps_elements:
            values = self._evicted_values(window, state_window)
            if not values:
                return
        else:
            value = self.backend.get_nowait(_CONTENTS, key, state_window)  # no TTL, no default
            if value is MISSING or value is None:
                return
            values = [self._aggregate.get_result(value) if self._aggregate is not None else value]
        stamp = window.max_timestamp()
        if self.function is not None:
            ctx = self.ctx
            ctx.current_timestamp = stamp
            self._context.window = window
            assert self._process_form is not None
            try:
                results = await outputs_of(
                    self.function.process, self._process_form, (key, self._context, values), self.uid
                )
            finally:
                ctx.current_timestamp = None
        else:
            results = values
        if self.evictor is not None:
            contents.namespace = state_window
            elements = contents.get_nowait()
            remaining = self.evictor.evict_after(elements, window)
            if len(remaining) != len(elements):
                contents.update_nowait(remaining)
        if results:
            out += results
            stamps += [stamp] * len(results)

    def _evicted_values(self, window: Any, state_window: Any) -> list[Any]:
        """The values a firing sees of a window that keeps its elements: after the evictor's
        ``evict_before`` (what it evicts is gone from the window), folded by the reduce or aggregate
        function if there is one."""
        contents = self.contents
        contents.namespace = state_window
        elements = contents.get_nowait()
        if not elements:
            return []
        if self.evictor is not None:
            kept = self.evictor.evict_before(elements, window)
            if len(kept) != len(elements):
                contents.update_nowait(kept)
            elements = kept
        values = [value for value, _ in elements]
        if not values:
            return []
        if self._aggregate is not None:
            accumulator = self._aggregate.create_accumulator()
            for value in values:
                accumulator = self._aggregate.add(value, accumulator)
            return [self._aggregate.get_result(accumulator)]
        if self._reduce is not None:
            reduced = values[0]
            for value in values[1:]:
                reduced = self._reduce(reduced, value)
            return [reduced]
        return values

    async def fire(self, queue: TimerQueue, upto: int, domain: TimeDomain) -> list[Any]:
        backend = self.backend
        trigger, tctx = self.trigger, self._trigger_ctx
        event_time = domain is TimeDomain.EVENT_TIME
        out: list[Any] = []
        stamps: list[int | None] = []
        await backend.prepare_batch(())
        if self._grouped and event_time:
            await self._fire_grouped(queue, upto, out, stamps)
            await backend.finish_batch()
            return StampedBatch(out, stamps) if out else out
        while (timer := queue.poll(upto)) is not None:
            timestamp, key, window = timer
            backend.current_key = key
            if self.merging:
                assert self.windows_of_key is not None
                state_window = await self.windows_of_key.get(window)
                if state_window is None:
                    continue  # the window merged into another: its timers moved there
            else:
                state_window = window
            tctx.window = window
            if event_time:
                result = await resolve(trigger.on_event_time(timestamp, window, tctx))
            else:
                result = await resolve(trigger.on_processing_time(timestamp, window, tctx))
            if result is not TriggerResult.CONTINUE:
                await self._on_result(result, key, window, state_window, out, stamps)
            if event_time == self.event_time and timestamp == self._cleanup_time(window):
                await self._clear_all(window, state_window)
        await backend.finish_batch()
        return StampedBatch(out, stamps) if out else out

    async def _fire_grouped(
        self, queue: TimerQueue, upto: int, out: list[Any], stamps: list[int | None]
    ) -> None:
        """:meth:`_fire` for the default event-time trigger, whose decisions are known: a window fires
        at its last ms and goes at its cleanup time (its trigger then has nothing left to clear)."""
        backend, lateness, contents = self.backend, self.lateness, self.contents
        clear_function = self._function_clears
        while (timer := queue.poll(upto)) is not None:
            timestamp, key, window = timer
            backend.current_key = key
            last = window.end - 1
            if timestamp == last:
                await self._emit(key, window, window, out, stamps)
            if timestamp == last + lateness:
                self._windows.pop(window.start, None)
                if self.keeps_elements:
                    contents.namespace = window
                    contents.clear_nowait()
                else:
                    backend.delete_nowait(_CONTENTS, key, window)
                if clear_function:
                    assert self.function is not None
                    self._context.window = window
                    await resolve(self.function.clear(self._context))

    async def _clear_all(self, window: Any, state_window: Any) -> None:
        contents = self.contents
        contents.namespace = state_window
        contents.clear_nowait()
        tctx = self._trigger_ctx
        tctx.window = window
        await resolve(self.trigger.clear(window, tctx))
        if self.function is not None:
            self._context.window = window
            await resolve(self.function.clear(self._context))
        if self.windows_of_key is not None:
            await self.windows_of_key.remove(window)

    # ---- time

    def _cleanup_time(self, window: Any) -> int:
        end: int = window.max_timestamp()
        if not self.event_time:
            return end
        cleanup = end + self.lateness
        return cleanup if cleanup < MAX_WATERMARK else MAX_WATERMARK

    def _is_late(self, window: Any) -> bool:
        return self.event_time and self._cleanup_time(window) <= self.time.watermark

    def _register_cleanup(self, window: Any) -> None:
        cleanup = self._cleanup_time(window)
        if cleanup == MAX_WATERMARK:
            return  # a global window ends by its trigger only
        if self.event_time:
            self.time.register_event_time_timer(cleanup, window)
        else:
            self.time.register_processing_time_timer(cleanup, window)

    def _delete_cleanup(self, window: Any) -> None:
        cleanup = self._cleanup_time(window)
        if cleanup == MAX_WATERMARK:
            return
        if self.event_time:
            self.time.delete_event_time_timer(cleanup, window)
        else:
            self.time.delete_processing_time_timer(cleanup, window)


@operator_for(WindowSpec)
def _window_operator(spec: WindowSpec, ctx: SubtaskContext) -> WindowOperator:
    return WindowOperator(ctx, spec)
