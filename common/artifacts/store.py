"""A content-addressed, size-bounded cache of pulled source-image data on local disk.

Several processes on one host (Celery prefork workers, gunicorn workers) share one root, so all
coordination is done with ``flock`` on per-key lock files: the kernel drops those locks when a
process dies, even by SIGKILL, so a crash can never leave a key locked.

Layout under ``root``::

    evict.lock                     serialises evict() runs (never taken on the read path)
    locks/<key>.lock               per-key lock: shared = in use, exclusive = building or evicting
    entries/<key>/meta.json        {"key": ..., "size": ...}; the entry dir's mtime is its last use
    entries/<key>/data/            the content handed to callers
    tmp/<key>~build-XXXXXXXX/      an entry being built (renamed to entries/<key> when complete)
    tmp/<key>~trash-XXXXXXXX/      an entry being deleted (renamed out of entries/ first)

An entry appears and disappears by one ``rename``, so a visible entry is always complete. Lock files
of keys without an entry are unlinked under an exclusive lock; whoever then acquires a lock checks
that its descriptor is still the file at the path and retries if not, so two processes can never
hold "the" lock of a key through different inodes.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import re
import secrets
import shutil
import stat
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

log = logging.getLogger(__name__)

_KEY_RE = re.compile(r"[A-Za-z0-9._-]+")
_MAX_KEY_LENGTH = 200
_DATA = "data"
_META = "meta.json"
_BUILD = "~build-"
_TRASH = "~trash-"
# Names in tmp/ we did not create (or cannot parse) are only removed once this old.
_FOREIGN_TMP_AGE = 3600.0


class StoreError(Exception):
    """The store itself failed (not the caller's build); the message names the key."""


def _check_key(key: str) -> None:
    """Keys become file names, so anything that could escape the root or hide a file is refused."""
    if (
        not isinstance(key, str)
        or len(key) > _MAX_KEY_LENGTH
        or key.startswith(".")
        or not _KEY_RE.fullmatch(key)
    ):
        raise ValueError(f"invalid artifact store key {key!r}")


def _is_key(name: str) -> bool:
    try:
        _check_key(name)
    except ValueError:
        return False
    return True


def disk_usage(path: Path) -> int:
    """Blocks actually allocated (sparse files count what they use); hard links are counted once."""
    seen: set[tuple[int, int]] = set()
    total = 0
    for dirpath, dirnames, filenames in os.walk(path):
        for name in [".", *dirnames, *filenames]:
            st = os.lstat(os.path.join(dirpath, name))
            if (st.st_dev, st.st_ino) in seen:
                continue
            seen.add((st.st_dev, st.st_ino))
            total += st.st_blocks * 512
    return total


def _rmtree(path: Path) -> None:
    """Removes a tree even if a build left read-only directories in it; a vanished path is fine."""

    def retry(func: Callable[..., object], failed: str, exc: BaseException) -> None:
        if isinstance(exc, FileNotFoundError):
            return
        if isinstance(exc, PermissionError):
            try:
                os.chmod(os.path.dirname(failed), stat.S_IRWXU)
                if os.path.isdir(failed) and not os.path.islink(failed):
                    os.chmod(failed, stat.S_IRWXU)
                    shutil.rmtree(failed, ignore_errors=True)
                else:
                    func(failed)
                return
            except OSError:
                pass
        log.warning("artifact store: cannot remove %s: %s", failed, exc)

    if sys.version_info >= (3, 12):
        shutil.rmtree(path, onexc=retry)
    else:
        shutil.rmtree(path, onerror=lambda func, failed, info: retry(func, failed, info[1]))


class ArtifactStore:
    """Immutable entries keyed by content digest, built once per host and evicted least-recently-used."""

    def __init__(self, root: Path, max_bytes: int) -> None:
        if max_bytes < 0:
            raise ValueError(f"max_bytes must not be negative, got {max_bytes}")
        self.root = Path(root)
        self.max_bytes = max_bytes
        self._entries = self.root / "entries"
        self._locks = self.root / "locks"
        self._tmp = self.root / "tmp"
        for directory in (self._entries, self._locks, self._tmp):
            directory.mkdir(parents=True, exist_ok=True)

    # -- public API -------------------------------------------------------------------------------

    @contextmanager
    def entry(self, key: str, build: Callable[[Path], None]) -> Iterator[Path]:
        """Yields the directory holding ``key``'s content, building it first if absent.

        The entry is held in use (shared lock) until the ``with`` block ends, so no eviction in any
        process can remove it under the caller. ``build`` must not ask for ``key`` itself (it would
        wait for its own lock); nested entries of other keys are fine if always nested in one order.
        """
        _check_key(key)
        fd, built = self._acquire(key, build)
        try:
            if built:
                try:
                    self.evict()
                except OSError:
                    log.warning("artifact store: eviction after building %s failed", key, exc_info=True)
            yield self._entries / key / _DATA
        finally:
            os.close(fd)

    def evict(self) -> int:
        """Brings the store back under budget; also sweeps what crashed builders and evictors left."""
        fd = os.open(self.root / "evict.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            self._clean_tmp()
            freed = self._evict_lru()
            self._clean_locks()
            return freed
        finally:
            os.close(fd)

    def size(self) -> int:
        return sum(self._entry_size(key) for key in self.keys())

    def keys(self) -> list[str]:
        return sorted(name for name in os.listdir(self._entries) if _is_key(name))

    # -- locking ----------------------------------------------------------------------------------

    def _lock_path(self, key: str) -> Path:
        return self._locks / f"{key}.lock"

    def _lock(self, key: str, operation: int) -> int | None:
        """Returns a descriptor locked with ``operation`` on the key's current lock file.

        Returns None only for LOCK_NB when the lock is busy.
        """
        path = self._lock_path(key)
        while True:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
            try:
                fcntl.flock(fd, operation)
            except BlockingIOError:
                os.close(fd)
                return None
            except BaseException:
                os.close(fd)
                raise
            if self._is_current(fd, path):
                return fd
            os.close(fd)  # the file was unlinked (and maybe recreated) while we waited: retry

    @staticmethod
    def _is_current(fd: int, path: Path) -> bool:
        try:
            on_disk = os.stat(path)
        except FileNotFoundError:
            return False
        held = os.fstat(fd)
        return (held.st_dev, held.st_ino) == (on_disk.st_dev, on_disk.st_ino)

    def _touch(self, key: str) -> bool:
        """Records a use (the LRU clock); False if the entry does not exist."""
        try:
            os.utime(self._entries / key)
        except FileNotFoundError:
            return False
        return True

    # -- building ---------------------------------------------------------------------------------

    def _acquire(self, key: str, build: Callable[[Path], None]) -> tuple[int, bool]:
        """Returns a shared-locked descriptor on an existing entry, and whether this call built it."""
        built = False
        while True:
            fd = self._lock(key, fcntl.LOCK_SH)
            assert fd is not None
            if self._touch(key):
                return fd, built
            os.close(fd)

            fd = self._lock(key, fcntl.LOCK_EX)
            assert fd is not None
            try:
                if not (self._entries / key).exists():
                    self._build(key, build)
                    built = True
                # Downgrading is not atomic: an evictor may slip in, so check again below.
                fcntl.flock(fd, fcntl.LOCK_SH)
            except BaseException:
                os.close(fd)
                raise
            if self._is_current(fd, self._lock_path(key)) and self._touch(key):
                return fd, built
            os.close(fd)

    def _build(self, key: str, build: Callable[[Path], None]) -> None:
        """Runs under the key's exclusive lock; leaves either a complete entry or nothing."""
        tmp = Path(tempfile.mkdtemp(prefix=f"{key}{_BUILD}", dir=self._tmp))
        try:
            os.chmod(tmp, 0o755)
            data = tmp / _DATA
            data.mkdir()
            build(data)
            if data.is_symlink() or not data.is_dir():
                raise StoreError(f"artifact store: build of {key!r} removed its output directory")
            try:
                meta = {"key": key, "size": disk_usage(data)}
                (tmp / _META).write_text(json.dumps(meta))
                os.rename(tmp, self._entries / key)
            except OSError as exc:
                raise StoreError(f"artifact store: cannot store {key!r}: {exc}") from exc
        except BaseException:
            _rmtree(tmp)
            # Nobody else can hold the key's lock now, so the lock file can go too.
            self._lock_path(key).unlink(missing_ok=True)
            raise

    # -- eviction ---------------------------------------------------------------------------------

    def _entry_size(self, key: str) -> int:
        try:
            return int(json.loads((self._entries / key / _META).read_text())["size"])
        except FileNotFoundError:
            if not (self._entries / key).exists():
                return 0  # evicted meanwhile
        except (OSError, ValueError, KeyError, TypeError):
            pass
        try:
            return disk_usage(self._entries / key)
        except OSError:
            return 0

    def _clean_tmp(self) -> None:
        """Removes build dirs whose builder is gone, and trash a crashed evictor left behind."""
        for name in os.listdir(self._tmp):
            path = self._tmp / name
            key, sep, kind = name.rpartition("~")
            if sep and _is_key(key) and ("~" + kind).startswith(_TRASH):
                _rmtree(path)
            elif sep and _is_key(key) and ("~" + kind).startswith(_BUILD):
                # A builder holds the key exclusively for as long as its build dir exists, so if we
                # can take the lock shared there is no builder and the dir was orphaned by a crash.
                fd = self._lock(key, fcntl.LOCK_SH | fcntl.LOCK_NB)
                if fd is None:
                    continue
                try:
                    _rmtree(path)
                finally:
                    os.close(fd)
            else:
                try:
                    age = time.time() - os.lstat(path).st_mtime
                except FileNotFoundError:
                    continue
                if age <= _FOREIGN_TMP_AGE:
                    continue
                if path.is_dir() and not path.is_symlink():
                    _rmtree(path)
                else:
                    path.unlink(missing_ok=True)

    def _evict_lru(self) -> int:
        candidates: list[tuple[int, str, int]] = []
        for key in self.keys():
            try:
                last_use = os.stat(self._entries / key).st_mtime_ns
            except FileNotFoundError:
                continue
            candidates.append((last_use, key, self._entry_size(key)))
        total = sum(size for _, _, size in candidates)
        freed = 0
        for _, key, size in sorted(candidates):
            if total <= self.max_bytes:
                break
            fd = self._lock(key, fcntl.LOCK_EX | fcntl.LOCK_NB)
            if fd is None:
                continue  # in use or being rebuilt
            trash = self._tmp / f"{key}{_TRASH}{secrets.token_hex(8)}"
            try:
                try:
                    os.rename(self._entries / key, trash)
                except FileNotFoundError:
                    continue
                os.unlink(self._lock_path(key))
            finally:
                os.close(fd)
            _rmtree(trash)
            total -= size
            freed += size
            log.debug("artifact store: evicted %s (%d bytes)", key, size)
        return freed

    def _clean_locks(self) -> None:
        """Unlinks lock files of keys that have no entry and that nobody holds."""
        for name in os.listdir(self._locks):
            key = name.removesuffix(".lock")
            if key == name or not _is_key(key) or (self._entries / key).exists():
                continue
            fd = self._lock(key, fcntl.LOCK_EX | fcntl.LOCK_NB)
            if fd is None:
                continue
            try:
                if not (self._entries / key).exists():
                    os.unlink(self._lock_path(key))
            finally:
                os.close(fd)
