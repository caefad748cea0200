"""Where the loaders may read: the data roots, and opening files inside them without races.

In the job service ``dataset.path`` comes from a client, so the server confines it to *data
roots* that its operator chose (``esgd serve --data-root DIR``, repeatable; by default Debian's
datasets folder ``/usr/share/datasets`` and ``DATA_DIR/datasets``).  The rules:

* :func:`confine` resolves the path's real location (symlinks, ``..``, relative paths) *before*
  checking it, and accepts only a location inside a root (a root itself counts: a directory
  of IDX files may be a root).  A relative path is joined to each root in turn and resolved;
  joins that lead out of the roots are dropped *without looking at what they name*, and of the
  rest the first that exists wins (if none exists, the first of them, and the loader says what
  is missing there).  So whether a path is refused never depends on a file outside the roots.
* Every refusal raises :class:`ConfinementError` with one and the same message for a given set
  of roots: it names ``dataset.path`` and the roots, and nothing about the file — whether it
  exists, is a directory, a FIFO, a symlink or unreadable is never told.
* ``path: bible-kjv`` of dataset ``text`` is a name, not a path: the King James Bible from
  Debian's ``bible-kjv`` package.  A dataset without a path reads its built-in source (the
  Fashion-MNIST package folder, or generated data); neither needs a root.
* Files are opened by their resolved path with ``O_NOFOLLOW`` (a component swapped for a symlink
  after the check makes the open fail instead of being followed) and ``O_NONBLOCK`` (a FIFO
  cannot hang the loader), and the opened descriptor's real path (``/proc/self/fd``) is checked
  again: what is read is what was allowed, even if a directory above it was swapped meanwhile.

Without roots (:attr:`DataPolicy.roots` None: ``esgd run``, benchmarks, tests) paths are
resolved and opened the same way but not confined.  :func:`configure_data_access` is the one
call a server makes: it checks the roots, applies the size caps (:mod:`.limits`) and exports
both as environment variables, so the processes that load data (the job runners of an
embedded Ray, started afterwards) inherit them; :meth:`DataPolicy.env` gives the same
variables for processes started elsewhere.

Roots must not be writable by the clients: a hard link placed inside a root can name any
file its creator could read, and no path check can tell.
"""
from __future__ import annotations

import errno
import os
import stat
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from .base import DataError
from .limits import Limits

SYSTEM_DATA_ROOT = "/usr/share/datasets"   # Debian's datasets folder (dataset-fashion-mnist)
ENV_ROOTS = "ESGD_DATA_ROOTS"              # os.pathsep-separated; set = confinement on
BIBLE_NAME = "bible-kjv"                   # dataset text: the Debian KJV, not a file
MAX_PATH_CHARS = 4096

_OPEN_FLAGS = os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW | os.O_NONBLOCK | getattr(os, "O_NOCTTY", 0)


class ConfinementError(DataError):
    """``dataset.path`` is outside the data roots. The message is the same for every refused
    path (see :func:`refusal_message`)."""


def refusal_message(roots: Sequence[Path]) -> str:
    """The one message of every refusal: names the field and the roots, nothing about the file."""
    listed = ", ".join(str(r) for r in roots) or "none configured"
    return (f"dataset.path: refused: this server reads data only inside its data roots ({listed}); "
            f"name a file or directory under one of them (a relative path is looked up in each root), "
            f"or ask the operator to add a root with `esgd serve --data-root DIR`")


def _real(path: str | os.PathLike) -> Path:
    return Path(os.path.realpath(path))


def _inside(real: Path, roots: Iterable[Path]) -> bool:
    return any(real == r or real.is_relative_to(r) for r in roots)


