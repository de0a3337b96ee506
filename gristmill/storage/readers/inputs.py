"""Finding inputs: paths, directories and URLs expanded to files; opened, sized, fingerprinted."""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path
from typing import Any

import fsspec
import xxhash

from gristmill.errors import InputError
from gristmill.storage.readers.options import (
    _COMPRESSED,
    _EXTENSIONS,
    _READ_SIZE,
    FORMATS,
    Chunk,
    IngestOptions,
)


# -- planning ------------------------------------------------------------------------------------
def detect_format(path: Path) -> str:
    """The format of a file from its extension, or InputError naming it."""
    suffixes = [s.lower() for s in path.suffixes]
    if suffixes and suffixes[-1] in _COMPRESSED:
        suffixes = suffixes[:-1]
    if suffixes and suffixes[-1] in _EXTENSIONS:
        return _EXTENSIONS[suffixes[-1]]
    raise InputError(
        f"{path}: unknown format (extension {''.join(path.suffixes) or 'none'}); "
        f"pass --format with one of {', '.join(FORMATS)}"
    )


def _is_hf_dataset_dir(path: Path) -> bool:
    return (path / "dataset_info.json").exists() or (path / "dataset_dict.json").exists()


def is_url(path: str) -> bool:
    """True for an fsspec URL (`s3://...`, `memory://...`) rather than a local path."""
    return "://" in path


# An input that vanished or cannot be read: bad input (exit 2, no retries), not a transient error.
_UNREADABLE = (FileNotFoundError, PermissionError, IsADirectoryError, NotADirectoryError)


def _unreadable_input(path: str, error: OSError) -> InputError:
    """The InputError naming an input that vanished or cannot be read, and why."""
    if isinstance(error, FileNotFoundError | NotADirectoryError):
        why = "no longer exists (deleted or moved after the ingest began?)"
    elif isinstance(error, PermissionError):
        why = "not readable (permission denied)"
    else:
        why = "is a directory, not a file"
    return InputError(f"{path}: {why}")


def open_input(path: str) -> Any:
    """Open a local path or an fsspec URL for binary reading."""
    try:
        return fsspec.open(path, "rb").open() if is_url(path) else open(path, "rb")
    except _UNREADABLE as error:
        raise _unreadable_input(path, error) from None


def input_size(path: str) -> int:
    """Size in bytes of a local path or an fsspec URL."""
    try:
        if not is_url(path):
            return os.path.getsize(path)
        fs, inner = fsspec.core.url_to_fs(path)
        return int(fs.size(inner))
    except _UNREADABLE as error:
        raise _unreadable_input(path, error) from None


def _fingerprint(path: str) -> str:
    """Size plus a hash of the first and last MiB: cheap, and changes when the file does."""
    size = input_size(path)
    digest = xxhash.xxh3_64()
    with open_input(path) as handle:
        digest.update(handle.read(_READ_SIZE))
        if size > 2 * _READ_SIZE:
            handle.seek(size - _READ_SIZE)
            digest.update(handle.read(_READ_SIZE))
    return f"{size}:{digest.hexdigest()}"


def expand_inputs(
    paths: list[str], options: IngestOptions, skipped: list[dict[str, str]] | None = None
) -> list[tuple[str, str, str]]:
    """(path, source key, format) for every input file; InputError for unreadable or unknown.

    Directory entries left out are appended to `skipped` as {"path", "reason"}: hidden
    files and directories ("hidden"), symbolic links that loop ("symlink_loop") or lead
    nowhere ("broken_symlink"), and sockets, pipes and devices ("not_a_file").
    """
    found: list[tuple[str, str, str]] = []
    skipped = [] if skipped is None else skipped
    for given in paths:
        if given.startswith("file://"):  # a local file is read as one, whatever the runner
            given = fsspec.core.url_to_fs(given)[1]
        elif is_url(given) and options.format != "hf":
            found.extend(_expand_url(given, options, skipped))
            continue
        path = Path(given).expanduser()
        if options.format == "hf" or (path.is_dir() and _is_hf_dataset_dir(path)):
            source = path.name if path.exists() else given
            found.append((str(path.resolve()) if path.exists() else given, source, "hf"))
            continue
        if not path.exists():
            raise InputError(f"{given}: no such file or directory")
        if path.is_dir():
            before = len(skipped)
            files = sorted(_directory_files(path, given, skipped))
            if not files:
                left_out = skipped[before:]
                reasons = ", ".join(sorted({s["reason"] for s in left_out}))
                note = f" ({len(left_out)} entries skipped: {reasons})" if left_out else ""
                raise InputError(f"{given}: directory has no files{note}")
            for file in files:
                source = f"{path.resolve().name}/{file.relative_to(path).as_posix()}"
                found.append((str(file.resolve()), source, options.format or detect_format(file)))
        else:
            found.append((str(path.resolve()), path.name, options.format or detect_format(path)))
    seen: dict[str, str] = {}
    for file, source, _fmt in found:
        if Path(file).exists() and not os.access(file, os.R_OK):
            raise InputError(f"{file}: not readable (permission denied)")
        if source in seen and seen[source] != file:
            raise InputError(
                f"{file} and {seen[source]} would both be source {source!r} (ids derive from it); "
                "ingest them in separate commands or pass their common directory instead"
            )
        seen[source] = file
    return found


