"""JSON text read as written, for what parsing and re-encoding would change."""

from __future__ import annotations

import contextlib
import json
import re
from typing import Any

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc

_JSON_TOKEN = re.compile(rb'"(?:[^"\\]|\\.)*"|[\[\]{},:]', re.DOTALL)
_SPACED_KEY_END = re.compile(rb'"\s+:')
_HUGE = 2.0**63
_ARROW_MAX_DEPTH = 64  # Arrow's JSON reader recurses per level and crashes past a few thousand


class _BadRecord(Exception):
    """A JSON line that cannot become a record: the reject's reason and detail."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason, self.detail = reason, detail


class _RepeatedKey(Exception):
    """A JSON object names a key twice."""


def _object_members(raw: bytes) -> list[tuple[bytes, bytes, bytes]]:
    """(key, member, value) of each top-level member of a JSON object, exactly as written."""
    members: list[tuple[bytes, bytes, bytes]] = []
    depth, start, colon = 0, 0, 0
    key: bytes | None = None
    for token in _JSON_TOKEN.finditer(raw):
        at = token.start()
        char = raw[at]
        if char == 0x22:  # a string: the key when it opens a member
            if depth == 1 and key is None:
                key = token.group()
        elif char == 0x3A:  # ':'
            if depth == 1:
                colon = token.end()
        elif char in (0x5B, 0x7B):  # '[' '{'
            depth += 1
            if depth == 1:
                start = token.end()
        else:  # ',' ']' '}'
            if depth == 1 and key is not None and char != 0x5D:
                members.append((key, raw[start:at].strip(), raw[colon:at].strip()))
                start, key = token.end(), None
            if char != 0x2C:
                depth -= 1
    return members


def _verbatim_meta(raw: bytes, text_key: str | None) -> str:
    """Meta as the record wrote it: its other non-null members, repeated keys, numbers beyond
    64 bits, NaN and all. A repeated text key gives its last value to the text, as parsers do."""
    members = _object_members(raw)
    keys = [json.loads(key) for key, _, _ in members]
    text_at = max((i for i, key in enumerate(keys) if key == text_key), default=-1)
    kept = [m for i, (_, m, value) in enumerate(members) if i != text_at and value != b"null"]
    return (b"{" + b",".join(kept) + b"}").decode("utf-8")


def _load_json_line(raw: bytes, faithful: bool = False) -> tuple[Any, int | None]:
    """A JSON line's value and the keys of all its objects; None instead of a count where
    encoding the value again would change the record (integers beyond 64 bits, NaN,
    Infinity, 1e400). _BadRecord if the line cannot be a record. `faithful`: Arrow read the
    line, so no number is beyond a double and the keys need no count (0 is returned)."""
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError:
        pass
    else:
        if faithful:
            return value, 0
        keys, huge = _walk_json(value)
        if not huge:
            return value, keys
        # orjson reads an integer beyond 64 bits as a float; json reads it exactly.
        with contextlib.suppress(RecursionError):
            value = json.loads(raw)
        return value, None
    try:  # json reads what orjson refuses: NaN, Infinity, 1e400, lone surrogates
        value = json.loads(raw)
    except RecursionError:
        detail = "nested too deep to parse (about 1,000 levels)"
        raise _BadRecord("malformed_json", detail) from None
    except ValueError as error:
        raise _BadRecord("malformed_json", str(error)) from None
    if _has_lone_surrogate(value):
        detail = "a \\ud800-\\udfff escape without its pair: the text has no UTF-8 form"
        raise _BadRecord("invalid_text", detail)
    return value, None


def _written_keys(data: bytes) -> int | None:
    """How many keys some JSON text writes, counted without parsing; None where counting
    cannot tell (a key with whitespace before its ':', or one ending in a backslash).

    Otherwise a key ends in '":', and a '":' inside a string has its quote escaped.
    """
    arr = np.frombuffer(data, dtype=np.uint8)
    pair = 0x3A22  # '":' read as a little-endian 16-bit word, at even and at odd offsets
    even = np.frombuffer(data, dtype="<u2", count=len(data) // 2)
    odd = np.frombuffer(data, dtype="<u2", offset=1, count=(len(data) - 1) // 2)
    at = np.concatenate((np.flatnonzero(even == pair) * 2, np.flatnonzero(odd == pair) * 2 + 1))
    at = at[at >= 2]  # a key's closing quote comes after '{"' at least
    escaped = arr[at - 1] == 0x5C
    if np.any(escaped & (arr[at - 2] == 0x5C)):
        return None  # '\\":' ends a key in a backslash, or escapes a quote after one
    if _SPACED_KEY_END.search(data):
        for match in _SPACED_KEY_END.finditer(data):
            quote = match.start()
            if data[quote - 1] != 0x5C or data[quote - 2] == 0x5C:  # not escaped in a string
                return None
    return int(len(at) - np.count_nonzero(escaped))


def _repeats_keys(raw: bytes) -> bool:
    """Whether some object of a JSON line repeats a key."""

    def unique(pairs: list[tuple[str, Any]]) -> dict:
        found = dict(pairs)
        if len(found) != len(pairs):
            raise _RepeatedKey
        return found

    try:
        json.loads(raw, object_pairs_hook=unique)
    except (_RepeatedKey, RecursionError):
        return True  # repeated, or too deep to tell: keep it as written either way
    return False


def _walk_json(value: Any) -> tuple[int, bool]:
    """Keys of every object in a parsed JSON value, and whether it holds a float of 2**63 or
    more (where an integer beyond 64 bits may have been)."""
    count, huge, stack = 0, False, [value]
    while stack:
        item = stack.pop()
        kind = type(item)
        if kind is dict:
            count += len(item)
            item = item.values()
        elif kind is not list:
            huge = huge or (kind is float and not -_HUGE < item < _HUGE)
            continue
        for v in item:
            kind = type(v)
            if kind is dict or kind is list:
                stack.append(v)
            elif kind is float and not -_HUGE < v < _HUGE:
                huge = True
    return count, huge


def _has_lone_surrogate(value: Any) -> bool:
    """Whether a key or string of a parsed JSON value holds half a surrogate pair."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            if not item.isascii():
                try:
                    item.encode("utf-8")
                except UnicodeEncodeError:
                    return True
        elif isinstance(item, dict):
            stack.extend(item)
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return False


