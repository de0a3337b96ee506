"""Transforms: the pure text rewrites (pii, normalize, lines) and the library transform step
(derived corpus, lineage, cache, resume, rebuild, examples, catalog record)."""

from __future__ import annotations

import json
import unicodedata
from pathlib import Path

import duckdb
import pyarrow.parquet as pq
import pytest
from conftest import write_jsonl

from gristmill import pipeline
from gristmill.errors import InputError
from gristmill.pipeline import ThreadMap
from gristmill.pipeline.transformation import (
    CHANGES_COLUMN,
    chunk_key,
    lineage,
    transform,
    transform_examples,
    transform_unit,
)
from gristmill.pipeline.units import score_unit
from gristmill.storage import catalog, queries
from gristmill.storage.readers import IngestOptions
from gristmill.storage.workspace import Workspace
from gristmill.transforms import TransformSpec, get, parse_specs, with_params
from gristmill.transforms.lines import count_words


def _pii(**params: object):
    return get("pii").from_params(params)


# -- pii -----------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("text", "expected", "changes"),
    [
        ("mail a.b+c@sub.example.co.uk now", "mail <EMAIL> now", {"email": 1}),
        ("Write to Jo@Example.COM.", "Write to <EMAIL>.", {"email": 1}),
        ("root@localhost has no domain", "root@localhost has no domain", {}),
        ("npm i left-pad@1.3.0", "npm i left-pad@1.3.0", {}),
        ("server 8.8.8.8 answered", "server <IP> answered", {"ipv4": 1}),
        ("ends with 1.1.1.1.", "ends with <IP>.", {"ipv4": 1}),
        ("private 10.0.0.1, 192.168.1.20 and 127.0.0.1", None, {}),
        ("documentation range 192.0.2.7", None, {}),
        ("version 1.2.3.4 is out", None, {}),
        ("release 8.8.8.8", None, {}),
        ("tag v1.2.3.4 and 1.2.3.4.5", None, {}),
        ("not an address 999.1.1.1 or 01.02.03.04", None, {}),
        ("Contents\n12.6.2.1. Compiling\n  6.2.4.1. exim4", None, {}),
        (
            "hosts:\n8.8.4.4 dns\nmulticast 224.0.0.251",
            "hosts:\n<IP> dns\nmulticast 224.0.0.251",
            {"ipv4": 1},
        ),
        ("v6 2606:4700:4700::1111 here", "v6 <IP> here", {"ipv6": 1}),
        ("loopback ::1 and docs 2001:db8::1", None, {}),
        ("multicast ff02::1, slice a[::2]", None, {}),
        ("at 12:30:45 use std::vector", None, {}),
        ("call +44 20 7946 0958 today", "call <PHONE> today", {"phone": 1}),
        ("or (415) 555-0132, 415-555-0132 or 415.555.0132", None, {"phone": 3}),
        ("dated 2021-10-12, ISBN 978-3-16-148410-0, id 4155550132", None, {}),
    ],
)
def test_pii_masks_addresses_and_numbers_and_keeps_lookalikes(
    text: str, expected: str | None, changes: dict
) -> None:
    result = _pii().apply(text, "d")
    assert result.changes == changes
    if expected is not None:
        assert result.text == expected
    elif not changes:
        assert result.text == text
    else:
        assert result.text.count("<PHONE>") == changes["phone"]


def test_pii_tokens_and_private_addresses_are_configurable() -> None:
    masker = _pii(email_token="[e]", ip_token="[ip]", public_ips_only=False, phones=False)
    result = masker.apply("x@y.org from 10.0.0.1 or fe80::1, tel +1 415 555 0132", "d")
    assert result.text == "[e] from [ip] or [ip], tel +1 415 555 0132"
    assert result.changes == {"email": 1, "ipv4": 1, "ipv6": 1}


# -- normalize -----------------------------------------------------------------------------------
def test_normalize_repairs_mojibake_and_composes_to_nfc() -> None:
    normalizer = get("normalize").from_params({})
    result = normalizer.apply("The café doesnâ€™t open &amp; ﬁnally Cafe\u0301", "d")
    assert result.text == "The café doesn't open & finally Café"
    assert result.changes["changed"] == 1
    assert {"decode_inconsistent_utf8", "unescape_html", "normalization"} <= set(result.changes)
    assert normalizer.apply("plain text.", "d").changes == {}


