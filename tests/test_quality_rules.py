"""Tests for the Gopher / C4 heuristic quality rules."""

from __future__ import annotations

import random
from collections import Counter
from itertools import product
from pathlib import Path

import pytest

from gristmill.selectors.quality_rules import (
    RULES,
    RuleSpec,
    default_thresholds,
    document_stats,
    failed_rules,
)

WIKITEXT = (
    Path(__file__).resolve().parents[2] / "shared" / "data" / "wikitext2_raw_test" / "wiki.test.raw"
)

CLEAN_DOC = """\
The old mill stood beside a narrow river that turned its wheel through every season. Farmers \
brought sacks of wheat and barley from the surrounding valleys, and the miller weighed each load \
before grinding it into flour.

In winter the water sometimes froze along the banks, so the family kept a second stone ready \
inside a dry shed. Children from nearby villages liked to watch the gears, although their parents \
warned them to keep a safe distance.

Today the building is a small museum. Visitors can read letters written by former owners, examine \
tools used for repairs, and buy bread baked with grain that is still milled on site each Sunday!
"""


def _words(count: int, length: int = 5, skip: int = 0) -> list[str]:
    """`count` distinct lowercase words of `length` letters (no repeated n-grams among them)."""
    letters = "bcdfghjklmnpqrstvwxz"  # consonants only, so no accidental stop words
    gen = ("".join(p) for p in product(letters, repeat=length))
    for _ in range(skip):
        next(gen)
    return [next(gen) for _ in range(count)]


def _doc(words: list[str]) -> str:
    """Join words after two stop words, so min_stop_words is satisfied."""
    return " ".join(["the", "of", *words])


def _lines(n_lines: int, per_line: int, prefix: str = "", suffix: str = "") -> str:
    """Non-empty, distinct lines of distinct words, each wrapped in prefix/suffix."""
    words = _words(n_lines * per_line)
    rows = [words[i * per_line : (i + 1) * per_line] for i in range(n_lines)]
    rows[0] = ["the", "of", *rows[0]]
    return "\n".join(prefix + " ".join(row) + suffix for row in rows)


def _block_doc(block_len: int, times: int, n_fillers: int) -> str:
    """A block of `block_len` distinct 5-letter words repeated `times`, each followed by a
    distinct filler word, then the remaining fillers; all filler words are distinct."""
    block = _words(block_len, skip=10_000)
    fillers = _words(n_fillers)
    out: list[str] = []
    for i in range(times):
        out += [*block, fillers[i]]
    return _doc(out + fillers[times:])


def _fails(text: str, thresholds: dict[str, float | None] | None = None) -> list[str]:
    """Failed rules of `text` under `thresholds` (defaults when None)."""
    return failed_rules(document_stats(text), thresholds or default_thresholds())


def _dup_line_doc() -> str:
    """10 unique lines with a one-word line "okay" after the first 6.

    5 duplicate lines / 16 = 0.31 (> 0.3); duplicated chars 20 / (42 + 9*35 + 6*4) = 0.05.
    """
    rows = _lines(10, 6).split("\n")
    return "\n".join(
        rows[:1] + [x for row in rows[1:6] for x in ("okay", row)] + ["okay"] + rows[6:]
    )


def _dup_line_char_doc() -> str:
    """5 unique 9-word lines plus three 40-letter single-word lines, each appearing twice.

    dup lines 3/11 = 0.27 (passes 0.3); dup line chars 120 / (5*53 + 2 + 3 + 240) = 0.235 (> 0.2);
    mean word length stays below 10 and each long word is a distinct 1-gram, so no n-gram rule.
    """
    u = _lines(5, 9).split("\n")
    long1, long2, long3 = _words(3, length=40)
    # Interleaved so that no word 2-gram involving a long word repeats.
    return "\n".join([u[0], long1, u[1], long2, u[2], long3, u[3], long2, u[4], long1, long3])


# --- the rule table ----------------------------------------------------------------------------


