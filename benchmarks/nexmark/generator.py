"""The Nexmark event generator, in the behaviour of the reference (Apache Beam's and nexmark/nexmark's
Java generators): every event is a function of its id alone, so any process, any split of the id range
and any restart yields the same events.

Event ids run 0, 1, 2, ...; within each block of 50 consecutive ids the first is a Person, the next 3
are Auctions and the other 46 are Bids. Event ``n``'s timestamp is ``base_time + n * 1000 //
events_per_second`` milliseconds. Persons and auctions get dense ids from 1000 on (the n-th person
created has id ``1000 + n``, likewise auctions). An auction's seller, and a bid's auction and bidder,
are mostly "hot" (the first auction, or the first/second person, of the current batch of 100), else
drawn from the recent ones (the last 100 auctions, the last 1000 persons) plus a lead of up to 10 ids
not created yet, as the reference does.

Run ``python benchmarks/nexmark/generator.py --events 100000`` for a line of JSON: generation speed
and the count of each kind.
"""

from __future__ import annotations

import argparse
import json
import random
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

#: Events per block of each kind, in this order: persons, auctions, bids.
PERSON_PROPORTION = 1
AUCTION_PROPORTION = 3
BID_PROPORTION = 46
PROPORTION_DENOMINATOR = PERSON_PROPORTION + AUCTION_PROPORTION + BID_PROPORTION

FIRST_PERSON_ID = 1000
FIRST_AUCTION_ID = 1000
FIRST_CATEGORY_ID = 10
NUM_CATEGORIES = 5

#: How far past the last created person/auction a random pick may reach.
PERSON_ID_LEAD = 10
AUCTION_ID_LEAD = 10
#: Hot sellers, bidders and auctions are picked from batches of this many ids.
HOT_BATCH = 100

HOT_CHANNELS = ("Google", "Facebook", "Baidu", "Apple")
CHANNELS_NUMBER = 10_000

_STATES = ("AZ", "CA", "ID", "OR", "WA", "WY")
_CITIES = (
    "Phoenix",
    "Los Angeles",
    "San Francisco",
    "Boise",
    "Portland",
    "Bend",
    "Redmond",
    "Seattle",
    "Kent",
    "Cheyenne",
)
_FIRST_NAMES = (
    "Peter",
    "Paul",
    "Luke",
    "John",
    "Saul",
    "Vicky",
    "Kate",
    "Julie",
    "Sarah",
    "Deiter",
    "Walter",
)
_LAST_NAMES = ("Shultz", "Abrams", "Spencer", "White", "Bartels", "Walton", "Smith", "Jones", "Noris")


@dataclass(frozen=True, slots=True)
class Person:
    id: int
    name: str
    email_address: str
    credit_card: str
    city: str
    state: str
    date_time: int
    extra: str


@dataclass(frozen=True, slots=True)
class Auction:
    id: int
    item_name: str
    description: str
    initial_bid: int
    reserve: int
    date_time: int
    expires: int
    seller: int
    category: int
    extra: str


@dataclass(frozen=True, slots=True)
class Bid:
    auction: int
    bidder: int
    price: int
    channel: str
    url: str
    date_time: int
    extra: str


Event = Person | Auction | Bid
#: ``random.Random.random`` of the generator's one instance, reseeded per event.
Rand = Callable[[], float]


@dataclass(frozen=True, slots=True)
class GeneratorConfig:
    """What shapes the events; the defaults are the reference's. Times are milliseconds.

    A bid is for a hot auction with probability ``1 - 1/hot_auction_ratio``, by a hot bidder with
    ``1 - 1/hot_bidders_ratio``; an auction has a hot seller with ``1 - 1/hot_sellers_ratio``.
    ``seed`` 0 seeds event ``n`` with ``n`` alone, as the reference; another seed gives another,
    equally deterministic, stream.
    """

    events_per_second: int = 10_000
    base_time: int = 0
    seed: int = 0
    hot_auction_ratio: int = 2
    hot_sellers_ratio: int = 4
    hot_bidders_ratio: int = 4
    num_in_flight_auctions: int = 100
    num_active_people: int = 1000
    avg_person_bytes: int = 200
    avg_auction_bytes: int = 500
    avg_bid_bytes: int = 100

    def __post_init__(self) -> None:
        if self.events_per_second <= 0:
            raise ValueError("events_per_second must be positive")

    def timestamp(self, event_id: int) -> int:
        """Event ``event_id``'s time: ``base_time`` plus its share of the rate, rounded down."""
        return self.base_time + event_id * 1000 // self.events_per_second


