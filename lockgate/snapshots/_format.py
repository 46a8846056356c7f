"""The frame every checkpoint file is stored in: a 20-byte header, then the payload.

Every blob a checkpoint storage keeps (each state file and ``_metadata``), on disk or in memory, is
stored framed, so damage is detected before a single payload byte is used::

    offset  size  field (integers unsigned, big endian)
    0       4     magic: b"LGCK"
    4       2     format version: 1
    6       2     flags: 0, or 1 (SIGNED): a signature follows the payload
    8       8     payload length in bytes
    16      4     CRC-32 of the payload (zlib.crc32, the IEEE 802.3 polynomial)
    20      n     payload: exactly ``length`` bytes
    20+n    32    signed only: HMAC-SHA256 of the payload and then the header, with the signing key

A reader refuses any other flags, and anything after the payload (after the signature, if signed).
A reader checks all of it: the magic, the version, the flags, that the file holds exactly ``length``
payload bytes (a truncated or extended file is refused) and the CRC. CRC-32 detects every error burst
up to 32 bits long, so any single damaged byte anywhere in a file is always detected; larger random
damage escapes it with probability 2**-32. The checksum guards against accidents (a torn write, a bad
disk, a truncated copy), not against tampering: that is what a signing key is for. A storage given a
signing key signs every file it writes and refuses, before returning a byte of it, a file that is not
signed or whose signature does not match (checkpoints hold pickles, and loading a pickle runs code).
"""

from __future__ import annotations

import hashlib
import hmac
import struct
import zlib
from typing import Final

from lockgate._errors import CorruptCheckpointError

MAGIC: Final = b"LGCK"
VERSION: Final = 1
HEADER: Final = struct.Struct(">4sHHQI")
HEADER_SIZE: Final = HEADER.size  # 20
#: Header flag: an HMAC-SHA256 signature of ``SIGNATURE_SIZE`` bytes follows the payload.
SIGNED: Final = 1
SIGNATURE_SIZE: Final = 32

Bytes = bytes | bytearray | memoryview


def byte_view(data: Bytes) -> memoryview:
    """``data`` as a flat view of bytes, whatever the buffer's item format and shape."""
    view = memoryview(data)
    if not view.c_contiguous:
        return memoryview(view.tobytes())
    return view if view.format == "B" and view.ndim == 1 else view.cast("B")


def crc32(data: Bytes, running: int = 0) -> int:
    """The CRC-32 of ``data``, continuing from ``running`` (the CRC of what came before)."""
    return zlib.crc32(data, running) & 0xFFFFFFFF


def encode_header(length: int, checksum: int, signed: bool = False) -> bytes:
    """The header of a payload of ``length`` bytes whose CRC-32 is ``checksum``."""
    return HEADER.pack(MAGIC, VERSION, SIGNED if signed else 0, length, checksum)


class Signer:
    """The signature of one blob, fed its payload piece by piece, then its header."""

    def __init__(self, key: bytes) -> None:
        self._mac = hmac.new(key, digestmod=hashlib.sha256)

    def update(self, piece: Bytes) -> None:
        self._mac.update(piece)

    def signature(self, header: bytes) -> bytes:
        self._mac.update(header)
        return self._mac.digest()


class FrameBuilder:
    """The header and signature of a payload that is written piece by piece, in order.

    Feed it every piece (:meth:`update`); then :meth:`finish` gives the header that goes before the
    payload and the signature that goes after it (empty without a key).
    """

    def __init__(self, key: bytes | None = None) -> None:
        self.size = 0
        self.checksum = 0
        self._signer = None if key is None else Signer(key)

    def update(self, piece: Bytes) -> None:
        view = byte_view(piece)
        self.checksum = crc32(view, self.checksum)
        if self._signer is not None:
            self._signer.update(view)
        self.size += view.nbytes

    def finish(self) -> tuple[bytes, bytes]:
        """The header and the signature (``b""`` unsigned) of the payload fed so far."""
        header = encode_header(self.size, self.checksum, self._signer is not None)
        return header, b"" if self._signer is None else self._signer.signature(header)