def test_rule_table_is_consistent_with_stats() -> None:
    stats = document_stats(CLEAN_DOC)
    assert list(default_thresholds()) == list(RULES)
    for name, spec in RULES.items():
        assert isinstance(spec, RuleSpec)
        assert spec.op in {"min", "max"}
        assert spec.stat in stats, name
        assert name.startswith(spec.op + "_")
        assert spec.description


def test_gopher_defaults_and_c4_disabled() -> None:
    th = default_thresholds()
    assert th["min_words"] == 50
    assert th["max_words"] == 100_000
    assert th["max_symbol_word_ratio"] == 0.1
    assert th["max_top_2gram_char_ratio"] == 0.20
    assert th["max_top_4gram_char_ratio"] == 0.16
    assert th["max_dup_5gram_char_ratio"] == 0.15
    assert th["max_dup_10gram_char_ratio"] == 0.10
    for name in (
        "max_lorem_ipsum",
        "max_curly_brackets",
        "max_javascript_lines_ratio",
        "min_terminal_punct_lines_ratio",
    ):
        assert th[name] is None


# --- clean and empty documents -----------------------------------------------------------------


def test_clean_document_passes_all_default_rules() -> None:
    stats = document_stats(CLEAN_DOC)
    assert stats["n_words"] >= 60
    assert failed_rules(stats, default_thresholds()) == []


@pytest.mark.parametrize("text", ["", "   ", "\n\n \t\n"])
def test_empty_text_does_not_raise_and_fails_min_words(text: str) -> None:
    stats = document_stats(text)
    assert stats["n_words"] == 0
    assert stats["dup_line_ratio"] == 0.0
    assert stats["top_2gram_char_ratio"] == 0.0
    assert stats["dup_5gram_char_ratio"] == 0.0
    assert "min_words" in _fails(text)


# --- one crafted document per rule ---------------------------------------------------------------

# (rule, document): each document fails exactly that rule under the default thresholds.
VIOLATIONS = [
    ("min_words", _doc(_words(10))),
    ("max_words", _doc(_words(100_000))),
    ("min_mean_word_length", _doc(_words(60, length=2))),
    ("max_mean_word_length", _doc(_words(60, length=12))),
    # 10 hashtags in 62 words: 10 / 62 = 0.16
    (
        "max_symbol_word_ratio",
        _doc([("#" if i < 10 else "") + w for i, w in enumerate(_words(60))]),
    ),
    ("max_bullet_lines_ratio", _lines(15, 8, prefix="• ")),
    ("max_bullet_lines_ratio", _lines(15, 8, prefix="  - ")),
    ("max_bullet_lines_ratio", _lines(15, 8, prefix="* ")),
    # 10 of 10 lines end in an ellipsis; 10 ellipses / 122 words stays under the symbol limit
    ("max_ellipsis_lines_ratio", _lines(10, 12, suffix="...")),
    ("max_ellipsis_lines_ratio", _lines(10, 12, suffix="…")),
    # 20 numbers among 82 tokens: 62 / 82 = 0.76 alphabetic
    ("min_alpha_words_ratio", _doc(_words(60) + [str(1000 + i) for i in range(20)])),
    ("min_stop_words", " ".join(_words(60))),
    ("max_dup_line_ratio", _dup_line_doc()),
    ("max_dup_line_char_ratio", _dup_line_char_doc()),
    # chars below: block occurrences + 5-letter fillers + 5 for "the of".
    # 2-gram block x10: (5+5)*10 = 100 of 100 + 60*5 + 5 = 405 chars -> 0.247
    ("max_top_2gram_char_ratio", _block_doc(2, 10, 60)),
    # 3-gram block x8: 120 / 425 = 0.282 (top 2-gram 80 / 425 = 0.188 passes)
    ("max_top_3gram_char_ratio", _block_doc(3, 8, 60)),
    # 4-gram block x5: 100 / 455 = 0.220 (top 3-gram 75 / 455 = 0.165 passes)
    ("max_top_4gram_char_ratio", _block_doc(4, 5, 70)),
    # n-gram block x2 so that 10n / (10n + 5 + 5m) lies in (limit_n, limit_{n-1}]:
    # n=5: 50/305 = 0.164; n=6: 60/405 = 0.148; n=7: 70/505 = 0.139; n=8: 80/620 = 0.129;
    # n=9: 90/755 = 0.119; n=10: 100/915 = 0.109. Top n-grams (first 4 words x2) stay low.
    ("max_dup_5gram_char_ratio", _block_doc(5, 2, 50)),
    ("max_dup_6gram_char_ratio", _block_doc(6, 2, 68)),
    ("max_dup_7gram_char_ratio", _block_doc(7, 2, 86)),
    ("max_dup_8gram_char_ratio", _block_doc(8, 2, 107)),
    ("max_dup_9gram_char_ratio", _block_doc(9, 2, 132)),
    ("max_dup_10gram_char_ratio", _block_doc(10, 2, 162)),
]