def last_person(event_id: int) -> int:
    """The newest person id (counted from 0) existing at ``event_id``: the event's own if a person."""
    epoch, offset = divmod(event_id, PROPORTION_DENOMINATOR)
    return epoch * PERSON_PROPORTION + min(offset, PERSON_PROPORTION - 1)


def last_auction(event_id: int) -> int:
    """The newest auction id (counted from 0) existing at ``event_id``: the event's own if an auction;
    -1 before the first auction."""
    epoch, offset = divmod(event_id, PROPORTION_DENOMINATOR)
    if offset < PERSON_PROPORTION:
        return epoch * AUCTION_PROPORTION - 1
    return epoch * AUCTION_PROPORTION + min(offset - PERSON_PROPORTION, AUCTION_PROPORTION - 1)


def _pool(seed: int, size: int, spaces: bool) -> str:
    """A fixed string of random lowercase letters (one in 13 a space if ``spaces``), which strings are
    sliced from: one slice per field is far cheaper than drawing each character."""
    rng = random.Random(seed)
    letters = "abcdefghijklmnopqrstuvwxyz"
    if spaces:
        return "".join(" " if rng.random() < 1 / 13 else rng.choice(letters) for _ in range(size))
    return "".join(rng.choice(letters) for _ in range(size))


_WORDS = _pool(0x6E6578, 1 << 14, spaces=True)
_LETTERS = _pool(0x6D61726B, 1 << 14, spaces=False)


def _reverse32(n: int) -> int:
    """The absolute value of ``n``'s 32 bits reversed, read as a signed 32-bit int."""
    r = int(f"{n & 0xFFFFFFFF:032b}"[::-1], 2)
    return abs(r - (1 << 32) if r >= 1 << 31 else r)


def _base_url(rng: random.Random) -> str:
    parts = []
    for _ in range(3):
        length = 3 + int(rng.random() * 2)
        offset = int(rng.random() * (len(_LETTERS) - 5))
        parts.append(_LETTERS[offset : offset + length])
    return "https://www.nexmark.com/" + "/".join(parts) + "/item.htm?query=1"


_HOT_URLS = tuple(_base_url(random.Random(f"hot-{i}")) for i in range(len(HOT_CHANNELS)))
_channels: dict[int, tuple[str, str]] = {}


def _channel(n: int) -> tuple[str, str]:
    """Cold channel ``n``'s name and URL, a function of ``n`` alone (nine in ten carry a channel_id)."""
    found = _channels.get(n)
    if found is None:
        rng = random.Random(f"channel-{n}")
        url = _base_url(rng)
        if int(rng.random() * 10) > 0:
            url += f"&channel_id={_reverse32(n)}"
        found = _channels[n] = (f"channel-{n}", url)
    return found


