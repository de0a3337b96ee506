"""Dedup and decontamination: signatures equal datasketch's, clusters, index reuse, the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import PROSE, write_jsonl
from datasketch import MinHash
from ingest_helpers import CORPUS, ingest_catalogued

from gristmill import pipeline
from gristmill.errors import InputError
from gristmill.selectors import minhash, registry
from gristmill.selectors.base import SelectorContext
from gristmill.selectors.dedup import DedupSelector, banding, cluster_pool
from gristmill.storage.readers import IngestOptions
from gristmill.storage.workspace import Workspace

STORY = (
    "A fox crossed the frozen river at dawn, looking for the hens the farmer kept behind the "
    "barn; the dog heard nothing, the geese heard everything, and by the time the farmer woke "
    "the fox was gone with nothing but a feather and a story for the cubs in the den."
)


def _check_against_datasketch(texts: list[str]) -> None:
    for num_perm, seed, k in [(256, 1, 5), (64, 7, 3)]:
        ours = minhash.signatures(minhash.normalize(pa.array(texts)), num_perm, seed, k)
        for i, text in enumerate(texts):
            reference = MinHash(
                num_perm=num_perm, seed=seed, hashfunc=minhash.shingle_hash32, scheme="affine32"
            )
            reference.update_batch(minhash.word_shingles(text, k))
            assert np.array_equal(reference.hashvalues, ours[i]), (num_perm, seed, text[:40])


def test_signatures_equal_datasketch() -> None:
    _check_against_datasketch(
        [PROSE, STORY, "", "Two words", "!!! ...", "Ünïcode ÇAFÉ\u00a0naïve\tcafé\n\nend", "x"]
    )


def test_signatures_equal_datasketch_on_real_text(shared_data: Path) -> None:
    text = (shared_data / "tinystories_2mib" / "tinystories_sample.txt").read_text()
    _check_against_datasketch([t for t in text.split("<|endoftext|>")[:40] if t.strip()])


def test_short_and_empty_rules() -> None:
    assert minhash.word_shingles("Two words") == [b"two words"]
    assert minhash.word_shingles("!!! ...") == []
    normalized = minhash.normalize(pa.array(["  A, b!\u00a0C\t\n", None, "x\x00y"]))
    assert normalized.to_pylist() == ["a b c", "", "x y"]
    empty = minhash.signatures(minhash.normalize(pa.array(["", "?!"])))
    assert (empty == np.uint32(0xFFFFFFFF)).all()


def _edit(text: str, rng: np.random.Generator, rate: float) -> str:
    words = text.split()
    for i in rng.choice(len(words), int(rate * len(words)), replace=False):
        words[i] = "zzz" + words[i]
    return " ".join(words)


def _pool(tmp_path: Path) -> Workspace:
    records = [
        {"text": PROSE, "id": "prose"},
        {"text": PROSE.upper() + " !!", "id": "prose-shout"},  # exact after normalisation
        {"text": PROSE.replace("careful", "careless") + " Longer tail.", "id": "prose-edit"},
        {"text": PROSE + " Liked.", "id": "prose-liked", "votes": 7},
        {"text": STORY, "id": "story"},
        {"text": "Hi.", "id": "short-1"},
        {"text": "hi", "id": "short-2"},  # the same short text: an exact duplicate
        {"text": "Bye now.", "id": "short-3"},  # a different short text: kept
        {"text": "...", "id": "empty-1"},  # empty after normalisation
        {"text": "?!", "id": "empty-2"},
    ]
    records = [{**r, "domain": r["id"].split("-")[0]} for r in records]
    path = write_jsonl(tmp_path / "docs.jsonl", records)
    options = IngestOptions(id_field="id", domain_field="domain")
    return ingest_catalogued(tmp_path / "ws", [path], CORPUS, options)


def _ids(ws: Workspace, corpus: str = CORPUS) -> dict[int, str]:
    tables = [pq.read_table(p) for p in sorted(ws.corpus_dir(corpus).glob("*.parquet"))]
    rows = pa.concat_tables(tables).to_pylist()
    return {r["doc_id"]: json.loads(r["meta"])["id"] for r in rows}


def _dedup(
    ws: Workspace, params: dict, corpus: str = CORPUS, name: str | None = None
) -> tuple[pipeline.Curation, dict[str, dict], dict[int, str]]:
    """Curate with dedup (a selection when named); the pool step's rows by document name."""
    curation = pipeline.curate(ws, corpus, "dedup", params=params, name=name)
    table = pq.read_table(ws.absolute(curation.plan.stored["set"]))
    names = _ids(ws, corpus)
    rows = {names[r["doc_id"]]: r for r in table.to_pylist()}
    return curation, rows, names