def test_every_default_gopher_rule_has_a_violation_case() -> None:
    gopher = {name for name, spec in RULES.items() if spec.default is not None}
    assert gopher == {rule for rule, _ in VIOLATIONS}


@pytest.mark.parametrize(
    ("rule", "text"), VIOLATIONS, ids=[f"{r}-{i}" for i, (r, _) in enumerate(VIOLATIONS)]
)
def test_crafted_document_fails_exactly_its_rule(rule: str, text: str) -> None:
    assert _fails(text) == [rule]
    # Disabling just that rule lets the document through.
    assert _fails(text, {**default_thresholds(), rule: None}) == []


@pytest.mark.parametrize(
    ("rule", "threshold", "bad", "good"),
    [
        ("max_lorem_ipsum", 0, CLEAN_DOC + "\nLorem Ipsum dolor sit amet.", CLEAN_DOC),
        ("max_curly_brackets", 0, CLEAN_DOC + "\nfunction f() { return 1; }", CLEAN_DOC),
        ("max_javascript_lines_ratio", 0.1, CLEAN_DOC + "\nPlease enable JavaScript.", CLEAN_DOC),
        ("min_terminal_punct_lines_ratio", 0.5, _lines(8, 8), CLEAN_DOC),
    ],
)
def test_c4_rules_only_apply_when_enabled(rule: str, threshold: float, bad: str, good: str) -> None:
    assert rule not in _fails(bad)  # disabled by default
    enabled = {**default_thresholds(), rule: threshold}
    assert rule in _fails(bad, enabled)
    assert rule not in _fails(good, enabled)


# --- thresholds ----------------------------------------------------------------------------------


def test_none_threshold_disables_and_custom_thresholds_change_outcome() -> None:
    short = _doc(_words(10))  # 12 words
    assert _fails(short) == ["min_words"]
    assert _fails(short, {**default_thresholds(), "min_words": None}) == []
    assert _fails(short, {**default_thresholds(), "min_words": 12}) == []
    assert _fails(short, {**default_thresholds(), "min_words": 13}) == ["min_words"]
    # The clean document fails once a threshold is tightened beyond its statistic.
    stats = document_stats(CLEAN_DOC)
    assert failed_rules(stats, {"max_words": stats["n_words"] - 1}) == ["max_words"]
    assert failed_rules(stats, {"max_words": stats["n_words"]}) == []


def test_min_and_max_are_inclusive_bounds() -> None:
    stats = {spec.stat: 0.5 for spec in RULES.values()}
    assert failed_rules(stats, {"min_alpha_words_ratio": 0.5, "max_dup_line_ratio": 0.5}) == []
    assert failed_rules(stats, {"min_alpha_words_ratio": 0.51}) == ["min_alpha_words_ratio"]
    assert failed_rules(stats, {"max_dup_line_ratio": 0.49}) == ["max_dup_line_ratio"]


