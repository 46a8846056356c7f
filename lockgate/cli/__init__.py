"""The ``lockgate`` command line: ``lockgate savepoint inspect | dump | verify`` (also
``python -m lockgate``).

It reads savepoints and retained checkpoints offline through :mod:`lockgate.savepoint` and the
checked reads of :mod:`lockgate.snapshots`; nothing in the package imports it. :func:`main` is the
click group, the console script's entry point.
"""

from lockgate.cli._main import main

__all__ = ["main"]