def normalise_roots(roots: Iterable[str | os.PathLike]) -> tuple[Path, ...]:
    """Absolute real paths of ``roots`` (order kept, duplicates dropped). ``/`` is refused:
    it would expose every file the server can read."""
    out: list[Path] = []
    for root in roots:
        text = os.fspath(root)
        if not text or "\0" in text:
            raise ValueError(f"data root {text!r}: not a path")
        real = _real(os.path.abspath(text))
        if real == Path(real.anchor):
            raise ValueError(f"data root {text!r}: the filesystem root would expose every file; name a folder")
        if real not in out:
            out.append(real)
    return tuple(out)


def default_roots(data_dir: str | os.PathLike) -> tuple[Path, ...]:
    """The roots of ``esgd serve`` without ``--data-root``: Debian's datasets folder and
    ``DATA_DIR/datasets``."""
    return normalise_roots([SYSTEM_DATA_ROOT, Path(data_dir) / "datasets"])


def confine(path: str, roots: Sequence[Path]) -> Path:
    """The real location of ``path`` if it lies inside one of ``roots``; else ConfinementError.

    Resolves before checking (symlinks, ``..``; a relative ``path`` is joined to each root in
    turn and the first that exists is taken). The refusal is identical for every refused path.
    """
    roots = normalise_roots(roots)
    if not isinstance(path, str) or not path or "\0" in path or len(path) > MAX_PATH_CHARS:
        raise ConfinementError(refusal_message(roots))
    candidates = [path] if os.path.isabs(path) else [os.path.join(r, path) for r in roots]
    inside: list[Path] = []
    for candidate in candidates:
        try:
            real = _real(candidate)
        except (OSError, ValueError):
            continue
        if _inside(real, roots):
            inside.append(real)
    if not inside:
        raise ConfinementError(refusal_message(roots))
    return next((real for real in inside if os.path.lexists(real)), inside[0])


def _fd_path(fd: int) -> str | None:
    """Where descriptor ``fd`` really points (Linux ``/proc/self/fd``); None where unknown."""
    try:
        return os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        return None


@dataclass(frozen=True)
class DataPolicy:
    """What one load may read: ``roots`` (None = anywhere) and the size caps."""

    roots: tuple[Path, ...] | None = None
    limits: Limits = field(default_factory=Limits)

    @classmethod
    def from_env(cls, environ=None) -> "DataPolicy":
        """Roots from ``$ESGD_DATA_ROOTS`` (unset or empty: no confinement), caps from
        ``$ESGD_DATA_MAX_*`` (:meth:`Limits.from_env`)."""
        env = os.environ if environ is None else environ
        text = env.get(ENV_ROOTS, "")
        roots = normalise_roots(p for p in text.split(os.pathsep) if p) if text.strip() else None
        return cls(roots=roots, limits=Limits.from_env(env))

    def env(self) -> dict[str, str]:
        """The environment variables that give another process this policy."""
        out = self.limits.env()
        out[ENV_ROOTS] = os.pathsep.join(str(r) for r in self.roots) if self.roots is not None else ""
        return out

    def refusal(self) -> ConfinementError:
        return ConfinementError(refusal_message(self.roots or ()))

    # ----- where a user path leads --------------------------------------------------------
    def locate(self, path: str) -> Path:
        """The real location ``path`` names: confined to the roots when there are roots, else
        resolved against the working directory."""
        if self.roots is not None:
            return confine(path, self.roots)
        if not isinstance(path, str) or not path or "\0" in path:
            raise DataError(f"dataset.path: {path!r} is not a path")
        return _real(path)

    def check(self, name: str, path: str | None) -> Path | None:
        """What a job's ``dataset`` would read, checked at submission: the real location of
        ``path`` (ConfinementError when it is outside the roots), or None for a built-in
        source (no path, or ``bible-kjv`` for dataset ``text``)."""
        if path is None or (name == "text" and path == BIBLE_NAME):
            return None
        return self.locate(path)

    def within(self, real: Path) -> "DataPolicy":
        """This policy with ``real`` as its only root (a built-in source: the loader reads
        its package folder and nothing it links to elsewhere)."""
        return DataPolicy(roots=normalise_roots([real]), limits=self.limits)

    # ----- opening --------------------------------------------------------------------------
    def open(self, real: Path) -> int:
        """Open the already-resolved regular file ``real`` read-only; returns the descriptor.

        ``O_NOFOLLOW`` refuses a final component that became a symlink since it was resolved
        (``O_NONBLOCK``: a FIFO cannot hang the open); the descriptor's real path is then
        checked against the roots again. Raises ConfinementError (outside the roots: the common
        message), DataError (not a regular file, inside the roots or unconfined) or OSError
        (missing, unreadable: the caller words it)."""
        try:
            fd = os.open(real, _OPEN_FLAGS)
        except OSError as exc:
            if self.roots is not None and exc.errno == errno.ELOOP:
                raise self.refusal() from None  # swapped for a symlink since it was checked
            raise
        try:
            if self.roots is not None:
                actual = _fd_path(fd)
                if actual is not None and not _inside(Path(actual), self.roots):
                    raise self.refusal()
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                raise DataError(f"{real} is not a regular file")
            os.set_blocking(fd, True)
        except BaseException:
            os.close(fd)
            raise
        return fd

    def open_file(self, real: Path, role: str) -> int:
        """:meth:`open` for a data file, with OSErrors worded as DataErrors naming ``role``."""
        try:
            return self.open(real)
        except OSError as exc:
            if exc.errno == errno.ENOENT:
                raise DataError(f"{role}: {real} does not exist") from None
            raise DataError(f"{role}: cannot read {real}: {exc.strerror or exc}") from None

    def child(self, directory: Path, name: str) -> Path:
        """The real location of file ``name`` inside the (resolved) ``directory``: links inside
        the roots are followed, links out of them refused (ConfinementError)."""
        real = _real(directory / name)
        if self.roots is not None and not _inside(real, self.roots):
            raise self.refusal()
        return real