def _directory_files(root: Path, shown: str, skipped: list[dict[str, str]]) -> list[Path]:
    """Regular files under a directory, following symbolic links; what is left out goes to
    `skipped`, named as `shown` (the directory as given) joined with its place inside."""
    files: list[Path] = []
    top = root.stat()
    stack = [(root, frozenset({(top.st_dev, top.st_ino)}))]  # with the directories above it
    while stack:
        directory, above = stack.pop()
        try:
            entries = sorted(os.scandir(directory), key=lambda e: e.name)
        except OSError as error:
            raise _unreadable_input(str(directory), error) from None
        for entry in entries:
            path = Path(entry.path)
            reason, info = _entry_status(entry)
            if info is not None and stat.S_ISDIR(info.st_mode):
                identity = (info.st_dev, info.st_ino)
                if identity not in above:
                    stack.append((path, above | {identity}))
                    continue
                reason = "symlink_loop"  # a link back to a directory it is inside
            elif info is not None and stat.S_ISREG(info.st_mode):
                files.append(path)
                continue
            elif info is not None:
                reason = "not_a_file"  # a socket, pipe or device: reading it could block
            skipped.append({"path": str(Path(shown) / path.relative_to(root)), "reason": reason})
    return files


def _entry_status(entry: os.DirEntry) -> tuple[str, os.stat_result | None]:
    """A directory entry's status through links, or why it is skipped (status None)."""
    if entry.name.startswith("."):
        return "hidden", None
    try:
        return "", os.stat(entry.path)
    except OSError as error:
        if error.errno == errno.ELOOP:
            return "symlink_loop", None
        if entry.is_symlink() and error.errno == errno.ENOENT:
            return "broken_symlink", None
        raise _unreadable_input(entry.path, error) from None


def _expand_url(
    url: str, options: IngestOptions, skipped: list[dict[str, str]]
) -> list[tuple[str, str, str]]:
    """Files under an fsspec URL, with source keys as for a local file or directory."""
    fs, root = fsspec.core.url_to_fs(url)
    root = root.rstrip("/")
    if not fs.exists(root):
        raise InputError(f"{url}: no such file or directory")
    if not fs.isdir(root):
        name = root.rsplit("/", 1)[-1]
        return [(url, name, options.format or detect_format(Path(name)))]
    base = root.rsplit("/", 1)[-1]
    found = []
    for file in sorted(fs.find(root)):
        inside = file[len(root) :].lstrip("/")
        if any(part.startswith(".") for part in inside.split("/")):
            skipped.append({"path": f"{url.rstrip('/')}/{inside}", "reason": "hidden"})
            continue
        fmt = options.format or detect_format(Path(inside))
        found.append((fs.unstrip_protocol(file), f"{base}/{inside}", fmt))
    if not found:
        raise InputError(f"{url}: directory has no files")
    return found


def _plan_byte_ranges(path: str, source: str, fmt: str, fingerprint: str, size: int) -> list[Chunk]:
    """Cut a file at line boundaries near every `size` bytes, counting lines to keep numbering."""
    total = input_size(path)
    if total <= size:
        return [Chunk(path, source, fmt, fingerprint)]
    chunks = []
    with open_input(path) as handle:
        start, line = 0, 1
        while start < total:
            handle.seek(min(start + size, total))
            handle.readline()
            end = min(handle.tell(), total)
            chunks.append(Chunk(path, source, fmt, fingerprint, start, end, line))
            handle.seek(start)
            remaining = end - start
            while remaining > 0:
                block = handle.read(min(_READ_SIZE * 16, remaining))
                line += block.count(b"\n")
                remaining -= len(block)
            start = end
    return chunks


def plan_file(
    path: str, source: str, fmt: str, options: IngestOptions, splittable: bool
) -> list[Chunk]:
    """Chunks of a byte-stream file: by byte range when `splittable`, uncompressed and without
    an id field (duplicate ids are caught within a chunk), else the whole file."""
    fingerprint = _fingerprint(path)
    compressed = Path(path).suffix.lower() in _COMPRESSED
    if splittable and not compressed and options.id_field is None:
        return _plan_byte_ranges(path, source, fmt, fingerprint, options.chunk_bytes)
    return [Chunk(path, source, fmt, fingerprint)]
