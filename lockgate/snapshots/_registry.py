"""From a URL to a checkpoint storage: a registry of URL schemes, and :func:`storage_for`."""

from __future__ import annotations

import os
from collections.abc import Callable

from lockgate._errors import ConfigurationError
from lockgate.snapshots._file import FileCheckpointStorage
from lockgate.snapshots._fsspec import FSSPEC_SCHEMES, FsspecCheckpointStorage, fsspec_knows
from lockgate.snapshots._storage import CheckpointStorage
from lockgate.snapshots._urls import unsupported_scheme, url_scheme

#: A storage class or factory that makes a storage from a URL of its scheme.
StorageFactory = Callable[[str], CheckpointStorage]

_FACTORIES: dict[str, StorageFactory] = {"file": FileCheckpointStorage.from_url}


def register_checkpoint_storage(scheme: str, factory: StorageFactory) -> None:
    """Make URLs of ``scheme`` (``"s3"`` for ``s3://...``) give ``factory(url)``; replaces a registration,
    and takes precedence over fsspec for a scheme fsspec knows."""
    if not isinstance(scheme, str) or url_scheme(f"{scheme}://x") != scheme.lower():
        raise ConfigurationError(
            f"a URL scheme is a letter, then letters, digits, '+', '-' or '.', got {scheme!r}"
        )
    if not callable(factory):
        raise ConfigurationError(
            f"a checkpoint storage factory takes a URL and returns a storage, got {factory!r}"
        )
    _FACTORIES[scheme.lower()] = factory


def supported_schemes() -> list[str]:
    """The URL schemes a storage is registered for, sorted. URLs of the other schemes fsspec knows
    (``s3://``, ``gs://``, ``memory://``, ...) give a :class:`FsspecCheckpointStorage` besides."""
    return sorted(_FACTORIES)


def storage_for(storage_or_url: CheckpointStorage | str | os.PathLike[str]) -> CheckpointStorage:
    """The checkpoint storage that ``storage_or_url`` names.

    A :class:`CheckpointStorage` is returned as it is; a URL string gives the storage registered for its
    scheme (``file:///data/ckpts`` gives a :class:`FileCheckpointStorage`, ``s3://bucket/ckpts`` and any
    other URL fsspec knows a :class:`FsspecCheckpointStorage`); a plain path, string or
    :class:`os.PathLike`, gives a :class:`FileCheckpointStorage` of that directory.

    Raises:
        ConfigurationError: An unsupported URL scheme (the message lists the supported ones), a bad URL,
            or something that is neither a storage nor a URL.
    """
    if isinstance(storage_or_url, CheckpointStorage):
        return storage_or_url
    if isinstance(storage_or_url, os.PathLike):
        return FileCheckpointStorage(storage_or_url)
    if not isinstance(storage_or_url, str):
        raise ConfigurationError(
            "a checkpoint storage is a CheckpointStorage such as lg.MemoryCheckpointStorage() or "
            "lg.FileCheckpointStorage(url), or a URL such as 'file:///data/checkpoints', "
            f"got {storage_or_url!r}"
        )
    scheme = url_scheme(storage_or_url)
    if scheme is None:
        return FileCheckpointStorage(storage_or_url)
    factory = _FACTORIES.get(scheme)
    if factory is None and (scheme in FSSPEC_SCHEMES or fsspec_knows(scheme)):
        # Object storage and the other file systems of fsspec, imported only now: a missing package
        # gives an error that says what to install.
        factory = FsspecCheckpointStorage.from_url
    if factory is None:
        raise unsupported_scheme(storage_or_url, scheme, _FACTORIES, "lockgate")
    storage = factory(storage_or_url)
    if not isinstance(storage, CheckpointStorage):
        raise ConfigurationError(
            f"the storage registered for {scheme}:// URLs returned {storage!r}, not a CheckpointStorage"
        )
    return storage
