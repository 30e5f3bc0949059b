"""A response body's Content-Encoding undone as aiohttp undoes it, for the lean HTTP path.

The lean path leaves a compressed body to aiohttp by sending the request again through it,
which a request that is not idempotent (POST, PATCH) must never be: its body is decoded here
instead. This follows aiohttp's `http_parser.DeflateBuffer` (which aiohttp's parser wraps
around a body whose Content-Encoding is gzip, deflate, br or zstd), with aiohttp's own
decompressors: a deflate body without its zlib header is read raw, a truncated deflate stream
is an error, and an undecodable body or a coding whose library is missing fails with aiohttp's
words. tests/integration/test_api_lean.py holds the outcomes to aiohttp's.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp.compression_utils import (
    HAS_BROTLI,
    HAS_ZSTD,
    BrotliDecompressor,
    ZLibDecompressor,
    ZSTDDecompressor,
)

if TYPE_CHECKING:
    from aiohttp.compression_utils import DecompressionBaseHandler

_ZLIB_METHOD_DEFLATE = 8  # RFC 1950: the low 4 bits of a zlib stream's first byte
_MAX_WALKS = 1000  # each makes output or ends: a bound, never reached


class DecodingError(Exception):
    """The body cannot be decoded; the message is aiohttp's. `at_end`: found at the body's
    end, or before it began (where aiohttp's parser fails, not just the body's reading)."""

    def __init__(self, message: str, *, at_end: bool = True) -> None:
        super().__init__(message)
        self.at_end = at_end


class Decoder:
    """One body's decoding; `coding` is one of gzip, deflate, br, zstd (lower case)."""

    def __init__(self, coding: str) -> None:
        """Raises DecodingError for br or zstd without their library, as aiohttp does."""
        if coding == "br" and not HAS_BROTLI:
            message = "Can not decode content-encoding: brotli (br). Please install `Brotli`"
            raise DecodingError(message)
        if coding == "zstd" and not HAS_ZSTD:
            message = (
                "Can not decode content-encoding: zstandard (zstd). Please install `backports.zstd`"
            )
            raise DecodingError(message)
        self.coding = coding

    def decode(self, body: bytes, limit: int) -> bytes:
        """`body` decoded, at most `limit` + 1 bytes of it (more means: past the limit)."""
        if not body:
            return b""
        decompressor = self._decompressor(body)
        decoded = bytearray()
        data = body
        # A walk capped at `limit` + 1 bytes may stop before the input is used up (between
        # concatenated members, say): it goes on from where it stopped, as aiohttp's does.
        for _ in range(_MAX_WALKS):
            try:
                decoded += decompressor.decompress_sync(data, max_length=limit + 1 - len(decoded))
            except Exception as exc:
                message = f"Can not decode content-encoding: {self.coding}"
                raise DecodingError(message, at_end=False) from exc
            data = b""
            if len(decoded) > limit or not decompressor.data_available:
                break
        # a deflate stream that ended early is an error (a gzip one is not), in aiohttp's words
        if (
            self.coding == "deflate"
            and isinstance(decompressor, ZLibDecompressor)
            and len(decoded) <= limit
            and not decompressor.eof
        ):
            raise DecodingError("deflate")
        return bytes(decoded)

    def _decompressor(self, body: bytes) -> DecompressionBaseHandler:
        if self.coding == "br":
            return BrotliDecompressor()
        if self.coding == "zstd":
            return ZSTDDecompressor()
        # "deflate" is meant to be zlib-wrapped; servers that send it raw are read raw
        raw = self.coding == "deflate" and body[0] & 0xF != _ZLIB_METHOD_DEFLATE
        return ZLibDecompressor(encoding=self.coding, suppress_deflate_header=raw)