def test_missing_rules_are_skipped_and_unknown_rules_raise() -> None:
    stats = document_stats("")
    assert failed_rules(stats, {}) == []
    assert failed_rules(stats, {"max_words": 10}) == []
    with pytest.raises(ValueError, match="min_wrods"):
        failed_rules(stats, {"min_wrods": 50})


def test_failed_rules_follow_rule_order() -> None:
    failed = _fails("")
    assert failed == [name for name in RULES if name in failed]
    assert failed[0] == "min_words"


# --- hand-checked statistics ---------------------------------------------------------------------


def test_word_statistics_by_hand() -> None:
    # tokens: abc 123 a1 , x -> alphabetic: abc, a1, x = 3/5; the bare "," strips to nothing, so
    # mean length over abc(3) 123(3) a1(2) x(1) = 9/4.
    stats = document_stats("abc 123 a1 , x")
    assert stats["n_words"] == 5
    assert stats["alpha_words_ratio"] == pytest.approx(3 / 5)
    assert stats["mean_word_length"] == pytest.approx(9 / 4)
    # stop words after stripping punctuation and lowering: The, and, THE, to. ("of-course" is not)
    assert document_stats("The cat, and THE dog; of-course to.")["n_stop_words"] == 4
    # symbols: one '#', one '...', one '…' over 6 tokens
    assert document_stats("# a ... b … c")["symbol_word_ratio"] == pytest.approx(3 / 6)


def test_line_statistics_by_hand() -> None:
    # non-empty stripped lines: alpha beta alpha alpha gamma -> 2 duplicates of 5 lines;
    # chars 5+4+5+5+5 = 24, duplicated chars 10.
    stats = document_stats("alpha\nbeta\n\nalpha\n  alpha  \ngamma")
    assert stats["dup_line_ratio"] == pytest.approx(2 / 5)
    assert stats["dup_line_char_ratio"] == pytest.approx(10 / 24)
    assert document_stats("• one\n  - two\n*three\nfour\n")["bullet_lines_ratio"] == pytest.approx(
        3 / 4
    )
    assert document_stats("wait...\nno…\n\nyes")["ellipsis_lines_ratio"] == pytest.approx(2 / 3)
    stats = document_stats('End.\nWhy?\nno\n"Quote"\nJavaScript here')
    assert stats["terminal_punct_lines_ratio"] == pytest.approx(3 / 5)
    assert stats["javascript_lines_ratio"] == pytest.approx(1 / 5)
    stats = document_stats("lorem ipsum LOREM IPSUM {{ }")
    assert stats["lorem_ipsum"] == 2
    assert stats["curly_brackets"] == 2


def test_top_ngram_ratios_by_hand() -> None:
    # tokens aa b aa b ccc, lengths 2 1 2 1 3 -> 9 chars.
    # 2-grams: (aa b) x2, (b aa) x1, (b ccc) x1 -> top (aa b): (2+1) * 2 = 6 -> 6/9.
    # 3-grams: (aa b aa), (b aa b), (aa b ccc) all once -> 0.
    stats = document_stats("aa b aa b ccc")
    assert stats["top_2gram_char_ratio"] == pytest.approx(6 / 9)
    assert stats["top_3gram_char_ratio"] == 0.0
    assert stats["top_4gram_char_ratio"] == 0.0
    # the quick brown fox jumps over the quick brown fox jumps high: lengths
    # 3 5 5 3 5 4 3 5 5 3 5 4 = 50. Every n-gram of "the quick brown fox jumps" occurs twice;
    # ties go to the first-seen n-gram: 2-gram (the quick) 8*2 = 16, 3-gram 13*2 = 26,
    # 4-gram 16*2 = 32.
    stats = document_stats("the quick brown fox jumps over the quick brown fox jumps high")
    assert stats["top_2gram_char_ratio"] == pytest.approx(16 / 50)
    assert stats["top_3gram_char_ratio"] == pytest.approx(26 / 50)
    assert stats["top_4gram_char_ratio"] == pytest.approx(32 / 50)
    # 5-gram (the quick brown fox jumps), 21 chars, twice -> 42/50; no 6-gram repeats.
    assert stats["dup_5gram_char_ratio"] == pytest.approx(42 / 50)
    assert stats["dup_6gram_char_ratio"] == 0.0