def frame(payload: Bytes, key: bytes | None = None) -> tuple[bytes, int]:
    """``payload`` framed (and signed with ``key``, if given), and its CRC-32."""
    view = byte_view(payload)
    checksum = crc32(view)
    header = encode_header(view.nbytes, checksum, key is not None)
    if key is None:
        return header + view, checksum
    signer = Signer(key)
    signer.update(view)
    return header + view + signer.signature(header), checksum


def unframe(
    data: Bytes,
    path: str,
    *,
    expected_size: int | None = None,
    expected_checksum: int | None = None,
    key: bytes | None = None,
) -> bytes:
    """The payload of a framed blob, after checking everything about it.

    Args:
        data: The whole stored blob, header included.
        path: The blob's path or reference, named by the error.
        expected_size: The payload size the blob's handle records, if there is a handle.
        expected_checksum: The CRC-32 the blob's handle records, if there is a handle.
        key: The signing key: the blob must be signed with it.

    Raises:
        CorruptCheckpointError: Anything does not match; the error names ``path`` and says what.
    """
    view = memoryview(data)
    header = view[:HEADER_SIZE]
    stored, signed = check_header(header, len(view), path, expected_size, expected_checksum, key)
    end = len(view) - (SIGNATURE_SIZE if signed else 0)
    payload = view[HEADER_SIZE:end]
    if key is not None:
        signer = Signer(key)
        signer.update(payload)
        check_signature(signer.signature(bytes(header)), view[end:], path)
    check_checksum(crc32(payload), stored, path)
    return bytes(payload)


def check_signature(computed: bytes, stored: Bytes, path: str) -> None:
    """Refuse a blob whose signature is not the one its key gives (compared in constant time)."""
    if not hmac.compare_digest(computed, bytes(stored)):
        raise CorruptCheckpointError(
            path,
            "its signature does not match the signing key: it was changed since it was written, or "
            "signed with another key; lockgate reads nothing of it",
        )


def check_header(
    header: Bytes,
    total: int,
    path: str,
    expected_size: int | None,
    expected_checksum: int | None,
    key: bytes | None = None,
) -> tuple[int, bool]:
    """Check a blob's header against the blob's ``total`` size, its handle and the signing key (a
    blob must be signed when there is one); the CRC-32 it records, and whether it is signed.

    Raises:
        CorruptCheckpointError: Anything does not match; the error names ``path`` and says what.
    """
    view = byte_view(header)
    if total < HEADER_SIZE or view.nbytes < HEADER_SIZE:
        raise CorruptCheckpointError(
            path, f"truncated: {total} bytes, shorter than the {HEADER_SIZE}-byte header"
        )
    magic, version, flags, length, stored = HEADER.unpack_from(view)
    if magic != MAGIC:
        raise CorruptCheckpointError(path, f"not a lockgate checkpoint file (magic {bytes(magic)!r})")
    if version != VERSION:
        raise CorruptCheckpointError(
            path, f"unknown format version {version} (this lockgate reads {VERSION}): damaged, or newer"
        )
    if flags & ~SIGNED:
        raise CorruptCheckpointError(path, f"unknown header flags {flags:#06x}")
    signed = bool(flags & SIGNED)
    if key is not None and not signed:
        raise CorruptCheckpointError(
            path,
            "it is not signed, but a signing key is set: it was written without the key, or its "
            "signature was stripped; lockgate reads nothing of it",
        )
    actual = total - HEADER_SIZE - (SIGNATURE_SIZE if signed else 0)
    if actual != length:
        what = "truncated" if actual < length else "extended"
        raise CorruptCheckpointError(
            path, f"{what}: the header records {length} payload bytes, the file holds {actual}"
        )
    if expected_size is not None and length != expected_size:
        raise CorruptCheckpointError(
            path, f"holds {length} payload bytes, but its handle records {expected_size}: another file?"
        )
    if expected_checksum is not None and stored != expected_checksum:
        raise CorruptCheckpointError(
            path,
            f"its header records CRC-32 {stored:#010x}, but its handle records {expected_checksum:#010x}: "
            "another file?",
        )
    return int(stored), signed


def check_checksum(computed: int, stored: int, path: str) -> None:
    """Refuse a payload whose CRC-32 is not the one its header records."""
    if computed != stored:
        raise CorruptCheckpointError(
            path,
            f"checksum mismatch: the payload's CRC-32 is {computed:#010x}, the header records {stored:#010x}",
        )