def test_normalize_without_a_normal_form_leaves_combining_marks() -> None:
    result = get("normalize").from_params({"normalization": None}).apply("Cafe\u0301", "d")
    assert result.text == "Cafe\u0301" and unicodedata.is_normalized("NFD", result.text)


# -- lines ---------------------------------------------------------------------------------------
def _lines(**params: object):
    return get("lines").from_params({"repeated_min_pages": None, **params})


def test_lines_drops_each_kind_of_junk_line_and_counts_it() -> None:
    text = "\n".join(
        [
            "A proper sentence stays in the text.",
            "Please enable JavaScript to use this site.",
            "This site uses cookies to improve your experience.",
            "Lorem ipsum dolor sit amet, consectetur adipiscing.",
            "Home",
            "A line without an ending at all",
            "Wait for it...",
            "",
            "",
            "",
            "\u201cA quoted line ends in a curly quote.\u201d",
            "这是一个完整的中文句子。",
        ]
    )
    result = _lines().apply(text, "d")
    assert result.text == (
        "A proper sentence stays in the text.\n\n"
        "\u201cA quoted line ends in a curly quote.\u201d\n这是一个完整的中文句子。"
    )
    assert result.changes == {
        "javascript": 1, "policy": 1, "lorem_ipsum": 1, "too_few_words": 1,
        "no_terminal_punctuation": 2, "removed_lines": 6,
        "removed_chars": result.changes["removed_chars"],
    }  # fmt: skip


def test_lines_thresholds_are_configurable_and_none_disables_a_rule() -> None:
    text = "Short one.\nno ending here but many words in it"
    assert _lines(min_words=None, terminal_punctuation=False).apply(text, "d").text == text
    assert _lines(min_words=5).apply(text, "d").changes["too_few_words"] == 1
    assert _lines(max_word_length=4).apply("Some words are loooong.", "d").changes == {
        "word_too_long": 1, "removed_lines": 1, "removed_chars": 24,
    }  # fmt: skip


def test_words_are_counted_for_unspaced_scripts() -> None:
    assert count_words("three plain words") == 3
    assert count_words("日本語の文") == 5
    assert count_words("Python 3 を使う") == 5


def test_lines_needs_its_corpus_pass_before_apply() -> None:
    with pytest.raises(RuntimeError, match="fit"):
        get("lines").from_params({}).apply("A line.", "d")


# -- specs ---------------------------------------------------------------------------------------
def test_specs_parse_from_the_cli_and_a_recipe_and_refuse_bad_ones() -> None:
    assert [s.name for s in parse_specs("pii, normalize,lines")] == ["pii", "normalize", "lines"]
    normalize = ("normalize", {"normalization": None})
    specs = parse_specs(["pii", {"lines": {"min_words": 5}}, normalize])
    assert specs[1] == TransformSpec(name="lines", params={"min_words": 5})
    assert with_params(specs, {"lines.min_words": 2})[1].params == {"min_words": 2}
    assert parse_specs([s.model_dump() for s in specs]) == specs  # as a flow parameter
    with pytest.raises(InputError, match="unknown transform 'pi'"):
        parse_specs("pi")[0].build()
    with pytest.raises(InputError, match="transform lines: min_word"):
        TransformSpec(name="lines", params={"min_word": 2}).build()
    with pytest.raises(InputError, match="given twice"):
        parse_specs("pii,pii")
    with pytest.raises(InputError, match="not among"):
        with_params(specs, {"dedup.x": 1})
    with pytest.raises(InputError, match="no transforms"):
        parse_specs("")


# -- the transform step ----------------------------------------------------------------------
WORDS = ("oats", "barley", "rye", "wheat", "spelt", "millet", "sorghum", "maize", "rice",
         "buckwheat", "quinoa", "teff", "emmer", "einkorn", "fonio", "kamut", "triticale",
         "amaranth", "chia", "flax", "hemp", "lupin", "pea", "bean")  # fmt: skip


