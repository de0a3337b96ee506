"""The workspace: one directory with the DuckDB catalog, Parquet shards, signals and selections."""

from __future__ import annotations

import contextlib
import fcntl
import functools
import json
import os
import re
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import duckdb

from gristmill.errors import InputError, NotFoundError, WorkspaceBusyError
from gristmill.storage import catalog

DEFAULT_WORKSPACE = "gristmill-workspace"
# Written by the first writer: a workspace is recognised by it or by its catalog (the catalog
# may be lost while the files are not).
MARKER = ".gristmill-workspace"
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")


def lock_timeout() -> float:
    """Seconds a process waits for a busy workspace before giving up (GRISTMILL_LOCK_TIMEOUT)."""
    value = os.environ.get("GRISTMILL_LOCK_TIMEOUT", "10")
    try:
        return float(value)
    except ValueError:
        raise InputError(
            f"GRISTMILL_LOCK_TIMEOUT must be a number of seconds, not {value!r}"
        ) from None


# `gristmill sql` names its views "<corpus>", "<corpus>__<signal>", "<corpus>__rejects" and
# "selection__<name>" next to the catalog tables, and DuckDB matches names case-insensitively.
VIEW_SEPARATOR = "__"
SELECTION_VIEW_PREFIX = "selection"
REJECTS_VIEW_SUFFIX = "rejects"


@functools.cache
def reserved_corpus_names() -> frozenset[str]:
    """Corpus names (lower case) that `gristmill sql` needs: the catalog tables and the
    selection views' prefix."""
    with duckdb.connect() as con:
        catalog.ensure_schema(con)
        tables = {r[0].lower() for r in con.execute("show tables").fetchall()}
    return frozenset(tables | {SELECTION_VIEW_PREFIX})


def safe_name(kind: str, name: str) -> str:
    """Return `name` if it is safe as a file name (it cannot leave its folder), else InputError."""
    if not isinstance(name, str) or not _NAME_RE.match(name) or ".." in name:
        raise InputError(
            f"invalid {kind} name {name!r}: use letters, digits, '_', '-' and '.', "
            "starting with a letter or digit (at most 128 characters, no '..')"
        )
    return name


def validate_name(kind: str, name: str) -> str:
    """Return `name` if it is safe as a file name and as a new SQL view name, else InputError.

    New names only: paths of what a workspace already holds need just `safe_name`, so a
    corpus ingested before these rules stays usable (its view is skipped with a note).
    """
    safe_name(kind, name)
    if kind == "corpus" and (VIEW_SEPARATOR in name or name.lower() in reserved_corpus_names()):
        raise InputError(
            f"invalid corpus name {name!r}: it would take the name of a catalog table or view "
            f"in `gristmill sql` (a corpus name has no '{VIEW_SEPARATOR}' and is none of "
            f"{', '.join(sorted(reserved_corpus_names()))}, in any case)"
        )
    if kind == "signal" and name.lower() == REJECTS_VIEW_SUFFIX:
        raise InputError(
            f"invalid signal name {name!r}: '<corpus>__{REJECTS_VIEW_SUFFIX}' is the rejects view"
        )
    return name


# flock conflicts between two descriptors of one process too, so nested flows in one process
# (run -> ingest) share the lock through this per-process count instead of deadlocking.
_held_locks: dict[Path, tuple[int, int]] = {}
_held_guard = threading.Lock()
# Catalog files whose schema this process has already ensured (once per process is enough).
_schema_ready: set[Path] = set()
# Per thread: the catalog connection a `catalog_session` shares, by catalog path.
_sessions = threading.local()