class Generator:
    """Makes event ``n`` of a config with :meth:`event`; one instance reuses one ``random.Random``,
    seeded per event with the event id (and the config's seed)."""

    __slots__ = ("_auction_horizon_events", "_rand", "_seed", "config")

    def __init__(self, config: GeneratorConfig | None = None) -> None:
        self.config = config or GeneratorConfig()
        rng = random.Random()
        #: The C-level seed: for an int the same state as ``rng.seed``, without its Python wrapper.
        self._seed = super(random.Random, rng).seed
        self._rand = rng.random
        #: Events until ``num_in_flight_auctions`` more auctions exist: an auction lasts on average
        #: the time those events take.
        self._auction_horizon_events = (
            self.config.num_in_flight_auctions * PROPORTION_DENOMINATOR // AUCTION_PROPORTION
        )

    def event(self, event_id: int) -> Event:
        cfg = self.config
        self._seed((cfg.seed << 64) | event_id)
        rand = self._rand
        ts = cfg.timestamp(event_id)
        kind = event_id % PROPORTION_DENOMINATOR
        if kind >= PERSON_PROPORTION + AUCTION_PROPORTION:
            if int(rand() * cfg.hot_auction_ratio) > 0:
                auction = last_auction(event_id) // HOT_BATCH * HOT_BATCH
            else:
                auction = self._random_auction(event_id, rand)
            if int(rand() * cfg.hot_bidders_ratio) > 0:
                bidder = last_person(event_id) // HOT_BATCH * HOT_BATCH + 1
            else:
                bidder = self._random_person(event_id, rand)
            price = _price(rand)
            if int(rand() * 2) > 0:
                i = int(rand() * len(HOT_CHANNELS))
                channel, url = HOT_CHANNELS[i], _HOT_URLS[i]
            else:
                channel, url = _channel(int(rand() * CHANNELS_NUMBER))
            return Bid(
                auction + FIRST_AUCTION_ID,
                bidder + FIRST_PERSON_ID,
                price,
                channel,
                url,
                ts,
                _extra(rand, 32, cfg.avg_bid_bytes),
            )
        if kind >= PERSON_PROPORTION:
            if int(rand() * cfg.hot_sellers_ratio) > 0:
                seller = last_person(event_id) // HOT_BATCH * HOT_BATCH
            else:
                seller = self._random_person(event_id, rand)
            category = FIRST_CATEGORY_ID + int(rand() * NUM_CATEGORIES)
            initial_bid = _price(rand)
            horizon = cfg.timestamp(event_id + self._auction_horizon_events) - ts
            expires = ts + 1 + int(rand() * max(horizon * 2, 1))
            name = _string(rand, 20)
            description = _string(rand, 100)
            reserve = initial_bid + _price(rand)
            size = 8 + len(name) + len(description) + 40
            return Auction(
                last_auction(event_id) + FIRST_AUCTION_ID,
                name,
                description,
                initial_bid,
                reserve,
                ts,
                expires,
                seller + FIRST_PERSON_ID,
                category,
                _extra(rand, size, cfg.avg_auction_bytes),
            )
        name = f"{_FIRST_NAMES[int(rand() * 11)]} {_LAST_NAMES[int(rand() * 9)]}"
        email = f"{_string(rand, 7)}@{_string(rand, 5)}.com"
        card = " ".join([f"{int(rand() * 10_000):04d}" for _ in range(4)])
        city = _CITIES[int(rand() * len(_CITIES))]
        state = _STATES[int(rand() * len(_STATES))]
        size = 8 + len(name) + len(email) + len(card) + len(city) + len(state)
        return Person(
            last_person(event_id) + FIRST_PERSON_ID,
            name,
            email,
            card,
            city,
            state,
            ts,
            _extra(rand, size, cfg.avg_person_bytes),
        )

    def _random_person(self, event_id: int, rand: Rand) -> int:
        """One of the ``num_active_people`` newest persons, or up to ``PERSON_ID_LEAD`` ids beyond."""
        people = last_person(event_id) + 1
        active = min(people, self.config.num_active_people)
        return people - active + int(rand() * (active + PERSON_ID_LEAD))

    def _random_auction(self, event_id: int, rand: Rand) -> int:
        """One of the ``num_in_flight_auctions`` newest auctions, or up to ``AUCTION_ID_LEAD`` beyond."""
        newest = last_auction(event_id)
        oldest = max(newest - self.config.num_in_flight_auctions, 0)
        return oldest + int(rand() * (newest - oldest + 1 + AUCTION_ID_LEAD))


def _price(rand: Rand) -> int:
    """A price in cents, log-uniform from 1.00 to 1,000,000.00."""
    return int(10.0 ** (rand() * 6.0) * 100.0 + 0.5)


def _string(rand: Rand, max_length: int) -> str:
    """Words of 3 to ``max_length - 1`` characters, stripped of outer spaces (so possibly shorter)."""
    length = 3 + int(rand() * (max_length - 3))
    offset = int(rand() * (len(_WORDS) - max_length))
    return _WORDS[offset : offset + length].strip()


def _extra(rand: Rand, current_size: int, average_size: int) -> str:
    """Letters padding an event of ``current_size`` bytes to ``average_size`` on average (+-20%)."""
    if current_size > average_size:
        return ""
    wanted = average_size - current_size
    delta = int(wanted * 0.2 + 0.5)
    size = wanted - delta + (int(rand() * 2 * delta) if delta else 0)
    offset = int(rand() * (len(_LETTERS) - size))
    return _LETTERS[offset : offset + size]


def events(
    count: int,
    first_event_id: int = 0,
    events_per_second: int = 10_000,
    seed: int = 0,
    config: GeneratorConfig | None = None,
) -> Iterator[Event]:
    """Events ``first_event_id`` to ``first_event_id + count - 1``, in id (so time) order. ``config``,
    when given, replaces ``events_per_second`` and ``seed``."""
    if config is None:
        config = GeneratorConfig(events_per_second=events_per_second, seed=seed)
    make = Generator(config).event
    for event_id in range(first_event_id, first_event_id + count):
        yield make(event_id)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--rate", type=int, default=10_000, help="events per second of event time")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    counts = {"Person": 0, "Auction": 0, "Bid": 0}
    started = time.perf_counter()
    for event in events(args.events, events_per_second=args.rate, seed=args.seed):
        counts[type(event).__name__] += 1
    seconds = time.perf_counter() - started
    print(
        json.dumps(
            {
                "events": args.events,
                "seconds": round(seconds, 3),
                "events_per_s": round(args.events / seconds),
                "persons": counts["Person"],
                "auctions": counts["Auction"],
                "bids": counts["Bid"],
            }
        )
    )


if __name__ == "__main__":
    main()
