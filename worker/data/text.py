"""Character-level text loader: any UTF-8 file, or the King James Bible via Debian.

Text is tokenised by character (the vocabulary is the sorted set of characters) and cut
into non-overlapping ``seq_len + 1`` chunks for next-character prediction; the last part
of the corpus is the test split.  ``path="bible-kjv"`` runs Debian's ``bible`` program
(package ``bible-kjv``) once and caches the plain text in :func:`cache_dir`.
"""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import numpy as np

from .base import DataError, Dataset
from .bounded import BoundedFile
from .roots import BIBLE_NAME, DataPolicy

BIBLE_PROGRAM = "/usr/bin/bible"
BIBLE_RANGE = "Gen1:1-Rev22:21"


def cache_dir() -> Path:
    """Where derived data is cached: ``$ESGD_CACHE_DIR``, else ``$XDG_CACHE_HOME/esgd``, else
    ``~/.cache/esgd``. The tests point it at a temporary folder, so that a cache left by an
    earlier run can never stand in for a package that is missing."""
    if os.environ.get("ESGD_CACHE_DIR"):
        return Path(os.environ["ESGD_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "esgd"


def _read_text(file: Path, policy: DataPolicy) -> bytes:
    """The bytes of the resolved text ``file``, at most ``policy.limits.max_text`` of them, read
    in bounded chunks (over the cap: an error before anything is read where the size says so)."""
    cap = policy.limits.max_text
    with BoundedFile(policy.open_file(file, "dataset.path"), str(file), policy.limits, cap=cap, gzip=False) as src:
        return src.read_all(cap, "text files")


def _bible_text(policy: DataPolicy | None = None) -> str:
    """The King James Bible as plain text, one verse per line, via Debian's ``bible``.

    ``bible -f`` turns pretty-printing *off*, giving ``Ge1:1 In the beginning...`` lines;
    the verse references are stripped.  The result is cached in :func:`cache_dir`.
    """
    cache = cache_dir() / "bible-kjv.txt"
    if cache.is_file():  # our own file: read under the size cap, wherever the cache is
        unconfined = DataPolicy(limits=(policy or DataPolicy()).limits)
        return _decode_text(_read_text(Path(os.path.realpath(cache)), unconfined), cache)
    if not os.access(BIBLE_PROGRAM, os.X_OK):
        raise DataError(f"text path 'bible-kjv' needs {BIBLE_PROGRAM}: run `apt-get install bible-kjv`")
    try:
        proc = subprocess.run([BIBLE_PROGRAM, "-f", BIBLE_RANGE], stdin=subprocess.DEVNULL,
                              capture_output=True, timeout=120, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise DataError(f"running {BIBLE_PROGRAM} failed ({exc}); reinstall with "
                        f"`apt-get install --reinstall bible-kjv bible-kjv-text`") from exc
    raw = re.sub(rb"(?m)^[1-3]?[A-Za-z]+\d+:\d+ ", b"", proc.stdout)
    if proc.returncode != 0 or len(raw) < 1_000_000:
        raise DataError(f"{BIBLE_PROGRAM} -f {BIBLE_RANGE} returned {proc.returncode} with "
                        f"{len(raw)} bytes ({proc.stderr[:200]!r}); reinstall with "
                        f"`apt-get install --reinstall bible-kjv bible-kjv-text`")
    try:
        cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache.with_suffix(f".tmp{os.getpid()}")
        tmp.write_bytes(raw)
        os.replace(tmp, cache)
    except OSError:
        pass  # caching is only an optimisation
    return raw.decode("ascii", errors="replace")


def _decode_text(raw: bytes, path: Path) -> str:
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise DataError(f"{path} is not valid UTF-8 (byte offset {exc.start}: {exc.reason}); "
                        f"convert it, e.g. `iconv -f latin1 -t utf-8`") from exc


def _text_dataset(name: str, text: str, seq_len: int, test_fraction: float = 0.1,
                  source: str = "", vocab: str | None = None) -> Dataset:
    """Tokenise ``text`` by character and cut train/test into ``seq_len + 1`` chunks."""
    if seq_len < 1:
        raise DataError(f"seq_len must be >= 1, got {seq_len}")
    where = source or name
    window = seq_len + 1
    split = int(round(len(text) * (1.0 - test_fraction)))
    need = int(np.ceil(window / min(test_fraction, 1 - test_fraction)))
    if len(text) - split < window or split < window:
        raise DataError(f"{where} has {len(text)} characters, too short for seq_len={seq_len} "
                        f"(need at least {need}); use a longer file or a smaller seq_len")
    if vocab is None:
        vocab = "".join(sorted(set(text)))
    codes = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)
    vocab_codes = np.frombuffer(vocab.encode("utf-32-le"), dtype=np.uint32)
    dtype = np.uint8 if len(vocab) <= 256 else np.int16 if len(vocab) <= 32767 else np.int32
    ids = np.searchsorted(vocab_codes, codes).astype(dtype)

    def chunks(part: np.ndarray) -> np.ndarray:
        n = len(part) // window
        return np.ascontiguousarray(part[: n * window].reshape(n, window))

    train_x, test_x = chunks(ids[:split]), chunks(ids[split:])
    return Dataset(name=name, kind="text", train_x=train_x, train_y=np.zeros(len(train_x), np.int64),
                   test_x=test_x, test_y=np.zeros(len(test_x), np.int64), num_classes=len(vocab),
                   input_shape=(seq_len,), mean=(), std=(), vocab=vocab)


def _load_text(path: str | None, seq_len: int, policy: DataPolicy | None = None) -> Dataset:
    """Character dataset from a UTF-8 file; the last 10% of characters is the test split.

    ``path="bible-kjv"`` is a name, not a file: the King James Bible from Debian (a file of
    that name is ``./bible-kjv``). Any other path is located (and, with roots, confined) by
    ``policy``."""
    policy = policy or DataPolicy()
    if path is None:
        raise DataError("text needs path=<a UTF-8 text file> (or path='bible-kjv' for the King "
                        "James Bible from Debian package bible-kjv)")
    if path == BIBLE_NAME:
        return _text_dataset("bible-kjv", _bible_text(policy), seq_len, source="bible-kjv")
    file = policy.locate(path)
    if not file.is_file():
        if os.path.lexists(file):
            os.close(policy.open_file(file, "dataset.path"))  # says why: not a regular file, unreadable
        raise DataError(f"text file {file} does not exist or is not a regular file; pass path= "
                        f"a UTF-8 text file (or 'bible-kjv' after `apt-get install bible-kjv`)")
    raw = _read_text(file, policy)
    if not raw.strip():
        raise DataError(f"text file {file} is empty; use a file with some text")
    return _text_dataset("text", _decode_text(raw, file), seq_len, source=str(file))
