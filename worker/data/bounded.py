"""Reading one data file with bounded memory and work: raw, or gzip decompressed as a stream.

:class:`BoundedFile` wraps an open descriptor. Before anything is decompressed it checks the
size on disk against the caps (:mod:`.limits`) and the gzip header (magic, method, flags).
Reads return decompressed bytes in slices of at most :data:`STEP`, each asked of zlib with a
``max_length``: a decompression bomb produces no more output than the caller asks for, so the
caller — who knows from the file's own header how many bytes to expect — reads exactly that,
then :meth:`BoundedFile.expect_end` reads one byte more and fails if there is one.  Every
error is a DataError naming the file (``dataset.path: <file>: what is wrong``).
"""
from __future__ import annotations

import os
import zlib

from .base import DataError
from .limits import Limits, format_size

STEP = 1 << 20      # decompressed bytes per zlib call
CHUNK = 1 << 16     # compressed bytes per read
_GZIP_MAGIC = b"\x1f\x8b"


class BoundedFile:
    """A data file opened at descriptor ``fd`` (owned: closed by :meth:`close`).

    ``cap``: the most bytes it may hold after decompression (default ``limits.max_bytes``);
    ``gzip=False`` reads the bytes as they are (text), without looking for gzip."""

    def __init__(self, fd: int, display: str, limits: Limits, *, cap: int | None = None,
                 role: str = "dataset.path", gzip: bool = True):
        self.fd, self.display, self.limits = fd, display, limits
        self.prefix = f"{role}: {display}"
        self.cap = limits.max_bytes if cap is None else cap
        self.consumed = 0      # bytes read from the file
        self.produced = 0      # bytes handed out (decompressed)
        self._pending = b""    # compressed input zlib has not taken yet
        self._done = False
        try:
            self._open(gzip)
        except BaseException:
            self.close()
            raise

    def _open(self, gzip: bool) -> None:
        """Check the size on disk and the gzip header, before anything is decompressed."""
        fd, display, limits = self.fd, self.display, self.limits
        size = os.fstat(fd).st_size
        head = os.pread(fd, 10, 0)
        self.compressed = gzip and head[:2] == _GZIP_MAGIC
        if self.compressed:
            if size > limits.max_compressed:
                raise self.error(f"{format_size(size)} on disk, over the {format_size(limits.max_compressed)} "
                                 f"cap on compressed files")
            self._check_gzip_header(head)
            self._inflate = zlib.decompressobj(16 + zlib.MAX_WBITS)
        else:
            if gzip and display.endswith(".gz"):
                raise self.error("named .gz but not a gzip file; replace it with a fresh copy")
            if size > self.cap:
                raise self.error(f"{format_size(size)}, over the {format_size(self.cap)} cap")
        self.size_on_disk = size

    # ----- errors -------------------------------------------------------------------------
    def error(self, what: str) -> DataError:
        return DataError(f"{self.prefix}: {what}")

    def _corrupt(self, detail: str) -> DataError:
        return self.error(f"a truncated or corrupt gzip file ({detail}); replace it with a fresh copy")

    def _check_gzip_header(self, head: bytes) -> None:
        if len(head) < 10:
            raise self._corrupt("shorter than a gzip header")
        if head[2] != 8:
            raise self._corrupt(f"compression method {head[2]}, only deflate (8) exists")
        if head[3] & 0xE0:
            raise self._corrupt(f"reserved header flags 0x{head[3]:02x} set")

    # ----- reading ------------------------------------------------------------------------
    def _read_raw(self, n: int) -> bytes:
        data = os.read(self.fd, n)
        self.consumed += len(data)
        if self.compressed and self.consumed > self.limits.max_compressed:  # the file grew meanwhile
            raise self.error(f"grew past the {format_size(self.limits.max_compressed)} cap on compressed files")
        return data

    def read(self, n: int) -> bytes:
        """Up to ``n`` (≤ :data:`STEP`) decompressed bytes; fewer only at the end of the data."""
        n = min(n, STEP)
        if n <= 0 or self._done:
            return b""
        if not self.compressed:
            out = bytearray()
            while len(out) < n:
                data = self._read_raw(n - len(out))
                if not data:
                    self._done = True
                    break
                out += data
            return self._count(bytes(out))
        out = bytearray()
        while len(out) < n and not self._done:
            if self._inflate.eof:
                self._next_member()
                continue
            data = self._pending or self._read_raw(CHUNK)
            try:
                piece = self._inflate.decompress(data, n - len(out))  # b"": what zlib still holds
            except zlib.error as exc:
                raise self._corrupt(str(exc)) from None
            if not data and not piece and not self._inflate.eof:
                raise self._corrupt("the file ends inside the compressed stream")
            self._pending = self._inflate.unconsumed_tail
            out += piece
        return self._count(bytes(out))

    def _next_member(self) -> None:
        """After one gzip member: the end of the file, another member, or garbage."""
        rest = self._inflate.unused_data or self._pending
        self._pending = b""
        if not rest:
            rest = self._read_raw(CHUNK)
        if not rest:
            self._done = True
            return
        if rest[:2] != _GZIP_MAGIC:  # as Python's gzip module: only another member may follow
            raise self._corrupt("data after the end of the gzip stream")
        self._inflate = zlib.decompressobj(16 + zlib.MAX_WBITS)
        self._pending = rest

    def _count(self, data: bytes) -> bytes:
        self.produced += len(data)
        if self.produced > self.cap:
            raise self.error(f"more than the {format_size(self.cap)} cap")
        return data

    def read_exact(self, n: int, what: str) -> bytes:
        """Exactly ``n`` bytes (small: a header), else 'truncated' naming ``what``."""
        out = bytearray()
        while len(out) < n:
            piece = self.read(n - len(out))
            if not piece:
                raise self.error(f"truncated: the file ends inside its {what} ({len(out)} of {n} bytes); "
                                 f"replace it with a fresh copy")
            out += piece
        return bytes(out)

    def readinto(self, view: memoryview) -> int:
        """Fill ``view`` (bytes) as far as the data goes; returns the count."""
        pos = 0
        if not self.compressed:  # straight into the caller's buffer
            while pos < len(view) and not self._done:
                got = os.readv(self.fd, [view[pos:]])
                if not got:
                    self._done = True
                self.consumed += got
                pos += got
            self.produced += pos
            if self.produced > self.cap:
                raise self.error(f"more than the {format_size(self.cap)} cap")
            return pos
        while pos < len(view):
            piece = self.read(len(view) - pos)
            if not piece:
                break
            view[pos:pos + len(piece)] = piece
            pos += len(piece)
        return pos

    def expect_end(self, promised: str) -> None:
        """The data must end here (for gzip: with a valid CRC and length trailer)."""
        if self.read(1):
            raise self.error(f"more data than {promised}; the file is corrupt or not what it claims, "
                             f"replace it")

    def read_all(self, cap: int, what: str) -> bytes:
        """Everything, at most ``cap`` bytes (more: an error naming ``what``'s cap)."""
        out = bytearray()
        while True:
            piece = self.read(min(STEP, cap + 1 - len(out)))
            if not piece:
                return bytes(out)
            out += piece
            if len(out) > cap:
                raise self.error(f"more than the {format_size(cap)} cap on {what}")

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def __enter__(self) -> "BoundedFile":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