def configure_data_access(roots: Iterable[str | os.PathLike] | None, data_dir: str | os.PathLike, *,
                          max_bytes: int | str | None = None, max_compressed_bytes: int | str | None = None,
                          max_text_bytes: int | str | None = None, environ=None) -> DataPolicy:
    """Set up data access for a server; the one call ``esgd serve`` makes, before Ray starts.

    ``roots``: the ``--data-root`` values (None or empty: :func:`default_roots`). Each given root
    must be an existing directory; ``DATA_DIR/datasets`` is created when it is a root. Caps:
    the ``--data-max-*`` values (``None``: ``$ESGD_DATA_MAX_*``, else the defaults of
    :mod:`.limits`). Exports the policy to ``environ`` (default ``os.environ``) so that
    processes started afterwards — an embedded Ray's job runners — load under it too, and
    returns it. Raises ValueError naming the bad flag value.
    """
    from .limits import parse_size

    env = os.environ if environ is None else environ
    data_datasets = Path(os.path.abspath(Path(data_dir) / "datasets"))
    if roots:
        given = list(roots)
        for root in given:
            if not Path(root).is_dir():
                raise ValueError(f"--data-root {os.fspath(root)}: not a directory")
        resolved = normalise_roots(given)
    else:
        resolved = default_roots(data_dir)
    if _real(data_datasets) in resolved:
        data_datasets.mkdir(parents=True, exist_ok=True)
    base = Limits.from_env(env)
    limits = Limits(
        max_bytes=parse_size(max_bytes, "--data-max-bytes") if max_bytes is not None else base.max_bytes,
        max_compressed=(parse_size(max_compressed_bytes, "--data-max-compressed-bytes")
                        if max_compressed_bytes is not None else base.max_compressed),
        max_text=parse_size(max_text_bytes, "--data-max-text-bytes") if max_text_bytes is not None else base.max_text)
    policy = DataPolicy(roots=resolved, limits=limits)
    env.update(policy.env())
    return policy
