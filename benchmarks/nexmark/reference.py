"""Plain-Python answers to Nexmark queries 5, 7 and 8: what the lockgate jobs must output, row for row.

Every query takes an iterable of events (``Person``, ``Auction`` and ``Bid`` from ``generator``, in any
order) and returns a sorted list of tuples. Times are event times in milliseconds (``date_time``).
Windows are Flink's: a window is ``[start, start + size)``, its end exclusive; a tumbling window of
``size`` holds ``ts`` when ``start = ts - ts % size``; sliding windows of ``size`` every ``slide`` are
all windows whose ``start`` is a multiple of ``slide`` and which hold ``ts`` (``size // slide`` of
them for each ``ts`` when ``slide`` divides ``size``). ``%`` is Python's, so negative times fall in the
window before zero as in Flink. A window is reported by its end; a window without input has no rows.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable

from .generator import Auction, Bid, Event, Person

SIZE_MS = 10_000
SLIDE_MS = 2_000


def sliding_starts(ts: int, size: int, slide: int) -> range:
    """Starts of the sliding windows holding ``ts``, newest first."""
    last = ts - ts % slide
    return range(last, ts - size, -slide)


def q5(events: Iterable[Event], size: int = SIZE_MS, slide: int = SLIDE_MS) -> list[tuple[int, int, int]]:
    """Hot items: per sliding window (``size`` every ``slide``), the auctions with the most bids.

    Bids are counted per (window, auction); for each window every auction whose count equals that
    window's highest count is a row ``(window_end, auction, count)`` (ties: all of them). Persons
    and auctions are ignored. Sorted by ``(window_end, auction)``.
    """
    counts: dict[int, dict[int, int]] = defaultdict(lambda: defaultdict(int))
    for event in events:
        if isinstance(event, Bid):
            for start in sliding_starts(event.date_time, size, slide):
                counts[start + size][event.auction] += 1
    rows = []
    for end, per_auction in counts.items():
        top = max(per_auction.values())
        rows.extend((end, auction, n) for auction, n in per_auction.items() if n == top)
    return sorted(rows)


def q7(events: Iterable[Event], size: int = SIZE_MS) -> list[tuple[int, int, int, int]]:
    """Highest bid: per tumbling window of ``size``, the bids at that window's highest price.

    One row ``(window_end, auction, price, bidder)`` per bid whose price equals the highest price of
    its window (ties: all of them; two equal such bids give two equal rows). Persons and auctions
    are ignored. Sorted by the whole tuple.
    """
    best: dict[int, list[Bid]] = {}
    for event in events:
        if isinstance(event, Bid):
            end = event.date_time - event.date_time % size + size
            found = best.get(end)
            if found is None or event.price > found[0].price:
                best[end] = [event]
            elif event.price == found[0].price:
                found.append(event)
    return sorted((end, b.auction, b.price, b.bidder) for end, bids in best.items() for b in bids)


def q8(events: Iterable[Event], size: int = SIZE_MS) -> list[tuple[int, int, str]]:
    """New users selling: persons who opened an auction in the tumbling window (of ``size``) in which
    they registered.

    A row ``(window_end, person_id, name)`` for each person whose ``date_time`` falls in a window in
    which at least one auction with ``seller == person_id`` has its ``date_time``; one row per person
    and window however many auctions they opened there (Nexmark's q8 groups the auctions by seller
    and window before the join). Bids are ignored. Sorted by the whole tuple.
    """
    persons: set[tuple[int, int, str]] = set()
    sellers: set[tuple[int, int]] = set()
    for event in events:
        if isinstance(event, Person):
            persons.add((event.date_time - event.date_time % size + size, event.id, event.name))
        elif isinstance(event, Auction):
            sellers.add((event.date_time - event.date_time % size + size, event.seller))
    return sorted(row for row in persons if (row[0], row[1]) in sellers)
