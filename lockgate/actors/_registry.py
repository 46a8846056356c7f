"""The operator registry: which factory makes the operator of each kind of operator spec.

Each operator kind registers its factory beside its operator class, with :func:`operator_for`; the
runner calls :func:`create_operator` once per subtask as it builds a job, so no lookup is ever paid
per record. The graph declares specs and knows nothing of this registry: imports run one way.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from lockgate.actors._context import SubtaskContext
from lockgate.actors._stream_operator import StreamOperator
from lockgate.graph import OperatorSpec

S = TypeVar("S", bound=OperatorSpec)
Op = TypeVar("Op", bound=StreamOperator)

# Keyed by the exact spec class; create_operator walks the spec's MRO, so subclasses find it too.
_factories: dict[type[OperatorSpec], Callable[[Any, SubtaskContext], StreamOperator]] = {}


def operator_for(
    spec_type: type[S],
) -> Callable[[Callable[[S, SubtaskContext], Op]], Callable[[S, SubtaskContext], Op]]:
    """Register what makes the operator of ``spec_type`` (and of its subclasses without their own).

    Decorates a factory called as ``factory(spec, ctx)`` once per subtask: a function, or an operator
    class whose constructor takes ``(spec, ctx)``::

        @operator_for(MapSpec)
        def _map(spec: MapSpec, ctx: SubtaskContext) -> MapOperator:
            return MapOperator(ctx, spec.function)

    The module that does this must be imported before a job is built (the built-in kinds are
    imported by ``lockgate.actors._operators``).

    Raises:
        TypeError: ``spec_type`` is not a subclass of :class:`~lockgate.graph.OperatorSpec`, or
            another factory is already registered for it.
    """
    if not (isinstance(spec_type, type) and issubclass(spec_type, OperatorSpec)) or spec_type is OperatorSpec:
        raise TypeError(f"operators are registered for subclasses of OperatorSpec, not {spec_type!r}")

    def register(factory: Callable[[S, SubtaskContext], Op]) -> Callable[[S, SubtaskContext], Op]:
        registered = _factories.setdefault(spec_type, factory)
        if registered is not factory:
            raise TypeError(
                f"{_name(spec_type)} already has an operator, made by {registered!r}; "
                "register one operator per spec class (a subclass of the spec may have its own)"
            )
        return factory

    return register


def create_operator(spec: OperatorSpec, ctx: SubtaskContext) -> StreamOperator:
    """The operator instance that runs ``spec`` in the subtask of ``ctx``, made by the factory
    registered for the spec's class or, failing that, for its nearest base class.

    Raises:
        TypeError: No operator is registered for the spec's class or any of its bases.
    """
    for spec_type in type(spec).__mro__:
        factory = _factories.get(spec_type)
        if factory is not None:
            return factory(spec, ctx)
    raise TypeError(
        f"no operator is registered for the operator spec {_name(type(spec))}: register one with "
        f"@operator_for({type(spec).__name__}) (lockgate.actors._registry) on a factory of its operator, "
        "in a module imported before the job is built"
    )


def _name(spec_type: type) -> str:
    return f"{spec_type.__module__}.{spec_type.__qualname__}"
