"""Telling URLs from plain paths, and the error for a URL scheme no storage handles."""

from __future__ import annotations

from collections.abc import Iterable
from urllib.parse import urlsplit

from lockgate._errors import ConfigurationError


def url_scheme(text: str) -> str | None:
    """The scheme of ``text`` in lower case, or None if it is a plain path.

    A URL has a scheme of two or more characters (``file:``, ``s3:``), so a Windows drive letter
    (``C:``) still reads as a path. A relative path whose first part holds a ``:`` reads as a URL;
    write it as ``./name:with:colons``.
    """
    scheme = urlsplit(text).scheme
    return scheme if len(scheme) >= 2 else None


def unsupported_scheme(url: str, scheme: str, supported: Iterable[str], who: str) -> ConfigurationError:
    """The error for ``url``, whose ``scheme`` none of ``who``'s storages handles."""
    listed = ", ".join(f"{name}://" for name in sorted(supported))
    return ConfigurationError(
        f"{who} cannot use {url!r}: the URL scheme {scheme!r} is not supported; "
        f"supported schemes: {listed} (e.g. 'file:///data/checkpoints'), or give a plain path "
        "(a relative path with a ':' in its first part needs a leading './')"
    )
