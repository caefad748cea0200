"""The server's data directory: one server at a time, and private to its user.

``DATA_DIR/lock`` is taken with ``flock(LOCK_EX | LOCK_NB)`` before the server reads its
store, requeues anything or writes a token, and held for the process's life (the descriptor
is close-on-exec, so Ray's processes never inherit it and the lock dies with the server, even
on SIGKILL). A second ``esgd serve`` on the same directory exits at once saying who holds it,
having changed nothing: two servers would each requeue and run the same RUNNING jobs, and
every round would be recorded twice.

Modes: the directory is 0700 and every file in it 0600 (the store holds every spec and
error, the run directories every checkpoint, ``token`` the credentials). The server runs
with umask 077 so that whatever it and its embedded Ray's processes create is private, and
:func:`make_private` tightens files an older version (or another umask) left behind.
"""
from __future__ import annotations

import fcntl
import logging
import os
import stat
from pathlib import Path

LOCK_NAME = "lock"
log = logging.getLogger("esgd.server")


class DataDirBusy(OSError):
    """Another server holds the data directory's lock."""


def lock_data_dir(data_dir: Path) -> int:
    """Create ``data_dir`` (0700) if needed and take its lock; return the descriptor to keep
    open. Raises :class:`DataDirBusy` naming the holder's PID when another server has it."""
    data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    path = data_dir / LOCK_NAME
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
        os.close(fd)
        raise DataDirBusy(f"data directory {data_dir} is in use by another esgd serve (pid {holder}); "
                          "stop it first or choose another --data-dir (one server per directory: two "
                          "would run the same jobs twice)") from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return fd


def make_private(data_dir: Path) -> int:
    """Directories 0700, files 0600, under ``data_dir``: what this user owns, symlinks left
    alone (never followed) and ``datasets/`` (a data root: the operator's files) untouched
    below its own mode. Returns how many modes were changed."""
    changed, me = 0, os.geteuid()
    for root, dirs, files in os.walk(data_dir):
        if Path(root) == data_dir:
            dirs[:] = [d for d in dirs if d != "datasets"]
        for name, mode in [(root, 0o700)] + [(os.path.join(root, f), 0o600) for f in files]:
            try:
                st = os.lstat(name)
                if stat.S_ISLNK(st.st_mode) or st.st_uid != me or stat.S_IMODE(st.st_mode) & 0o077 == 0:
                    continue
                os.chmod(name, stat.S_IMODE(st.st_mode) & mode)
            except OSError:  # gone meanwhile, or not ours to change
                continue
            changed += 1
    datasets = data_dir / "datasets"
    if datasets.is_dir() and not datasets.is_symlink() and datasets.stat().st_uid == me:
        os.chmod(datasets, 0o700)
    if changed:
        log.info("made %d files and directories under %s private to their owner (0700/0600)", changed, data_dir)
    return changed
