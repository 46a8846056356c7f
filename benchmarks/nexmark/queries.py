"""Nexmark queries 5, 7 and 8 as lockgate jobs: event-time windows over the generator's events, each
giving the rows ``reference.py`` gives (sorted, they are equal).

Every job reads the events from a collection with monotonous timestamps (the events' ``date_time``)
and collects its rows; ``build_q5`` and the others add the query to an environment and return the sink.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any

import lockgate as lg

from .generator import Auction, Bid, Event, Person
from .reference import SIZE_MS, SLIDE_MS

Query = Callable[[lg.StreamEnvironment, list[Event]], lg.CollectSink[Any]]


def _events(env: lg.StreamEnvironment, events: list[Event]) -> lg.DataStream:
    strategy = lg.WatermarkStrategy.for_monotonous_timestamps().with_timestamp_assigner(
        lambda event, previous: event.date_time
    )
    return env.from_collection(events, uid="events", watermark_strategy=strategy)


def _ms(millis: int) -> timedelta:
    return timedelta(milliseconds=millis)


class Count(lg.AggregateFunction[Any, int, int]):
    def create_accumulator(self) -> int:
        return 0

    def add(self, value: Any, accumulator: int) -> int:
        return accumulator + 1

    def get_result(self, accumulator: int) -> int:
        return accumulator

    def merge(self, a: int, b: int) -> int:
        return a + b


class AuctionCount(lg.ProcessWindowFunction[int, tuple[int, int, int]]):
    """``(window_end, auction, bids)`` of one auction's window."""

    def process(self, key: int, context: lg.WindowContext, elements: list[int]) -> Any:
        return [(context.window.end, key, elements[0])]


class HottestAuctions(lg.ProcessWindowFunction[tuple[int, int, int], tuple[int, int, int]]):
    """The counts of one sliding window's end: those equal to the highest."""

    def process(self, key: int, context: lg.WindowContext, elements: list[tuple[int, int, int]]) -> Any:
        top = max(count for _, _, count in elements)
        return [row for row in elements if row[2] == top]


def build_q5(env: lg.StreamEnvironment, events: list[Event]) -> lg.CollectSink[Any]:
    """Hot items: bids per auction in sliding windows of 10 s every 2 s, then per window the auctions
    with the most. Each count carries its window's last ms as timestamp, so the counts of one window
    meet in the tumbling window of one slide that holds it."""
    sink: lg.CollectSink[Any] = lg.CollectSink()
    (
        _events(env, events)
        .filter(lambda event: type(event) is Bid, uid="bids")
        .map(lambda bid: bid.auction, uid="auction")
        .key_by(lambda auction: auction)
        .window(lg.SlidingEventTimeWindows.of(_ms(SIZE_MS), _ms(SLIDE_MS)))
        .aggregate(Count(), AuctionCount(), uid="count-per-auction")
        .key_by(lambda row: row[0])
        .window(lg.TumblingEventTimeWindows.of(_ms(SLIDE_MS)))
        .process(HottestAuctions(), uid="hottest")
        .sink(sink, uid="rows")
    )
    return sink


class HighestBids(lg.AggregateFunction[Any, Any, Any]):
    """The highest price of a window and the bids at it, as ``(price, [(auction, price, bidder)])``."""

    def create_accumulator(self) -> Any:
        return (-1, [])

    def add(self, value: Any, accumulator: Any) -> Any:
        price = value[1]
        if price > accumulator[0]:
            return (price, [value])
        if price == accumulator[0]:
            accumulator[1].append(value)
        return accumulator

    def get_result(self, accumulator: Any) -> Any:
        return accumulator[1]

    def merge(self, a: Any, b: Any) -> Any:
        if a[0] != b[0]:
            return a if a[0] > b[0] else b
        return (a[0], a[1] + b[1])


class WithWindowEnd(lg.ProcessWindowFunction[Any, Any]):
    def process(self, key: Any, context: lg.WindowContext, elements: list[Any]) -> Any:
        end = context.window.end
        return [(end, *bid) for bid in elements[0]]


def build_q7(env: lg.StreamEnvironment, events: list[Event]) -> lg.CollectSink[Any]:
    """Highest bid: per tumbling window of 10 s, the bids at its highest price (one key: every bid of a
    window meets in one place, as Flink's global window aggregate)."""
    sink: lg.CollectSink[Any] = lg.CollectSink()
    (
        _events(env, events)
        .filter(lambda event: type(event) is Bid, uid="bids")
        .map(lambda bid: (bid.auction, bid.price, bid.bidder), uid="project")
        .key_by(lambda bid: 0)
        .window(lg.TumblingEventTimeWindows.of(_ms(SIZE_MS)))
        .aggregate(HighestBids(), WithWindowEnd(), uid="highest")
        .sink(sink, uid="rows")
    )
    return sink


class SellerJoin(lg.AggregateFunction[Any, Any, Any]):
    """Per person id and window: the person's name (if they registered there) and whether they opened
    an auction there."""

    def create_accumulator(self) -> Any:
        return (None, False)

    def add(self, value: Any, accumulator: Any) -> Any:
        if value[0] == "person":
            return (value[2], accumulator[1])
        return (accumulator[0], True)

    def get_result(self, accumulator: Any) -> Any:
        return accumulator

    def merge(self, a: Any, b: Any) -> Any:
        return (a[0] if a[0] is not None else b[0], a[1] or b[1])


class NewSellers(lg.ProcessWindowFunction[Any, Any]):
    def process(self, key: int, context: lg.WindowContext, elements: list[Any]) -> Any:
        name, opened = elements[0]
        return [(context.window.end, key, name)] if name is not None and opened else []


def _tagged(event: Person | Auction) -> tuple[str, int, str | None]:
    if type(event) is Person:
        return ("person", event.id, event.name)
    return ("auction", event.seller, None)  # type: ignore[union-attr]


def build_q8(env: lg.StreamEnvironment, events: list[Event]) -> lg.CollectSink[Any]:
    """New users selling: persons and auctions keyed by person id (the seller), joined in tumbling
    windows of 10 s."""
    sink: lg.CollectSink[Any] = lg.CollectSink()
    (
        _events(env, events)
        .filter(lambda event: type(event) is not Bid, uid="persons-and-auctions")
        .map(_tagged, uid="tag")
        .key_by(lambda row: row[1])
        .window(lg.TumblingEventTimeWindows.of(_ms(SIZE_MS)))
        .aggregate(SellerJoin(), NewSellers(), uid="join")
        .sink(sink, uid="rows")
    )
    return sink


QUERIES: dict[str, Query] = {"q5": build_q5, "q7": build_q7, "q8": build_q8}
