"""The `lines` transform: line-level cleaning as in C4 and FineWeb (METHODS.md).

Each non-blank line is dropped by the first rule it fails, in this order:
- `javascript`: it mentions "javascript" (C4: "enable JavaScript" notices);
- `policy`: cookie, privacy-policy or terms-of-use boilerplate (datatrove's C4 substrings);
- `lorem_ipsum`: placeholder text (C4 drops the whole page; a line is enough here, the `quality`
  selector judges what is left);
- `repeated`: the line appears on at least `repeated_min_pages` pages of its domain and on at
  least `repeated_min_share` of them (site boilerplate: menus, footers, bylines). Lines are
  compared after folding case and whitespace and mapping digits to 0 (as CCNet does), so
  "(c) 2023" and "(c) 2024" are one line. This rule needs a pass over the corpus first;
- `word_too_long`: a word longer than `max_word_length` characters (C4: 1000);
- `too_few_words`: fewer than `min_words` words (C4: 3). Words are whitespace-separated tokens,
  and each Han, kana or other ideographic character counts as a word, so Chinese and Japanese
  lines are not all "too short";
- `no_terminal_punctuation`: it does not end in . ! ? " ' (or their full-width and curly forms);
  a line ending in an ellipsis does not count as ended (datatrove's C4 filter).
Blank lines are kept between kept lines, runs of them folded to one; the record counts removed
lines per rule, `removed_lines` and `removed_chars`.
"""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path
from typing import ClassVar

import duckdb
import numpy as np
import pyarrow as pa
import xxhash
from pydantic import Field

from gristmill.storage.files import sql_files
from gristmill.transforms.base import Rewrite, Transform, TransformConfig

TERMINAL = (".", "!", "?", '"', "'", "\u201d", "\u2019", "\u3002", "\uff01", "\uff1f", "\u00bb")
ELLIPSIS = ("...", "\u2026")
POLICY = (
    "terms of use",
    "privacy policy",
    "cookie policy",
    "uses cookies",
    "use of cookies",
    "use cookies",
    "accept cookies",
    "accept all cookies",
    "cookie settings",
)
IDEOGRAPHS = re.compile(r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")
WHITESPACE = re.compile(r"\s+")
DIGITS = re.compile(r"\d")
BLANK_RUNS = re.compile(r"\n{3,}")


class LinesConfig(TransformConfig):
    """Thresholds of the line rules (None or False disables a rule)."""

    javascript: bool = True
    policy: bool = True
    lorem_ipsum: bool = True
    repeated_min_pages: int | None = Field(3, ge=2, description="None: no corpus pass")
    repeated_min_share: float = Field(0.1, ge=0.0, le=1.0)
    max_word_length: int | None = Field(1000, ge=1)
    min_words: int | None = Field(3, ge=1)
    terminal_punctuation: bool = True


def repeat_key(domain: str, line: str) -> int:
    """The 64-bit key of a line on a domain, after folding case, whitespace and digits."""
    folded = DIGITS.sub("0", WHITESPACE.sub(" ", line).strip().casefold())
    return xxhash.xxh3_64_intdigest(f"{domain}\x00{folded}".encode())


def count_words(line: str, words: list[str] | None = None) -> int:
    """Whitespace-separated words (`words`: the line split already), each ideographic
    character counted as one word."""
    if line.isascii() or not IDEOGRAPHS.search(line):
        return len(line.split() if words is None else words)
    ideographs = len(IDEOGRAPHS.findall(line))
    return ideographs + len(IDEOGRAPHS.sub(" ", line).split())


class LinesTransform(Transform):
    """Drop junk lines: boilerplate, lines without an ending, too few words, repeated lines."""

    name: ClassVar[str] = "lines"
    version: ClassVar[str] = "1"
    Config = LinesConfig

    config: LinesConfig

    def __init__(self, config: LinesConfig) -> None:
        super().__init__(config)
        self.repeated: frozenset[int] | None = None  # set by fit

    def needs_statistics(self) -> bool:
        """The repeated-line rule needs every page's lines first."""
        return self.config.repeated_min_pages is not None

    def shard_statistics(self, documents: pa.Table) -> pa.Table:
        """domain, line key and the number of the shard's pages that have that line."""
        counts: Counter[tuple[str, int]] = Counter()
        for text, domain in zip(
            documents["text"].to_pylist(), documents["domain"].to_pylist(), strict=True
        ):
            domain = domain or ""
            keys = {repeat_key(domain, line) for line in text.split("\n") if line.strip()}
            counts.update((domain, key) for key in keys)
        return pa.table(
            {
                "domain": pa.array([d for d, _ in counts], pa.string()),
                "key": pa.array(np.fromiter((k for _, k in counts), np.uint64, len(counts))),
                "pages": pa.array(list(counts.values()), pa.int64()),
            }
        )

    def fit(self, statistics: list[Path], documents: list[Path]) -> str:
        """Keep the keys of lines repeated on enough of their domain's pages; their hash."""
        config = self.config
        keys: list[int] = []
        if statistics and documents:
            query = (
                "with pages as (select domain, count(*) as n from "
                f"read_parquet({sql_files(documents)}) group by domain), "
                "lines as (select domain, key, sum(pages) as pages from "
                f"read_parquet({sql_files(statistics)}) group by domain, key) "
                "select key from lines join pages using (domain) "
                "where lines.pages >= ? and lines.pages >= ? * pages.n order by key"
            )
            with duckdb.connect() as con:
                found = con.execute(
                    query, [config.repeated_min_pages, config.repeated_min_share]
                ).fetchall()
            keys = [int(k) for (k,) in found]
        self.repeated = frozenset(keys)
        digest = np.array(keys, np.uint64).tobytes()
        return f"{len(keys)}:{xxhash.xxh3_64_hexdigest(digest)}"

    def apply(self, text: str, domain: str) -> Rewrite:
        """The kept lines; counts of removed lines per rule."""
        if self.needs_statistics() and self.repeated is None:
            raise RuntimeError("lines: fit() must run before apply() (repeated-line rule)")
        kept: list[str] = []
        changes: Counter[str] = Counter()
        for line in text.split("\n"):
            if not line.strip():
                kept.append("")
                continue
            reason = self._failed_rule(line, domain or "")
            if reason is None:
                kept.append(line)
            else:
                changes[reason] += 1
                changes["removed_lines"] += 1
                changes["removed_chars"] += len(line) + 1
        if not changes:
            return Rewrite(text, {})
        cleaned = BLANK_RUNS.sub("\n\n", "\n".join(kept)).strip("\n")
        return Rewrite(cleaned, dict(changes))

    def _failed_rule(self, line: str, domain: str) -> str | None:
        config = self.config
        lowered = line.lower()
        if config.javascript and "javascript" in lowered:
            return "javascript"
        if config.policy and any(p in lowered for p in POLICY):
            return "policy"
        if config.lorem_ipsum and "lorem ipsum" in lowered:
            return "lorem_ipsum"
        if self.repeated and repeat_key(domain, line) in self.repeated:
            return "repeated"
        words = line.split()
        longest = config.max_word_length
        if longest is not None and len(line) > longest and any(len(w) > longest for w in words):
            return "word_too_long"
        if config.min_words is not None and count_words(line, words) < config.min_words:
            return "too_few_words"
        if config.terminal_punctuation:
            end = line.rstrip()
            if not end.endswith(TERMINAL) or end.endswith(ELLIPSIS):
                return "no_terminal_punctuation"
        return None