def test_near_and_exact_modes_with_keep_policies(tmp_path: Path) -> None:
    ws = _pool(tmp_path)
    _, near, names = _dedup(ws, {"threshold": 0.8})
    dropped = {k: names[r["duplicate_of"]] for k, r in near.items() if r["score"] == 0.0}
    # source order decides: PROSE (line 1) is kept; empties form one group, short ones too
    assert dropped == {
        "prose-shout": "prose", "prose-edit": "prose", "prose-liked": "prose",
        "short-2": "short-1", "empty-2": "empty-1",
    }  # fmt: skip
    assert near["prose-edit"]["cluster"] == near["prose"]["doc_id"]
    assert near["prose"]["cluster_size"] == 4 and near["story"]["cluster"] is None

    _, exact, _ = _dedup(ws, {"mode": "exact"})
    exact_dropped = {k for k, r in exact.items() if r["score"] == 0.0}
    assert exact_dropped == {"prose-shout", "short-2", "empty-2"}

    _, longest, names = _dedup(ws, {"keep": "longest"})
    assert longest["prose-edit"]["score"] == 1.0
    assert names[longest["prose"]["duplicate_of"]] == "prose-edit"

    _, voted, names = _dedup(ws, {"keep": "priority", "priority_field": "votes"})
    assert voted["prose-liked"]["score"] == 1.0  # the only one with votes; no votes = lowest
    assert {names[voted[k]["duplicate_of"]] for k in ("prose", "prose-edit")} == {"prose-liked"}
    with pytest.raises(InputError, match="priority_field"):
        DedupSelector.from_params({"keep": "priority"})


def test_keep_policy_reuses_features_and_selection_summary(tmp_path: Path) -> None:
    ws = _pool(tmp_path)
    assert pipeline.curate(ws, CORPUS, "dedup").scored == 1
    longest = pipeline.curate(ws, CORPUS, "dedup", params={"keep": "longest"})
    assert longest.scored == 0  # no re-hash for a new policy
    curation, _, _ = _dedup(ws, {}, name="deduped")
    record = curation.record
    assert record is not None
    assert record["n_selected"] == 5
    per_domain = {d["domain"]: (d["kept"], d["dropped"]) for d in record["summary"]["domains"]}
    assert per_domain == {"prose": (1, 3), "story": (1, 0), "short": (2, 1), "empty": (1, 1)}


