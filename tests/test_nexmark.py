"""The Nexmark generator (benchmarks/nexmark/generator.py) is deterministic, keeps the reference's
proportions, ids and rate; the plain-Python queries (reference.py) give known answers on small inputs."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

from nexmark.generator import (
    FIRST_AUCTION_ID,
    FIRST_PERSON_ID,
    Auction,
    Bid,
    GeneratorConfig,
    Person,
    events,
    last_auction,
    last_person,
)
from nexmark.reference import q5, q7, q8


def test_same_config_same_events_and_a_later_start_is_the_tail() -> None:
    first = list(events(3_000, seed=7))
    assert first == list(events(3_000, seed=7))
    assert list(events(1_000, first_event_id=2_000, seed=7)) == first[2_000:]
    assert list(events(200, seed=8)) != first[:200]


def test_proportions_are_1_3_46() -> None:
    kinds = [type(event) for event in events(5_000)]
    assert (kinds.count(Person), kinds.count(Auction), kinds.count(Bid)) == (100, 300, 4_600)
    assert kinds[:5] == [Person, Auction, Auction, Auction, Bid]
    assert kinds[50] is Person


def test_ids_refer_to_existing_or_just_created_persons_and_auctions() -> None:
    persons = auctions = 0
    for position, event in enumerate(events(5_000)):
        if isinstance(event, Person):
            assert event.id == FIRST_PERSON_ID + persons == FIRST_PERSON_ID + last_person(position)
            persons += 1
        elif isinstance(event, Auction):
            assert event.id == FIRST_AUCTION_ID + auctions == FIRST_AUCTION_ID + last_auction(position)
            auctions += 1
            assert FIRST_PERSON_ID <= event.seller < FIRST_PERSON_ID + persons + 10
            assert event.expires > event.date_time
            assert 0 < event.initial_bid <= event.reserve
        else:
            assert FIRST_AUCTION_ID <= event.auction < FIRST_AUCTION_ID + auctions + 10
            assert FIRST_PERSON_ID <= event.bidder < FIRST_PERSON_ID + persons + 10
            assert 100 <= event.price <= 100_000_000


def test_timestamps_advance_at_the_configured_rate() -> None:
    config = GeneratorConfig(events_per_second=1_000, base_time=5_000)
    times = [event.date_time for event in events(3_000, first_event_id=10, config=config)]
    assert times == sorted(times)
    assert times[0] == 5_010 and times[-1] == 5_000 + 3_009
    times = [event.date_time for event in events(1_000, events_per_second=400)]
    assert times == [n * 1000 // 400 for n in range(1_000)]


def bid(auction: int, price: int, ts: int, bidder: int = 1) -> Bid:
    return Bid(auction, bidder, price, "c", "u", ts, "")


def person(id: int, ts: int) -> Person:
    return Person(id, f"p{id}", "e", "c", "city", "st", ts, "")


def auction(id: int, seller: int, ts: int) -> Auction:
    return Auction(id, "i", "d", 1, 2, ts, ts + 1, seller, 10, "")


def test_q5_hot_items_in_sliding_windows() -> None:
    # Windows of 10 s every 2 s: ts 1_000 is in the windows ending 2_000 .. 10_000, ts 9_000 in
    # those ending 10_000 .. 18_000, ts 11_000 in 12_000 .. 20_000.
    rows = q5([bid(1, 5, 1_000), bid(2, 5, 9_000), person(1, 9_500), bid(2, 5, 11_000)])
    expected = [(end, 1, 1) for end in (2_000, 4_000, 6_000, 8_000)]
    expected += [(10_000, 1, 1), (10_000, 2, 1)]
    expected += [(end, 2, 2) for end in (12_000, 14_000, 16_000, 18_000)] + [(20_000, 2, 1)]
    assert rows == expected


def test_q7_highest_bids_per_tumbling_window_ties_all() -> None:
    rows = q7(
        [
            bid(1, 10, 0, bidder=7),
            bid(2, 30, 9_999, bidder=8),
            bid(3, 30, 5_000, bidder=9),
            bid(4, 20, 10_000),
            auction(5, 1, 10_001),
        ]
    )
    assert rows == [(10_000, 2, 30, 8), (10_000, 3, 30, 9), (20_000, 4, 20, 1)]


def test_q8_persons_selling_in_the_window_they_registered() -> None:
    rows = q8(
        [
            person(1, 1_000),
            auction(100, 1, 9_999),
            auction(101, 1, 2_000),
            person(2, 9_000),
            auction(102, 2, 10_000),  # the next window: no row
            person(3, 12_000),
            bid(100, 1, 12_500, bidder=3),
            auction(103, 3, 19_999),
            auction(104, 4, 19_999),  # a seller never registered
        ]
    )
    assert rows == [(10_000, 1, "p1"), (20_000, 3, "p3")]


def test_the_lockgate_queries_give_the_reference_rows() -> None:
    """q5, q7 and q8 as lockgate jobs (benchmarks/nexmark/queries.py) equal the plain-Python answers,
    on events spread over several windows (400 events per second of event time)."""
    from nexmark.queries import QUERIES

    import lockgate as lg

    stream = list(events(15_000, events_per_second=400))
    for name, plain in (("q5", q5), ("q7", q7), ("q8", q8)):
        env = lg.StreamEnvironment(parallelism=2, batch_size=64)
        sink = QUERIES[name](env, stream)
        env.execute_blocking(name)
        expected = plain(stream)
        assert len(expected) > 3, name  # several windows' rows
        assert sorted(sink.results) == expected, name