def test_dup_ngram_ratios_by_hand() -> None:
    # a bb ccc dddd eeeee xxxxxx a bb ccc dddd eeeee: 15 + 6 + 15 = 36 chars; the 5-gram
    # (a..eeeee) occurs twice -> 30/36; every 6-gram is unique -> 0.
    stats = document_stats("a bb ccc dddd eeeee xxxxxx a bb ccc dddd eeeee")
    assert stats["dup_5gram_char_ratio"] == pytest.approx(30 / 36)
    assert stats["dup_6gram_char_ratio"] == 0.0
    # a bb a bb a bb a: 10 chars; 5-grams at positions 0 and 2 are equal (a bb a bb a) and
    # cover positions 0-4 and 2-6, i.e. every word once: 10/10 (counting overlaps twice would
    # give 14/10). 6-grams (a bb a bb a bb) and (bb a bb a bb a) differ -> 0.
    stats = document_stats("a bb a bb a bb a")
    assert stats["dup_5gram_char_ratio"] == pytest.approx(1.0)
    assert stats["dup_6gram_char_ratio"] == 0.0
    # A single word repeated 12 times: every n-gram repeats and covers everything.
    stats = document_stats("spam " * 12)
    assert all(stats[f"dup_{n}gram_char_ratio"] == 1.0 for n in range(5, 11))


def _naive_ngram_stats(tokens: list[str]) -> dict[str, float]:
    """Straightforward reference implementation of the n-gram statistics."""
    total = sum(map(len, tokens))
    out: dict[str, float] = {}
    for n in range(2, 11):
        grams = [tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1)]
        counts = Counter(grams)
        if n <= 4:
            best = max(counts.values(), default=0)
            top = next((g for g in grams if counts[g] == best), ())
            chars = sum(map(len, top)) * best if best > 1 else 0
            out[f"top_{n}gram_char_ratio"] = chars / total if total else 0.0
        if n >= 5:
            covered = [False] * len(tokens)
            for i, g in enumerate(grams):
                if counts[g] > 1:
                    covered[i : i + n] = [True] * n
            chars = sum(len(t) for t, c in zip(tokens, covered, strict=True) if c)
            out[f"dup_{n}gram_char_ratio"] = chars / total if total else 0.0
    return out


@pytest.mark.parametrize("seed", range(30))
def test_ngram_statistics_match_naive_reference(seed: int) -> None:
    rng = random.Random(seed)
    vocab = ["a", "bb", "ccc", "dd", "e", "ffff"][: rng.randint(1, 6)]
    tokens = [rng.choice(vocab) for _ in range(rng.randint(0, 80))]
    stats = document_stats(" ".join(tokens))
    for key, expected in _naive_ngram_stats(tokens).items():
        assert stats[key] == pytest.approx(expected), key


# --- real text -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def wikitext_lines() -> list[str]:
    if not WIKITEXT.exists():
        pytest.skip(f"WikiText-2 test split not found at {WIKITEXT}")
    return WIKITEXT.read_text(encoding="utf-8").splitlines()


def test_most_long_wikitext_paragraphs_pass(wikitext_lines: list[str]) -> None:
    long_lines = [line for line in wikitext_lines if len(line.split()) >= 60]
    assert len(long_lines) > 100
    thresholds = default_thresholds()
    passed = sum(not failed_rules(document_stats(line), thresholds) for line in long_lines)
    assert passed / len(long_lines) >= 0.5


def test_repeated_wikitext_line_fails_duplicate_line_rules(wikitext_lines: list[str]) -> None:
    line = next(line for line in wikitext_lines if len(line.split()) >= 60 and not _fails(line))
    failed = _fails("\n".join([line] * 20))
    assert "max_dup_line_ratio" in failed
    assert "max_dup_line_char_ratio" in failed
