"""``python -m lockgate``: the ``lockgate`` command line (see :mod:`lockgate.cli`)."""

from lockgate.cli import main

if __name__ == "__main__":
    main()
