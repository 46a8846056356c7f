"""How every storage with places (directories, or object-name prefixes) lays checkpoints out under its root.

Layout under the root of a file or object storage::

    <root>/chk-<id>/<name>         one blob per state blob, named as the blob; <id> in decimal
    <root>/chk-<id>/_metadata      written last: the checkpoint is complete exactly when it exists
    <root>/savepoint-<id>/...      savepoints, laid out the same way (the storage ``savepoints()`` gives)
    <root>/shared/<name>           blobs that several checkpoints reference (incremental checkpoints)
"""

from __future__ import annotations

import re
from typing import Final

from lockgate._errors import ConfigurationError

#: The directory of the blobs that several checkpoints share.
SHARED_DIRECTORY: Final = "shared"

#: The directory name prefix of checkpoints, and of savepoints (which a savepoint storage writes).
CHECKPOINT_PREFIX: Final = "chk-"
SAVEPOINT_PREFIX: Final = "savepoint-"

#: The name of one checkpoint's or savepoint's directory: its prefix (group 1) and its id (group 2).
SNAPSHOT_DIRECTORY: Final = re.compile(r"(chk-|savepoint-)(\d+)")


def check_prefix(prefix: object) -> str:
    """``prefix`` if it is one of the two a storage may write under; a clear error otherwise."""
    if prefix not in (CHECKPOINT_PREFIX, SAVEPOINT_PREFIX):
        raise ConfigurationError(
            f"prefix must be {CHECKPOINT_PREFIX!r} or {SAVEPOINT_PREFIX!r}, got {prefix!r}"
        )
    return str(prefix)


def directory_pattern(prefix: str) -> re.Pattern[str]:
    """The names of the directories of checkpoints written with ``prefix``: the id is group 1."""
    return re.compile(re.escape(prefix) + r"(0|[1-9][0-9]*)")