def _word(i: int) -> str:
    return WORDS[i % len(WORDS)] + "s" * (i // len(WORDS))


def _page(site: str, i: int) -> str:
    """A page of a site: its own sentences, a menu, a footer repeated on every page."""
    return "\n".join(
        [
            f"Site {site} navigation menu",
            f"This article of {site} is about {_word(i)}: the mill ground it all week.",
            f"Mail the miller at {_word(i)}@mill-{site}.org for a ledger of {_word(i)}.",
            f"Every page of {site} ends with this long footer sentence, copyright {2000 + i}.",
        ]
    )


def _corpus(tmp_path: Path, files: int = 3, per_file: int = 6) -> Workspace:
    """An ingested corpus `web`: one shard per file, two sites, plus a page that is all junk."""
    ws = Workspace(tmp_path / "ws")
    paths = []
    for f in range(files):
        records = [
            {"text": _page(f"s{i % 2}", f * per_file + i), "site": f"s{i % 2}"}
            for i in range(per_file)
        ]
        if f == 0:
            records.append({"text": "Home\nLogin\nEnable javascript", "site": "s0"})
        paths.append(str(write_jsonl(tmp_path / "raw" / f"part-{f}.jsonl", records)))
    pipeline.ingest(ws, paths, "web", IngestOptions(domain_field="site"))
    return ws


def _docs(ws: Workspace, corpus: str) -> dict[int, dict]:
    with ws.catalog(read_only=True) as con:
        files = ws.shard_files(con, corpus)
    rows = [r for f in files for r in pq.read_table(f).to_pylist()]
    return {r["doc_id"]: r for r in rows}


def test_transform_makes_a_derived_corpus_that_keeps_ids_and_counts_what_it_dropped(
    tmp_path: Path,
) -> None:
    ws = _corpus(tmp_path)
    report = transform(ws, "web", "pii,normalize,lines", "web-clean")
    parent, derived = _docs(ws, "web"), _docs(ws, "web-clean")
    assert set(derived) < set(parent) and len(derived) == 18
    assert report.documents_read == 19 and report.documents == 18 and report.dropped == 1
    assert report.dropped_by_reason == {"emptied_by_lines": 1}
    some = next(iter(derived.values()))
    assert some["text"].startswith("This article") and "<EMAIL>" in some["text"]
    assert "navigation menu" not in some["text"] and "footer" not in some["text"]
    assert some["source"] == parent[some["doc_id"]]["source"]  # lineage to the raw input too
    changes = json.loads(some[CHANGES_COLUMN])
    assert changes["pii"] == {"email": 1}
    assert changes["lines"] == {"repeated": 2, "removed_lines": 2,
                                "removed_chars": changes["lines"]["removed_chars"]}  # fmt: skip
    assert report.changes["pii"] == {"email": 18}
    assert report.changed_documents == {"lines": 18, "pii": 18}
    # A normal corpus: listed, reconciled stats, rejects kept, selectable.
    stats = queries.corpus_stats(ws, "web-clean")
    assert stats["reconciles"] and stats["rejects_by_reason"] == {"emptied_by_lines": 1}
    listed = {r["corpus"]: r for r in queries.list_corpora(ws)}
    assert listed["web-clean"]["documents"] == 18 and listed["web-clean"]["rejected"] == 1
    curation = pipeline.curate(ws, "web-clean", "quality", name="clean-q")
    assert curation.record is not None and curation.record["n_candidates"] == 18
    rejects = queries.run_sql(ws, 'select reason, raw from "web-clean__rejects"')["rows"]
    assert rejects[0][0] == "emptied_by_lines" and b"Enable javascript" in rejects[0][1]
    # The catalog says what made it.
    [record] = lineage(ws, "web-clean")
    assert record["parent"] == "web" and record["status"] == "done"
    assert [t["name"] for t in record["transforms"]] == ["pii", "normalize", "lines"]
    assert record["transforms"][2]["params"]["repeated_min_pages"] == 3
    assert record["code_version"].startswith("gristmill")
    assert lineage(ws, "web") == []


def test_repeated_lines_are_counted_per_domain_after_the_transforms_before(
    tmp_path: Path,
) -> None:
    ws = Workspace(tmp_path / "ws")
    shared = "Contact us at desk@example.org for every question you have."
    records = [
        {"text": f"The unique story of {_word(i)} is told here in full.\n{shared}", "site": "a"}
        for i in range(4)
    ] + [{"text": f"The only page of b tells its own story.\n{shared}", "site": "b"}]
    pipeline.ingest(ws, [str(write_jsonl(tmp_path / "r.jsonl", records))], "web",
                    IngestOptions(domain_field="site"))  # fmt: skip
    transform(ws, "web", ["pii", "lines"], "clean")
    texts = {r["domain"]: r["text"] for r in _docs(ws, "clean").values()}
    assert texts["a"].startswith("The unique story") and "Contact" not in texts["a"]
    assert "Contact us at <EMAIL>" in texts["b"]  # once on b: not boilerplate there


def test_a_rerun_reuses_every_shard_and_new_settings_rebuild_the_corpus(tmp_path: Path) -> None:
    ws = _corpus(tmp_path)
    first = transform(ws, "web", "pii,lines", "clean")
    assert (first.shards_done, first.shards_reused) == (3, 0)
    again = transform(ws, "web", "pii,lines", "clean")
    assert (again.shards_done, again.shards_reused, again.config_hash) == (
        0, 3, first.config_hash,
    )  # fmt: skip
    old_files = sorted(ws.corpus_dir("clean").glob("*.parquet"))
    changed = transform(ws, "web", ["pii", {"lines": {"min_words": 1}}], "clean")
    assert (changed.shards_done, changed.shards_dropped) == (3, 3)
    assert not any(p.exists() for p in old_files)
    assert queries.corpus_stats(ws, "clean")["records_read"] == 19  # not 38
    assert changed.changes["lines"].get("too_few_words", 0) == 0


def test_a_grown_parent_adds_shards_and_refits_a_corpus_wide_transform(tmp_path: Path) -> None:
    ws = _corpus(tmp_path, files=2)
    transform(ws, "web", "pii", "masked")
    transform(ws, "web", "lines", "lined")
    options = IngestOptions(domain_field="site")
    more = [{"text": _page("s0", 100 + i), "site": "s0"} for i in range(3)]
    pipeline.ingest(ws, [str(write_jsonl(tmp_path / "raw" / "more.jsonl", more))], "web", options)
    masked = transform(ws, "web", "pii", "masked")
    assert (masked.shards_done, masked.shards_reused, masked.documents_read) == (1, 2, 16)
    # Pages of a known site: no line became boilerplate, so what `lines` learned is the same.
    lined = transform(ws, "web", "lines", "lined")
    assert (lined.shards_done, lined.shards_reused, lined.shards_dropped) == (1, 2, 0)
    # A new site's footer is new boilerplate: every shard is rewritten under the new key.
    site = [{"text": _page("s2", 200 + i), "site": "s2"} for i in range(3)]
    pipeline.ingest(ws, [str(write_jsonl(tmp_path / "raw" / "s2.jsonl", site))], "web", options)
    lined = transform(ws, "web", "lines", "lined")
    assert (lined.shards_done, lined.shards_reused, lined.shards_dropped) == (4, 0, 3)
    assert "footer" not in json.dumps([r["text"] for r in _docs(ws, "lined").values()])


def test_transform_refuses_names_it_must_not_write(tmp_path: Path) -> None:
    ws = _corpus(tmp_path, files=1)
    with pytest.raises(InputError, match="needs a new name"):
        transform(ws, "web", "pii", "web")
    with pytest.raises(InputError, match="was ingested"):
        pipeline.ingest(ws, [str(tmp_path / "raw" / "part-0.jsonl")], "other")
        transform(ws, "web", "pii", "other")
    transform(ws, "web", "pii", "masked")
    with pytest.raises(InputError, match="made from 'web', not 'other'"):
        transform(ws, "other", "pii", "masked")
    with pytest.raises(InputError, match="invalid corpus name"):
        transform(ws, "web", "pii", "../escape")
    with pytest.raises(InputError, match="differs only in case"):
        transform(ws, "web", "pii", "WEB")


class _Killed(Exception):
    pass


def _dies_after(units_done: int, phase):
    """A work map that runs `units_done` units of `phase` and then dies, as a killed run would."""

    def work_map(fn, units):
        for n, unit in enumerate(units):
            if fn is phase and n == units_done:
                raise _Killed
            yield fn(unit)

    return work_map


def test_a_run_killed_while_counting_resumes_from_the_stored_statistics(tmp_path: Path) -> None:
    ws = _corpus(tmp_path)
    with pytest.raises(_Killed):
        transform(ws, "web", "lines", "clean", work_map=_dies_after(2, score_unit))
    resumed = transform(ws, "web", "lines", "clean")
    with ws.catalog(read_only=True) as con:
        stored = con.execute(
            "select count(*) from signals where corpus = 'web' and signal = 'lines_statistics'"
        ).fetchall()[0][0]
    assert stored == 3 and resumed.shards_done == 3 and resumed.documents == 18


def test_a_run_killed_while_rewriting_resumes_and_ends_like_an_uninterrupted_one(
    tmp_path: Path,
) -> None:
    ws = _corpus(tmp_path)
    with pytest.raises(_Killed):
        transform(ws, "web", "pii,lines", "clean", work_map=_dies_after(1, transform_unit))
    with ws.catalog(read_only=True) as con:
        record = catalog.transform_record(con, "clean")
        done = catalog.done_chunks(con, "clean")
        shards = catalog.shards(con, "web")
    # Results are recorded in batches: the unit that finished may not be recorded yet.
    assert record is not None and record["status"] == "running" and len(done) <= 1
    # A half-written file of a unit that was running when the process died.
    key = chunk_key(shards[2]["content_hash"], record["config_hash"])
    stray = ws.corpus_dir("clean") / f".{key}.parquet.tmp-99"
    stray.write_bytes(b"partial")
    resumed = transform(ws, "web", "pii,lines", "clean")
    assert (resumed.shards_done, resumed.shards_reused) == (3 - len(done), len(done))
    assert not stray.exists()
    clean = transform(ws, "web", "pii,lines", "fresh", work_map=ThreadMap(2))
    assert {k: r["text"] for k, r in _docs(ws, "clean").items()} == {
        k: r["text"] for k, r in _docs(ws, "fresh").items()
    }
    assert resumed.changes == clean.changes and resumed.config_hash == clean.config_hash


def test_examples_show_before_after_and_dropped_documents(tmp_path: Path) -> None:
    ws = _corpus(tmp_path)
    transform(ws, "web", "pii,lines", "clean")
    shown = transform_examples(ws, "clean", 2)
    assert len(shown["changed"]) == 2 and len(shown["dropped"]) == 1
    example = shown["changed"][0]
    assert "@mill-" in example["before"] and "<EMAIL>" in example["after"]
    assert example["changes"]["pii"] == {"email": 1}
    assert shown["dropped"][0]["reason"] == "emptied_by_lines"
    assert shown["dropped"][0]["before"].startswith("Home")
    assert shown["corpus"]["summary"]["documents"] == 18
    with pytest.raises(InputError, match="was ingested"):
        transform_examples(ws, "web")


def test_an_older_catalog_gets_the_transforms_table(tmp_path: Path) -> None:
    ws = _corpus(tmp_path, files=1)
    with duckdb.connect(str(ws.catalog_path)) as con:  # as a version-1 catalog was
        con.execute("drop table transforms")
        con.execute("update meta set value = '1' where key = 'schema_version'")
    with ws.catalog(read_only=True) as con:
        assert catalog.transform_record(con, "web") is None
    with duckdb.connect(str(ws.catalog_path)) as con:
        catalog.ensure_schema(con)
        assert catalog.schema_version(con) == 2 and catalog.has_table(con, "transforms")


@pytest.mark.parametrize(
    "text",
    [
        "The Mona Lisa doesnâ€™t have eyebrows.\nplain ascii line\n",
        "<p>a &amp; b</p>\nthen &amp; here\r\nsÃ©ance\x00 and ﬁ\u3000wide",
        "first &lt;tag&gt; line\nsecond line has a < sign\nthird &amp;",
        "",
    ],
)
def test_normalize_gives_what_ftfy_fix_text_gives(text: str) -> None:
    import ftfy

    assert get("normalize").from_params({}).apply(text, "d").text == ftfy.fix_text(text)
