"""Gopher and C4 heuristic document-quality rules as pure functions.

The Gopher rules follow Rae et al. (2021), "Scaling Language Models", appendix A, with the
default thresholds used by datatrove, NeMo Curator and Dolma. The C4 rules follow Raffel et
al. (2020); they are disabled by default (threshold ``None``) because they are aimed at web
crawls and would reject much legitimate prose or code.

Convention: a rule with op ``"min"`` passes iff ``stat >= threshold``; a rule with op ``"max"``
passes iff ``stat <= threshold``. A threshold of ``None`` disables the rule.

Definitions (kept deliberately simple so they are cheap and easy to reason about):

* tokens: ``text.split()``. ``n_words`` counts every token, and is the denominator of the
  symbol and alphabetic ratios (as in Dolma).
* length / stop-word tests use each token with ``string.punctuation`` stripped from both ends,
  like Gopher; tokens that become empty (pure punctuation such as ``,`` or ``--``) are left out
  of the mean word length.
* word n-grams use the raw tokens; an n-gram's characters are the sum of its tokens' lengths and
  the denominator is the total length of all tokens (whitespace excluded). Top n-gram
  occurrences may overlap (``a a a``), so that ratio can exceed 1, as in datatrove; duplicate
  n-gram ratios count each word position once and never exceed 1.
* lines: ``text.splitlines()``; only non-empty lines (after ``strip()``) count, and duplicate
  lines are compared after ``strip()``.
"""

from __future__ import annotations

import re
import string
from collections import Counter
from dataclasses import dataclass
from itertools import accumulate, compress, count
from operator import ne

__all__ = [
    "RULES",
    "RuleSpec",
    "default_thresholds",
    "document_stats",
    "failed_rules",
]


@dataclass(frozen=True)
class RuleSpec:
    """One quality rule: which statistic it reads, its direction and default threshold."""

    stat: str
    op: str  # "min": pass iff stat >= threshold; "max": pass iff stat <= threshold
    default: float | None
    description: str


_PUNCT = string.punctuation
_STOP_WORDS = frozenset({"the", "be", "to", "of", "and", "that", "have", "with"})
_BULLETS = ("•", "●", "○", "■", "□", "▪", "▫", "‣", "⁃", "◦", "-", "*")
_ELLIPSES = ("...", "…")
_TERMINAL_PUNCT = (".", "!", "?", '"', "'")
_LOREM_RE = re.compile(r"lorem ipsum", re.IGNORECASE)
_JAVASCRIPT_RE = re.compile(r"javascript", re.IGNORECASE)
_TOP_NGRAM_NS = (2, 3, 4)
_DUP_NGRAM_NS = (5, 6, 7, 8, 9, 10)


