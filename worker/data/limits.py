"""Size caps on the data files the loaders read.

A data file comes from outside the project (in the service: from a path a client names), so
nothing in it may make a loader allocate or decompress without bound.  Three caps, each a
module default that an environment variable or a :class:`Limits` value overrides:

=====================  ==================================  =================================
cap                    default                             environment variable
=====================  ==================================  =================================
``max_bytes``          2 GiB, one file after decompression ``ESGD_DATA_MAX_BYTES``
``max_compressed``     1 GiB, one gzip file on disk        ``ESGD_DATA_MAX_COMPRESSED_BYTES``
``max_text``           256 MiB, one text corpus            ``ESGD_DATA_MAX_TEXT_BYTES``
=====================  ==================================  =================================

Values are byte counts, optionally with a binary suffix (``512M``, ``2G``, ``64KiB``).
A text corpus has its own, smaller cap: a character costs about 13 bytes of memory while it is
tokenised (its decoded string, UTF-32 codes and token ids), an image byte one.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass

KiB, MiB, GiB = 1 << 10, 1 << 20, 1 << 30

MAX_BYTES = 2 * GiB
MAX_COMPRESSED_BYTES = 1 * GiB
MAX_TEXT_BYTES = 256 * MiB

ENV_MAX_BYTES = "ESGD_DATA_MAX_BYTES"
ENV_MAX_COMPRESSED_BYTES = "ESGD_DATA_MAX_COMPRESSED_BYTES"
ENV_MAX_TEXT_BYTES = "ESGD_DATA_MAX_TEXT_BYTES"

_UNITS = {"": 1, "b": 1, "k": KiB, "kb": KiB, "kib": KiB, "m": MiB, "mb": MiB, "mib": MiB,
          "g": GiB, "gb": GiB, "gib": GiB, "t": 1 << 40, "tb": 1 << 40, "tib": 1 << 40}


def parse_size(text: str | int, what: str = "size") -> int:
    """``"2G"`` -> 2147483648; a positive byte count with an optional binary suffix.
    Raises ValueError naming ``what``."""
    if isinstance(text, int) and not isinstance(text, bool):
        value = text
    else:
        m = re.fullmatch(r"\s*(\d+)\s*([a-zA-Z]*)\s*", str(text))
        if not m or m.group(2).lower() not in _UNITS:
            raise ValueError(f"{what}: expected a byte count such as 2147483648, 512M or 2G, got {text!r}")
        value = int(m.group(1)) * _UNITS[m.group(2).lower()]
    if value < 1:
        raise ValueError(f"{what}: must be at least 1 byte, got {text!r}")
    return value


def format_size(n: int) -> str:
    """A byte count for messages: ``47 MB`` style (decimal units), exact below 1000 bytes;
    whole binary units print as such (``2 GiB``), so a configured cap reads as it was set."""
    for unit, size in (("TiB", 1 << 40), ("GiB", GiB), ("MiB", MiB), ("KiB", KiB)):
        if n >= size and n % size == 0:
            return f"{n // size} {unit}"
    if n >= 10**15:
        return f"{float(n):.3g} bytes"
    for unit, size in (("TB", 10**12), ("GB", 10**9), ("MB", 10**6), ("kB", 10**3)):
        if n >= size:
            return f"{n / size:.3g} {unit}" if n < 1000 * size else f"{n // size} {unit}"
    return f"{n} bytes"


@dataclass(frozen=True)
class Limits:
    """The caps one load runs under (see the module docstring)."""

    max_bytes: int = MAX_BYTES
    max_compressed: int = MAX_COMPRESSED_BYTES
    max_text: int = MAX_TEXT_BYTES

    def __post_init__(self) -> None:
        for name in ("max_bytes", "max_compressed", "max_text"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"Limits.{name}: must be a positive number of bytes, got {value!r}")

    @classmethod
    def from_env(cls, environ=None) -> "Limits":
        """The defaults, overridden by ``ESGD_DATA_MAX_*`` where set (a bad value is an error,
        never silently the default)."""
        env = os.environ if environ is None else environ
        values = {}
        for field, var in (("max_bytes", ENV_MAX_BYTES), ("max_compressed", ENV_MAX_COMPRESSED_BYTES),
                           ("max_text", ENV_MAX_TEXT_BYTES)):
            if env.get(var, "").strip():
                values[field] = parse_size(env[var], var)
        return cls(**values)

    def env(self) -> dict[str, str]:
        """These caps as environment variables (for processes that load data elsewhere)."""
        return {ENV_MAX_BYTES: str(self.max_bytes), ENV_MAX_COMPRESSED_BYTES: str(self.max_compressed),
                ENV_MAX_TEXT_BYTES: str(self.max_text)}