def _nests_deeper(
    data: bytes, arr: np.ndarray, starts: np.ndarray, ends: np.ndarray, limit: int
) -> bool:
    """Whether a line of a block nests brackets deeper than `limit`."""
    opening = np.flatnonzero(np.bitwise_or(arr, 0x20) == 0x7B)  # '[' and '{'
    if len(opening) <= limit:
        return False
    per_line = np.bincount(np.searchsorted(starts, opening, "right") - 1, minlength=len(starts))
    for i in np.flatnonzero(per_line > limit):  # only these can; count exactly (strings skipped)
        depth = 0
        for token in _JSON_TOKEN.finditer(data, int(starts[i]), int(ends[i])):
            char = data[token.start()]
            if char in (0x5B, 0x7B):
                depth += 1
                if depth > limit:
                    return True
            elif char in (0x5D, 0x7D):
                depth -= 1
    return False


def _inexact_numbers(table: pa.Table) -> bool:
    """Whether a float column holds NaN, an infinity or a magnitude past 2**53: there Arrow's
    double may not be the number as written (integers beyond 64 bits become doubles)."""
    stack: list[Any] = list(table.columns)
    while stack:
        column = stack.pop()
        dtype = column.type
        if pa.types.is_floating(dtype):
            odd = pc.or_kleene(
                pc.invert(pc.is_finite(column)), pc.greater_equal(pc.abs(column), 2.0**53)
            )
            if pc.any(odd).as_py():
                return True
        elif pa.types.is_struct(dtype):
            stack.extend(pc.struct_field(column, [i]) for i in range(dtype.num_fields))
        elif pa.types.is_list(dtype) or pa.types.is_large_list(dtype):
            stack.append(pc.list_flatten(column))
    return False
