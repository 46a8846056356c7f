"""Change the class of a job's state between two versions of the job, and resume from a savepoint.

    python examples/evolve.py

An account per customer, kept in keyed state with a ``DataclassSerializer``: its schema is written with
every checkpoint and savepoint. Version 1 of the job counts orders and sums their amounts in euros (a
float); it reads the first day's orders and is stopped with a savepoint. Version 2 changes the class:

- ``currency`` is added, with a default: saved accounts get it;
- ``orders`` is renamed ``order_count``: ``field_alias("orders")`` says where its values are;
- ``balance`` becomes whole cents (an int): version 2 of the schema, with a migration from version 1.

Version 2 resumes from the savepoint, reads every saved account through the migration, and goes on
with the second day's orders. Had the schema changed in a way nothing can read (a type changed with no
migration), the restore would stop with an ``IncompatibleStateError`` saying what changed, and leave
the savepoint as it was.
"""

import dataclasses
import tempfile
from pathlib import Path
from typing import Any

import anyio

import lockgate as lg

DAY_1 = [("ana", 12.5), ("bo", 3.0), ("ana", 7.25), ("cy", 40.0), ("bo", 1.1)]
DAY_2 = [("ana", 1.0), ("dee", 9.99), ("bo", 2.0)]


def version_1() -> tuple[Any, Any]:
    """The account of version 1, and how an order changes it."""

    @dataclasses.dataclass
    class Account:
        orders: int
        balance: float  # euros

    def add(account: Account | None, euros: float) -> Account:
        if account is None:
            return Account(1, euros)
        return Account(account.orders + 1, account.balance + euros)

    return Account, add


def version_2() -> tuple[Any, Any]:
    """The account of version 2 (the same class name, other fields), and how an order changes it."""

    @dataclasses.dataclass
    class Account:
        order_count: int = dataclasses.field(metadata=lg.field_alias("orders"))  # renamed
        balance: int = 0  # whole cents now: retyped, with a migration (see run_version_2)
        currency: str = "EUR"  # added

    def add(account: Account | None, euros: float) -> Account:
        cents = round(euros * 100)
        if account is None:
            return Account(1, cents)
        return dataclasses.replace(
            account, order_count=account.order_count + 1, balance=account.balance + cents
        )

    return Account, add


class Accounts(lg.KeyedProcessFunction[tuple[str, float], Any]):
    """Adds each order to its customer's account, kept with ``serializer``, and emits the account."""

    def __init__(self, add: Any, serializer: lg.Serializer[Any]) -> None:
        self.add, self.serializer = add, serializer

    def open(self, ctx: lg.RuntimeContext) -> None:
        self.state = ctx.get_state(lg.ValueStateDescriptor("account", serializer=self.serializer))

    def process_element(self, order: tuple[str, float], ctx: lg.RuntimeContext) -> Any:
        account = self.add(self.state.value_nowait(), order[1])
        self.state.update_nowait(account)
        yield (order[0], account)


async def run_version_1(savepoints: Path) -> tuple[str, list[Any]]:
    account, add = version_1()
    env = lg.StreamEnvironment(parallelism=2)
    env.enable_checkpointing(60.0)
    orders: lg.QueueSource[tuple[str, float]] = lg.QueueSource()
    done = anyio.Event()
    seen = 0

    def watch(row: Any) -> Any:
        nonlocal seen
        seen += 1
        if seen == len(DAY_1):
            done.set()
        return row

    out = (
        env.from_source(orders, uid="orders")
        .key_by(lambda order: order[0])
        .process(Accounts(add, lg.DataclassSerializer(account)), uid="accounts")
        .map(watch, uid="watch")
        .sink(lg.CollectSink(), uid="out")
    )
    job = await env.start("accounts-v1")
    for order in DAY_1:
        await orders.put(order)
    await done.wait()
    savepoint = await job.stop_with_savepoint(savepoints.as_uri())
    return savepoint, out.results


async def run_version_2(savepoint: str) -> list[Any]:
    account, add = version_2()
    serializer = lg.DataclassSerializer(
        account, version=2, migrations={1: lambda old: {**old, "balance": round(old["balance"] * 100)}}
    )
    env = lg.StreamEnvironment(parallelism=3)
    env.set_state_backend(lg.RocksDBStateBackend())
    out = (
        env.from_collection(DAY_2, uid="orders")
        .key_by(lambda order: order[0])
        .process(Accounts(add, serializer), uid="accounts")
        .map(lambda row: row, uid="watch")
        .sink(lg.CollectSink(), uid="out")
    )
    await env.execute("accounts-v2", restore_from=savepoint)
    return out.results


def show(account: Any) -> str:
    fields = ", ".join(f"{name}={value!r}" for name, value in vars(account).items())
    return f"{type(account).__name__}({fields})"


async def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        savepoint, first = await run_version_1(Path(tmp))
        print(f"Version 1 read {len(first)} orders and stopped with a savepoint.")
        for customer, account in sorted(dict(first).items()):
            print(f"  {customer:<4} {show(account)}")
        second = await run_version_2(savepoint)
    print(f"Version 2 restored the accounts in their new form and read {len(second)} more orders.")
    for customer, account in sorted(dict(second).items()):
        print(f"  {customer:<4} {show(account)}")


if __name__ == "__main__":
    anyio.run(main)