def test_same_clusters_whatever_the_sharding(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    vocabulary = sorted(set((PROSE + " " + STORY).lower().split()))
    base = [" ".join(rng.choice(vocabulary, 120)) for _ in range(6)]
    texts = [f"{base[i % 6]} copy {i}" for i in range(60)]
    records = [{"text": t, "id": str(i)} for i, t in enumerate(texts)]
    config = DedupSelector.from_params({}).config
    results = []
    for shards in (1, 4, 7):
        features = []
        for part in np.array_split(np.arange(60), shards)[::-1]:  # shard order reversed too
            table = pa.table(
                {
                    "doc_id": pa.array(part + 1000, pa.uint64()),
                    "text": [records[i]["text"] for i in part],
                    "source": ["a.jsonl"] * len(part),
                    "source_line": pa.array(part, pa.int64()),
                    "n_bytes": pa.array([len(records[i]["text"]) for i in part], pa.int64()),
                }
            )
            path = tmp_path / f"f{shards}-{part[0]}.parquet"
            pq.write_table(DedupSelector(config).score(table), path)
            features.append(path)
        out = pq.read_table(cluster_pool([(CORPUS, features, None)], config, tmp_path / "scratch"))  # type: ignore[arg-type]
        results.append(out.to_pylist())
    assert results[0] == results[1] == results[2]
    kept = [r["doc_id"] for r in results[0] if r["score"] == 1.0]
    assert len(kept) == 6  # one per base text


def test_incremental_and_cross_corpus(tmp_path: Path) -> None:
    ws = _pool(tmp_path)
    stored = pipeline.curate(ws, CORPUS, "dedup").features.stored
    # a new shard: only it is hashed; the old shard's band file is reused
    write_jsonl(tmp_path / "more.jsonl", [{"text": STORY + " The end.", "id": "story-again"}])
    _add_source(ws, tmp_path / "more.jsonl", CORPUS)
    again, rows, names = _dedup(ws, {})
    assert again.scored == 1 and again.reused == 1
    assert stored.items() <= again.features.stored.items()
    assert names[rows["story-again"]["duplicate_of"]] == "story"

    # a new corpus against the old one: the old corpus's documents win, nothing is re-hashed
    write_jsonl(tmp_path / "new.jsonl", [
        {"text": PROSE + " Reposted.", "id": "n-prose"},
        {"text": "Something entirely new about the sea and its ships.", "id": "n-new"},
    ])  # fmt: skip
    _add_source(ws, tmp_path / "new.jsonl", "fresh")
    _, fresh, _ = _dedup(ws, {"against": [CORPUS]}, corpus="fresh")
    assert fresh["n-prose"]["score"] == 0.0 and fresh["n-new"]["score"] == 1.0
    assert fresh["n-prose"]["duplicate_corpus"] == CORPUS
    assert names[fresh["n-prose"]["duplicate_of"]] == "prose"
    assert pipeline.curate(ws, CORPUS, "dedup").scored == 0


def _add_source(ws: Workspace, path: Path, corpus: str) -> None:
    """Ingest one more file into a (possibly existing) corpus."""
    pipeline.ingest(ws, [str(path)], corpus, IngestOptions(id_field="id"))


def test_banding_defaults() -> None:
    config = DedupSelector.from_params({"verify": False, "num_perm": 128}).config
    assert banding(config) == (9, 13)  # type: ignore[arg-type]
    assert banding(DedupSelector.from_params({}).config) == (23, 11)  # type: ignore[arg-type]
    with pytest.raises(InputError, match="exceeds num_perm"):
        DedupSelector.from_params({"bands": 20, "rows": 20})
    assert {"dedup", "decontaminate"} <= set(registry.available())


def test_decontaminate_drops_overlapping_documents(tmp_path: Path) -> None:
    ws = _pool(tmp_path)
    question = " ".join(STORY.split()[5:20])  # a 15-word passage of STORY
    short = "Bye now, said the fox to the hens."  # 8 words: used whole
    write_jsonl(tmp_path / "eval.jsonl", [{"text": question}, {"text": short}, {"text": "Hi."}])
    ingest_catalogued(tmp_path / "ws", [tmp_path / "eval.jsonl"], "evalset")
    curation = pipeline.curate(ws, CORPUS, "decontaminate", params={"eval": "evalset"},
                               name="clean")  # fmt: skip
    plan, record = curation.plan, curation.record
    assert record is not None
    scores = pa.concat_tables([pq.read_table(ws.absolute(p)) for p in plan.stored.values()])
    names = _ids(ws)
    dropped = {names[r["doc_id"]] for r in scores.to_pylist() if r["score"] == 0.0}
    assert dropped == {"story"}  # "Hi." is too short to count, short-3 lacks the 8-gram
    eval_ids = {json.dumps(r["text"]): r["doc_id"] for r in _eval_rows(ws)}
    story = next(r for r in scores.to_pylist() if names[r["doc_id"]] == "story")
    assert story["matched_eval"] == eval_ids[json.dumps(question)]
    per_domain = {d["domain"]: d["dropped"] for d in record["summary"]["domains"]}
    assert per_domain["story"] == 1 and sum(per_domain.values()) == 1
    with pytest.raises(InputError, match="evalset2"):
        pipeline.curate(ws, CORPUS, "decontaminate", params={"eval": "evalset2"})


def _eval_rows(ws: Workspace) -> list[dict]:
    files = sorted(ws.corpus_dir("evalset").glob("*.parquet"))
    return pa.concat_tables([pq.read_table(p) for p in files]).to_pylist()


RECIPE = """
name: dedup
ingest:
  - corpus: evalset
    paths: [eval.jsonl]
  - corpus: pool
    paths: [pool.jsonl]
    id_field: id
select:
  - name: pool-clean
    corpus: pool
    selector: decontaminate
    params: {eval: evalset}
  - name: pool-dedup
    selector: dedup
    params: {threshold: 0.8}
"""


@pytest.mark.usefixtures("prefect_server")
def test_cli_select_recipe_and_inspect(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from gristmill.cli import app

    records = [{"text": PROSE, "id": "a"}, {"text": PROSE + " Again.", "id": "b"},
               {"text": STORY, "id": "c"}, {"text": PROSE.upper(), "id": "d"}]  # fmt: skip
    write_jsonl(tmp_path / "pool.jsonl", records)
    write_jsonl(tmp_path / "eval.jsonl", [{"text": STORY}])
    (tmp_path / "recipe.yaml").write_text(RECIPE)
    runner = CliRunner()
    ws = str(tmp_path / "ws")
    result = runner.invoke(app, ["run", str(tmp_path / "recipe.yaml"), "-w", ws, "--json"])
    assert result.exit_code == 0, (result.output, result.exception)
    steps = {s["selection"]["name"]: s["selection"] for s in json.loads(result.stdout)["select"]}
    assert steps["pool-clean"]["n_selected"] == 3  # the story is in the eval set
    assert steps["pool-dedup"]["n_candidates"] == 3 and steps["pool-dedup"]["n_selected"] == 1

    args = ["select", "pool", "--selector", "dedup", "--param", "mode=exact", "--name", "exact"]
    result = runner.invoke(app, [*args, "-w", ws, "--json"])
    assert result.exit_code == 0, (result.output, result.exception)
    assert json.loads(result.stdout)["selection"]["n_selected"] == 3  # PROSE == PROSE.upper()

    shown = runner.invoke(app, ["inspect", "pool-dedup", "-w", ws, "--json"])
    clusters = json.loads(shown.stdout)["clusters"]
    assert len(clusters) == 1 and clusters[0]["size"] == 3
    assert [m["kept"] for m in clusters[0]["members"]] == [True, False, False]
    text = runner.invoke(app, ["inspect", "pool-dedup", "-w", ws])
    assert "3 documents" in text.stdout and "kept" in text.stdout
    sql = runner.invoke(app, ["sql", 'select count(*) from "pool__dedup_set" '
                              "where duplicate_of is not null", "-w", ws, "--json"])  # fmt: skip
    # the view shows the latest dedup config: the exact run, where only PROSE.upper() goes
    assert json.loads(sql.stdout) == [{"count_star()": 1}]


def test_against_naming_the_pool_itself_is_bad_input(tmp_path: Path) -> None:
    ws = _pool(tmp_path)
    selector = DedupSelector.from_params({"against": [CORPUS]})
    with pytest.raises(InputError, match="against: names the corpus itself"):
        selector.requirements(SelectorContext(ws, CORPUS))
