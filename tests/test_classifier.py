"""The `classifier` selector: a fastText classifier of positives against the pool."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import write_jsonl
from ingest_helpers import ingest_catalogued
from test_target_selectors import DOMAIN_OPTIONS, TOPICS, kept_share, make_workspace, topic_docs

from gristmill import pipeline
from gristmill.errors import InputError
from gristmill.selectors import fasttext_model
from gristmill.selectors.classifier import (
    ClassifierSelector,
    LinearModel,
    cross_fitted,
    pu_negatives,
)
from gristmill.selectors.fasttext_model import FastTextSettings
from gristmill.selectors.selection import SelectOptions
from gristmill.storage.queries import selection_view
from gristmill.storage.workspace import Workspace


def curate(ws: Workspace, budget: str, name: str, target: str | None = "target", **params):
    """Select from `pool` with the classifier given by name and params."""
    return pipeline.curate(ws, "pool", "classifier", params=params, budget=budget, name=name,
                           target=target, options=SelectOptions(seed=0))  # fmt: skip


def trained_models(ws: Workspace) -> list[Path]:
    """The classifier models saved in the workspace."""
    return sorted((ws.root / "models").glob("classifier-*/model.*"))


def test_trained_on_the_target_keeps_its_domain_and_reports_heldout_metrics(
    tmp_path: Path,
) -> None:
    ws = make_workspace(tmp_path, topic_docs("cooking", 30, seed=99))
    first = curate(ws, "20docs", "c1", heldout_fraction=0.2)
    assert first.scored == 1 and first.record is not None
    assert kept_share(ws, first.record, "cooking") == 1.0
    scoring = first.record["summary"]["scoring"]
    assert scoring["method"] == "classifier" and scoring["trained"]
    assert scoring["positives"] == {"source": "target", "corpus": "target", "documents": 30}
    # negatives: 40 pool documents per positive, so the whole pool of 60 (none of them the target)
    negatives = scoring["negatives"]
    assert negatives["documents"] == 60 and negatives["source"] == "pool sample"
    # A third of the pool is cooking (about 18 of the 54 training negatives): the pool documents
    # that score like the target are dropped before the final fit (positive-unlabelled learning).
    assert 10 <= negatives["dropped_as_likely_positive"] <= 24
    heldout = scoring["heldout"]
    assert heldout["documents"] == 18 and heldout["positives"] == 6
    # A third of the pool negatives are cooking too (random pool text, as DCLM samples it), so
    # the held-out figures count those as errors: about 4 of the 12 held-out negatives.
    assert 0.5 <= heldout["accuracy"] <= 1 and 0.5 < heldout["auroc"] <= 1
    [model] = trained_models(ws)
    trained_at = model.stat().st_mtime_ns
    # Another budget: nothing scored, nothing trained, the same model file.
    second = curate(ws, "10docs", "c2", heldout_fraction=0.2)
    assert second.scored == 0 and second.reused == 1
    assert trained_models(ws) == [model] and model.stat().st_mtime_ns == trained_at
    # The shown explanation names the training data and the held-out figures.
    with selection_view(ws, "c1") as view:
        [section] = ClassifierSelector.from_params({}).explain(view)
    rows = {row["class"]: row for row in section.tables[0].rows}
    assert rows["positives"]["documents"] == 30
    assert rows["held out"]["from"] == f"{heldout['accuracy']} / {heldout['auroc']}"


@pytest.mark.parametrize("backend", ["linear", "fasttext"])
def test_a_changed_target_trains_a_new_model(tmp_path: Path, backend: str) -> None:
    ws = make_workspace(tmp_path)
    before = curate(ws, "20docs", "before", backend=backend)
    assert before.record is not None and kept_share(ws, before.record, "cooking") >= 0.9
    assert trained_models(ws)[0].name == {"linear": "model.npz", "fasttext": "model.bin"}[backend]
    write_jsonl(tmp_path / "more.jsonl", topic_docs("cooking", 5, seed=5))
    ingest_catalogued(ws.root, [tmp_path / "more.jsonl"], "target", DOMAIN_OPTIONS)
    after = curate(ws, "20docs", "after", backend=backend)
    assert after.scored == 1 and len(trained_models(ws)) == 2
    assert after.record is not None
    assert after.record["summary"]["scoring"]["positives"]["documents"] == 15


def test_pool_copies_of_target_documents_are_never_negatives(tmp_path: Path) -> None:
    copies = topic_docs("cooking", 20, seed=0)[:10]  # the pool's own first ten cooking docs
    ws = make_workspace(tmp_path, copies)
    record = curate(ws, "10docs", "copies", negative_ratio=5).record
    assert record is not None
    negatives = record["summary"]["scoring"]["negatives"]
    # 50 wanted, the whole pool of 60 read: its 10 copies of target texts are left out.
    assert negatives["excluded_positives"] == 10 and negatives["documents"] == 50


def test_positives_from_a_meta_field_or_the_domain(tmp_path: Path) -> None:
    docs = [{**d, "kind": "sport" if d["topic"] == "sports" else "other"}
            for i, t in enumerate(TOPICS) for d in topic_docs(t, 20, seed=i)]  # fmt: skip
    write_jsonl(tmp_path / "pool.jsonl", docs)
    ws = ingest_catalogued(tmp_path / "ws", [tmp_path / "pool.jsonl"], "pool", DOMAIN_OPTIONS)
    by_meta = curate(ws, "20docs", "m", target=None, positive_field="kind",
                     positive_values="sport")  # fmt: skip
    by_domain = curate(ws, "20docs", "d", target=None, positive_field="domain",
                       positive_values=["sports"])  # fmt: skip
    for record in (by_meta.record, by_domain.record):
        assert record is not None and kept_share(ws, record, "sports") == 1.0
        scoring = record["summary"]["scoring"]
        assert scoring["positives"]["documents"] == 20
        # The positives are pool documents: never sampled as negatives.
        assert scoring["negatives"]["excluded_positives"] == 20
    # A field no document has: a clear error, not an empty model.
    with pytest.raises(InputError, match="0 positive document"):
        curate(ws, "20docs", "none", target=None, positive_field="kind", positive_values="x")


def test_positives_from_a_selection_and_negatives_from_a_corpus(tmp_path: Path) -> None:
    ws = make_workspace(tmp_path)
    write_jsonl(tmp_path / "neg.jsonl", topic_docs("sports", 15, seed=40))
    ingest_catalogued(ws.root, [tmp_path / "neg.jsonl"], "neg", DOMAIN_OPTIONS)
    curate(ws, "20docs", "seed-selection", target=None, positive_field="domain",
           positive_values="code")  # fmt: skip
    chosen = curate(ws, "20docs", "from-selection", target=None,
                    positive_selection="seed-selection", negative_corpus="neg")  # fmt: skip
    assert chosen.record is not None and kept_share(ws, chosen.record, "code") == 1.0
    scoring = chosen.record["summary"]["scoring"]
    assert scoring["positives"]["source"] == "positive_selection"
    assert scoring["negatives"] == {"source": "corpus", "corpus": "neg", "documents": 15,
                                    "excluded_positives": 0}  # fmt: skip


def test_a_pretrained_model_by_local_path(tmp_path: Path) -> None:
    ws = make_workspace(tmp_path)
    texts = [d["text"] for t in TOPICS for d in topic_docs(t, 20, seed=60)]
    labels = ["hq" if i < 20 else "cc" for i in range(len(texts))]  # cooking is "hq"
    model = fasttext_model.train(texts, labels, FastTextSettings(epochs=10), 0, tmp_path / "ft")
    path = tmp_path / "my-model.bin"
    model.save_model(str(path))
    record = curate(ws, "20docs", "p", target=None, model=str(path), positive_label="hq").record
    assert record is not None and kept_share(ws, record, "cooking") == 1.0
    assert record["summary"]["scoring"]["trained"] is False
    assert trained_models(ws) == []
    with pytest.raises(InputError, match=r"has no label 'positive' \(its labels: .*hq"):
        curate(ws, "20docs", "p2", target=None, model=str(path))
    with pytest.raises(InputError, match="no such file"):
        curate(ws, "20docs", "p3", target=None, model=str(tmp_path / "absent.bin"))


def test_positives_need_exactly_one_source(tmp_path: Path) -> None:
    ws = make_workspace(tmp_path)
    with pytest.raises(InputError, match=r"exactly one source of positives.*given: none"):
        curate(ws, "20docs", "x", target=None)
    with pytest.raises(InputError, match=r"given: target, positive_field"):
        curate(ws, "20docs", "x", positive_field="domain", positive_values="code")
    with pytest.raises(InputError, match="positive_field and positive_values go together"):
        curate(ws, "20docs", "x", positive_field="domain")


def test_unlabelled_rows_that_score_like_positives_are_not_negatives() -> None:
    positive = np.array([True] * 4 + [False] * 6)
    scores = np.array([2.0, 3.0, 4.0, 5.0, 3.5, 6.0, 0.0, -1.0, 2.5, 1.0])
    # The positives' 0.25 quantile is 2.75: unlabelled rows at or above it are dropped.
    kept = pu_negatives(scores, positive, 0.25)
    assert kept.tolist() == [False] * 4 + [False, False, True, True, True, True]
    # Cross-fitting: each row is scored by a model fitted on rows of the other fold only, and
    # both classes are in every fold.
    seen: list[tuple[set[int], set[int]]] = []

    def fit_score(train: np.ndarray, test: np.ndarray) -> np.ndarray:
        seen.append((set(train.tolist()), set(test.tolist())))
        assert positive[train].any() and (~positive[train]).any()
        return test.astype(np.float64)

    out = cross_fitted(positive, 2, np.random.default_rng(0), fit_score)
    assert out.tolist() == list(range(10))
    assert all(not train & test for train, test in seen)
    assert set().union(*(test for _, test in seen)) == set(range(10))


def test_auroc_counts_ties_as_half() -> None:
    scores = np.array([0.9, 0.8, 0.8, 0.1, 0.8])
    positive = np.array([True, True, False, False, False])
    # pairs (pos, neg): 0.9>0.8, 0.9>0.1, 0.9>0.8; 0.8=0.8, 0.8>0.1, 0.8=0.8 -> (3 + 2) / 6
    assert fasttext_model.auroc(scores, positive) == pytest.approx(5 / 6)
    assert fasttext_model.auroc(scores, np.ones(5, bool)) is None
    assert json.dumps(fasttext_model.one_line("A\nB\t c", lowercase=True)) == '"a b c"'


def test_layout_tokens_tell_apart_texts_that_differ_only_in_line_breaks(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    words = [f"w{i}" for i in range(200)]

    def sentences(n: int) -> list[str]:
        return [" ".join(rng.choice(words, 8)) + "." for _ in range(n)]

    # The same kind of words either way: a task, a blank line and an answer against one line.
    positives = [f"{a}\n\n{b}" for a, b in zip(sentences(200), sentences(200), strict=True)]
    negatives = [f"{a} {b}" for a, b in zip(sentences(200), sentences(200), strict=True)]
    texts, truth = positives + negatives, np.r_[np.ones(200, bool), np.zeros(200, bool)]
    train = np.r_[0:150, 200:350]
    test = np.r_[150:200, 350:400]
    auroc = {}
    for layout in (False, True):
        counts = LinearModel.counts(texts, 1 << 12, None, layout)
        model = LinearModel.fit(counts[train], truth[train], 10.0, layout)
        auroc[layout] = fasttext_model.auroc(model.counts_log_odds(counts[test]), truth[test])
    assert auroc[True] == 1.0 and auroc[False] < 0.7
    # The flag is saved with the model; a version-1 model (no flag) counted words only.
    model.save(tmp_path / "model.npz")
    loaded = LinearModel.load(tmp_path / "model.npz")
    assert loaded.layout is True
    assert np.allclose(loaded.log_odds(texts[:3], None), model.log_odds(texts[:3], None))
    np.savez(tmp_path / "v1.npz", idf=model.idf, coef=model.coef, intercept=np.float64(0.0))
    assert LinearModel.load(tmp_path / "v1.npz").layout is False