def _build_rules() -> dict[str, RuleSpec]:
    """Assemble the ordered rule table."""
    rules: dict[str, RuleSpec] = {
        "min_words": RuleSpec("n_words", "min", 50, "at least this many whitespace tokens"),
        "max_words": RuleSpec("n_words", "max", 100_000, "at most this many whitespace tokens"),
        "min_mean_word_length": RuleSpec(
            "mean_word_length", "min", 3, "mean word length (punctuation stripped) lower bound"
        ),
        "max_mean_word_length": RuleSpec(
            "mean_word_length", "max", 10, "mean word length (punctuation stripped) upper bound"
        ),
        "max_symbol_word_ratio": RuleSpec(
            "symbol_word_ratio", "max", 0.1, "('#' + '...' + '…' occurrences) / words"
        ),
        "max_bullet_lines_ratio": RuleSpec(
            "bullet_lines_ratio", "max", 0.9, "fraction of non-empty lines starting with a bullet"
        ),
        "max_ellipsis_lines_ratio": RuleSpec(
            "ellipsis_lines_ratio", "max", 0.3, "fraction of non-empty lines ending in an ellipsis"
        ),
        "min_alpha_words_ratio": RuleSpec(
            "alpha_words_ratio", "min", 0.8, "fraction of words with an alphabetic character"
        ),
        "min_stop_words": RuleSpec(
            "n_stop_words", "min", 2, "count of Gopher stop words (the, be, to, of, ...)"
        ),
        "max_dup_line_ratio": RuleSpec(
            "dup_line_ratio", "max", 0.3, "fraction of non-empty lines repeating an earlier line"
        ),
        "max_dup_line_char_ratio": RuleSpec(
            "dup_line_char_ratio", "max", 0.2, "fraction of line characters in repeated lines"
        ),
    }
    for n, limit in zip(_TOP_NGRAM_NS, (0.20, 0.18, 0.16), strict=True):
        rules[f"max_top_{n}gram_char_ratio"] = RuleSpec(
            f"top_{n}gram_char_ratio", "max", limit, f"word characters in the top {n}-gram"
        )
    for n, limit in zip(_DUP_NGRAM_NS, (0.15, 0.14, 0.13, 0.12, 0.11, 0.10), strict=True):
        rules[f"max_dup_{n}gram_char_ratio"] = RuleSpec(
            f"dup_{n}gram_char_ratio", "max", limit, f"word characters in repeated {n}-grams"
        )
    rules.update(
        {
            "max_lorem_ipsum": RuleSpec(
                "lorem_ipsum", "max", None, "C4: occurrences of 'lorem ipsum' (suggested 0)"
            ),
            "max_curly_brackets": RuleSpec(
                "curly_brackets", "max", None, "C4: occurrences of '{' (suggested 0)"
            ),
            "max_javascript_lines_ratio": RuleSpec(
                "javascript_lines_ratio", "max", None, "C4: fraction of lines with 'javascript'"
            ),
            "min_terminal_punct_lines_ratio": RuleSpec(
                "terminal_punct_lines_ratio",
                "min",
                None,
                "C4: fraction of non-empty lines ending in . ! ? \" or '",
            ),
        }
    )
    return rules


RULES: dict[str, RuleSpec] = _build_rules()


def default_thresholds() -> dict[str, float | None]:
    """Rule name -> default threshold."""
    return {name: spec.default for name, spec in RULES.items()}


def _ratio(num: float, den: float) -> float:
    """num / den, or 0.0 when den is zero (empty documents must not raise)."""
    return num / den if den else 0.0


def _word_stats(tokens: list[str]) -> dict[str, float]:
    """Word count, mean word length, alphabetic ratio and stop-word count."""
    # A plain loop: on CPython 3.11 it beats map()/filter pipelines for this mix of tests.
    n_len_words = 0
    total_len = 0
    n_alpha = 0
    n_stop = 0
    stop_words = _STOP_WORDS
    for tok in tokens:
        word = tok.strip(_PUNCT)
        if not word:
            continue  # pure punctuation: no letters, not a stop word, no length
        n_len_words += 1
        total_len += len(word)
        # whole-word isalpha() is the common fast path; otherwise look at each character
        if word.isalpha() or any(map(str.isalpha, word)):
            n_alpha += 1
        if word.lower() in stop_words:
            n_stop += 1
    n = len(tokens)
    return {
        "n_words": float(n),
        "mean_word_length": _ratio(total_len, n_len_words),
        "alpha_words_ratio": _ratio(n_alpha, n),
        "n_stop_words": float(n_stop),
    }


def _line_stats(text: str) -> dict[str, float]:
    """Bullet, ellipsis, duplicate-line, javascript and terminal-punctuation line ratios."""
    n_lines = 0
    n_chars = 0
    n_bullet = 0
    n_ellipsis = 0
    n_terminal = 0
    n_javascript = 0
    n_dup = 0
    dup_chars = 0
    seen: set[str] = set()
    for raw in text.splitlines():
        line = raw.strip()
        if not line:
            continue
        n_lines += 1
        n_chars += len(line)
        if line.startswith(_BULLETS):
            n_bullet += 1
        if line.endswith(_ELLIPSES):
            n_ellipsis += 1
        if line.endswith(_TERMINAL_PUNCT):
            n_terminal += 1
        if _JAVASCRIPT_RE.search(line):
            n_javascript += 1
        if line in seen:
            n_dup += 1
            dup_chars += len(line)
        else:
            seen.add(line)
    return {
        "n_lines": float(n_lines),
        "bullet_lines_ratio": _ratio(n_bullet, n_lines),
        "ellipsis_lines_ratio": _ratio(n_ellipsis, n_lines),
        "dup_line_ratio": _ratio(n_dup, n_lines),
        "dup_line_char_ratio": _ratio(dup_chars, n_chars),
        "javascript_lines_ratio": _ratio(n_javascript, n_lines),
        "terminal_punct_lines_ratio": _ratio(n_terminal, n_lines),
    }