class Workspace:
    """A gristmill workspace directory; cheap to construct, opens nothing until asked."""

    def __init__(self, root: str | os.PathLike[str] | None = None) -> None:
        root = root or os.environ.get("GRISTMILL_WORKSPACE") or DEFAULT_WORKSPACE
        self.root = Path(root).expanduser().resolve()

    def __repr__(self) -> str:
        return f"Workspace({str(self.root)!r})"

    # -- paths -------------------------------------------------------------------------------
    @property
    def catalog_path(self) -> Path:
        """Path of the DuckDB catalog file."""
        return self.root / "catalog.duckdb"

    def corpus_dir(self, corpus: str) -> Path:
        """Directory of a corpus's document shards."""
        return self.root / "corpora" / safe_name("corpus", corpus)

    def stats_dir(self, corpus: str) -> Path:
        """Directory of a corpus's derived statistics (per corpus version)."""
        return self.root / "stats" / safe_name("corpus", corpus)

    def rejects_dir(self, corpus: str) -> Path:
        """Directory of a corpus's rejected records."""
        return self.root / "rejects" / safe_name("corpus", corpus)

    def signal_dir(self, corpus: str, signal: str, config_hash: str) -> Path:
        """Directory of one signal's per-shard files for one config."""
        return (
            self.root
            / "signals"
            / safe_name("corpus", corpus)
            / validate_name("signal", signal)
            / config_hash
        )

    def selection_dir(self, name: str) -> Path:
        """Directory of a selection's members."""
        return self.root / "selections" / validate_name("selection", name)

    def members_path(self, selection: str) -> Path:
        """The Parquet file of a selection's members."""
        return self.selection_dir(selection) / "members.parquet"

    def shard_files(self, con: duckdb.DuckDBPyConnection, corpus: str) -> list[Path]:
        """Absolute paths of the corpus's shards, in the catalog's stable order."""
        return [self.absolute(s["path"]) for s in catalog.shards(con, corpus)]

    def relative(self, path: Path) -> str:
        """Path relative to the workspace root, as stored in the catalog."""
        return path.resolve().relative_to(self.root).as_posix()

    def absolute(self, relative: str) -> Path:
        """Absolute path of a catalog-relative path."""
        return self.root / relative

    def exists(self) -> bool:
        """True when the workspace has a catalog."""
        return self.catalog_path.exists()

    def check_writable(self) -> None:
        """Refuse to write a workspace into anything but a workspace, a new or an empty directory.

        A workspace has its catalog or the marker its first writer left; a lock file alone is
        what a failed first command of an older gristmill left behind.
        """
        if self.exists() or (self.root / MARKER).exists() or not self.root.exists():
            return
        if not self.root.is_dir():
            raise InputError(f"{self.root}: exists and is not a directory, so not a workspace")
        others = sorted(p.name for p in self.root.iterdir() if p.name != ".lock")
        if others:
            shown = ", ".join(others[:3]) + (", ..." if len(others) > 3 else "")
            raise InputError(
                f"{self.root}: not a gristmill workspace (no catalog.duckdb) and not empty "
                f"({shown}); refusing to write there: choose a new or empty directory"
            )

    # -- locking -----------------------------------------------------------------------------
    @contextlib.contextmanager
    def write_lock(self, command: str, timeout: float | None = None) -> Iterator[None]:
        """Hold the workspace for writing; raise WorkspaceBusyError if another process holds it.

        InputError if the directory is not a workspace (see `check_writable`)."""
        lock_path = self.root / ".lock"
        with _held_guard:
            held = _held_locks.get(lock_path)
            if held is not None:
                _held_locks[lock_path] = (held[0], held[1] + 1)
        if held is not None:
            try:
                yield
            finally:
                self._release(lock_path)
            return
        self.check_writable()
        self.root.mkdir(parents=True, exist_ok=True)
        (self.root / MARKER).touch()
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        deadline = time.monotonic() + (lock_timeout() if timeout is None else timeout)
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    holder = os.pread(fd, 4096, 0).decode("utf-8", "replace").strip()
                    os.close(fd)
                    raise WorkspaceBusyError(
                        f"workspace busy: {self.root} is being written by another process "
                        f"({holder or 'unknown holder'}); try again when it has finished"
                    ) from None
                time.sleep(0.1)
        info = json.dumps({"pid": os.getpid(), "command": command, "since": time.time()})
        os.ftruncate(fd, 0)
        os.pwrite(fd, info.encode(), 0)
        with _held_guard:
            _held_locks[lock_path] = (fd, 1)
        try:
            yield
        finally:
            self._release(lock_path)

    @staticmethod
    def _release(lock_path: Path) -> None:
        with _held_guard:
            fd, count = _held_locks[lock_path]
            if count > 1:
                _held_locks[lock_path] = (fd, count - 1)
                return
            del _held_locks[lock_path]
        os.ftruncate(fd, 0)
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)

    # -- catalog -----------------------------------------------------------------------------
    @contextlib.contextmanager
    def catalog(self, read_only: bool = False) -> Iterator[duckdb.DuckDBPyConnection]:
        """Open the catalog briefly; waits while another process has it open, then fails clearly."""
        shared = getattr(_sessions, "open", {}).get(self.catalog_path)
        if shared is not None:  # inside this thread's catalog_session
            yield shared
            return
        if read_only and not self.exists():
            raise NotFoundError(
                f"no gristmill workspace at {self.root} (run `gristmill ingest` first, "
                "or pass --workspace)"
            )
        self.root.mkdir(parents=True, exist_ok=True)
        if not self.catalog_path.exists():
            _schema_ready.discard(self.catalog_path)  # a new (or re-created) catalog file
        deadline = time.monotonic() + lock_timeout()
        while True:
            try:
                con = duckdb.connect(str(self.catalog_path), read_only=read_only)
                break
            except duckdb.IOException as error:
                if "lock" not in str(error).lower():
                    raise
                if time.monotonic() >= deadline:
                    raise WorkspaceBusyError(
                        f"workspace busy: the catalog {self.catalog_path} is held by another "
                        "process; try again when it has finished"
                    ) from None
                time.sleep(0.05)
        try:
            if not read_only and self.catalog_path not in _schema_ready:
                catalog.ensure_schema(con)
                _schema_ready.add(self.catalog_path)
            yield con
        finally:
            con.close()

    @contextlib.contextmanager
    def catalog_session(self) -> Iterator[None]:
        """Share one catalog connection among this thread's `catalog()` uses inside: each open
        is ~12 ms of DuckDB start-up. For short phases (an up-to-date check) under the write
        lock: other processes wait for the catalog meanwhile."""
        if not hasattr(_sessions, "open"):
            _sessions.open = {}
        if self.catalog_path in _sessions.open:
            yield
            return
        with self.catalog() as con:
            _sessions.open[self.catalog_path] = con
            try:
                yield
            finally:
                del _sessions.open[self.catalog_path]