def _top_ngram_chars(ids: list[int], n: int, prefix: list[int]) -> int:
    """Characters in all occurrences of the most frequent n-gram, or 0 if none repeats."""
    if not ids:
        return 0
    # Ties go to the n-gram that occurs first (Counter keeps first-seen order).
    ((first, count_),) = Counter(ids).most_common(1)
    return (prefix[first + n] - prefix[first]) * count_ if count_ > 1 else 0


def _covered_chars(starts: list[int], n: int, prefix: list[int]) -> int:
    """Characters of word positions covered by n-grams starting at sorted `starts`, once each."""
    covered = 0
    end = 0  # first word position not yet counted
    for i in starts:
        stop = i + n
        first = i if i > end else end
        if stop > first:
            covered += prefix[stop] - prefix[first]
        end = stop
    return covered


def _dup_ngram_chars(ids: list[int], n: int, prefix: list[int]) -> int:
    """Characters of word positions covered by any n-gram occurring more than once."""
    # An n-gram repeats iff some later position carries its first position as id.
    repeated = set(compress(ids, map(ne, ids, count())))
    starts = list(compress(count(), map(repeated.__contains__, ids)))
    return _covered_chars(starts, n, prefix)


def _ngram_stats(tokens: list[str]) -> dict[str, float]:
    """Top n-gram character ratios (n = 2..4) and duplicate n-gram ratios (n = 5..10)."""
    prefix = list(accumulate(map(len, tokens), initial=0))
    total = prefix[-1]
    out = {f"top_{n}gram_char_ratio": 0.0 for n in _TOP_NGRAM_NS}
    out.update({f"dup_{n}gram_char_ratio": 0.0 for n in _DUP_NGRAM_NS})
    # ids[i] is the first position at which the n-gram starting at i occurs, so equal n-grams
    # share an id. Each n is built from the (n-1)-gram ids in C (map/zip/dict), which is much
    # faster than hashing n-tuples of strings for every n.
    unigram = list(map({}.setdefault, tokens, count()))
    ids = unigram
    for n in range(2, _DUP_NGRAM_NS[-1] + 1):
        first_seen: dict[tuple[int, int], int] = {}
        ids = list(map(first_seen.setdefault, zip(ids, unigram[n - 1 :], strict=False), count()))
        if len(first_seen) == len(ids):
            break  # no n-gram repeats, hence no longer n-gram repeats either
        if n in _TOP_NGRAM_NS:
            out[f"top_{n}gram_char_ratio"] = _ratio(_top_ngram_chars(ids, n, prefix), total)
        if n in _DUP_NGRAM_NS:
            out[f"dup_{n}gram_char_ratio"] = _ratio(_dup_ngram_chars(ids, n, prefix), total)
    return out


def document_stats(text: str) -> dict[str, float]:
    """All statistics the rules need, computed in one pass where possible."""
    tokens = text.split()
    stats = _word_stats(tokens)
    n_symbols = text.count("#") + text.count("...") + text.count("…")
    stats["symbol_word_ratio"] = _ratio(n_symbols, len(tokens))
    stats.update(_line_stats(text))
    stats.update(_ngram_stats(tokens))
    stats["lorem_ipsum"] = float(len(_LOREM_RE.findall(text)))
    stats["curly_brackets"] = float(text.count("{"))
    return stats


def failed_rules(stats: dict[str, float], thresholds: dict[str, float | None]) -> list[str]:
    """Names of the rules whose threshold the stats violate; rules with threshold None are skipped.

    Rules absent from ``thresholds`` are skipped too; unknown rule names raise ``ValueError``
    so that a misspelt rule name in a config is reported instead of silently ignored.
    """
    unknown = sorted(set(thresholds) - RULES.keys())
    if unknown:
        raise ValueError(f"unknown quality rule(s): {', '.join(unknown)}")
    failed = []
    for name, spec in RULES.items():
        threshold = thresholds.get(name)
        if threshold is None:
            continue
        value = stats[spec.stat]
        if (spec.op == "min" and value < threshold) or (spec.op == "max" and value > threshold):
            failed.append(name)
    return failed
