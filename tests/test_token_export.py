"""Token shards: round trip to text, counts against the manifest, megatron-core's own reader,
nanoGPT's memmap, order, held-out split, resume and the export overwrite rules."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from conftest import good_text, write_jsonl

from gristmill import pipeline
from gristmill.errors import InputError
from gristmill.pipeline.tokens import TokenizeOptions, export_tokens
from gristmill.storage import catalog
from gristmill.storage import token_shards as shard_format
from gristmill.storage.token_shards import ShardWriter, TokenShards, heldout_mask, token_dtype
from gristmill.storage.workspace import Workspace
from gristmill.training.models import train_tokenizer

DOCS = 40


@pytest.fixture(scope="module")
def selected(tmp_path_factory) -> tuple[Workspace, Path, list[str]]:
    """A workspace with a selection `sel` of the corpus `web`, and a local tokenizer directory."""
    root = tmp_path_factory.mktemp("tokens")
    texts = [good_text(i) + (" Ünïcödé — ok." if i % 4 == 0 else "") for i in range(DOCS)]
    write_jsonl(root / "raw" / "part.jsonl", [{"text": t} for t in texts])
    ws = Workspace(root / "ws")
    pipeline.ingest(ws, [str(root / "raw" / "part.jsonl")], "web")
    pipeline.curate(ws, "web", "quality", budget="30docs", name="sel")
    tokenizer_dir = root / "tok"
    train_tokenizer(texts, 400).save_pretrained(tokenizer_dir)
    return ws, tokenizer_dir, texts


def _selection_texts(ws: Workspace) -> tuple[list[int], dict[int, str]]:
    """The selection's doc_ids in rank order and every document's text by id."""
    import duckdb

    from gristmill.storage.files import sql_files

    with ws.catalog(read_only=True) as con:
        shards = ws.shard_files(con, "web")
    with duckdb.connect() as con:
        ranked = con.sql(
            f"select doc_id from read_parquet({sql_files([ws.members_path('sel')])}) order by rank"
        ).fetchall()
        texts = con.sql(f"select doc_id, text from read_parquet({sql_files(shards)})").fetchall()
    return [r[0] for r in ranked], dict(texts)


def test_every_document_decodes_back_and_counts_match_the_manifest(selected, tmp_path) -> None:
    from transformers import AutoTokenizer

    ws, tokenizer_dir, _ = selected
    options = TokenizeOptions(str(tokenizer_dir), heldout_fraction=0.3, docs_per_shard=7)
    result = export_tokens(ws, "sel", tmp_path / "out", options)
    shards = TokenShards(tmp_path / "out")
    manifest = shards.manifest
    ranked, texts = _selection_texts(ws)
    with ws.catalog(read_only=True) as con:
        record = catalog.get_selection(con, "sel")
    assert manifest["dtype"] == "uint16" and manifest["eos_id"] == 0 and manifest["bos_id"] is None
    assert manifest["selection"]["corpus_version"] == record["corpus_version"]
    assert manifest["tokenizer"]["hash"] and manifest["tokenizer"]["vocab_size"] == 400
    assert result["documents"] == manifest["documents"] == record["n_selected"] == len(ranked)
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir, local_files_only=True)
    seen: dict[str, list[int]] = {}
    total_tokens = 0
    for split in ("train", "heldout"):
        stems = shards.shards(split)
        assert len(stems) >= (2 if split == "train" else 1)  # 7 documents a shard
        for doc_id, ids in shards.documents(split):
            assert ids[-1] == manifest["eos_id"]
            assert tokenizer.decode(ids[:-1].tolist()) == texts[doc_id]
            seen.setdefault(split, []).append(doc_id)
        tokens = sum(len(shards.tokens(stem)) for stem in stems)  # nanoGPT's np.memmap reading
        assert tokens == manifest["splits"][split]["tokens"]
        assert len(seen[split]) == manifest["splits"][split]["documents"]
        total_tokens += tokens
    assert total_tokens == manifest["tokens"] == result["tokens"]
    held = heldout_mask(np.asarray(ranked, dtype=np.uint64), 0.3)
    assert seen["train"] == [d for d, h in zip(ranked, held, strict=True) if not h]  # rank order
    assert seen["heldout"] == [d for d, h in zip(ranked, held, strict=True) if h]


def test_megatron_core_reads_the_shards_with_its_own_reader(selected, tmp_path) -> None:
    indexed = pytest.importorskip("megatron.core.datasets.indexed_dataset")
    ws, tokenizer_dir, _ = selected
    export_tokens(ws, "sel", tmp_path / "out", TokenizeOptions(str(tokenizer_dir), bos=True))
    shards = TokenShards(tmp_path / "out")
    (stem,) = shards.shards("train")
    dataset = indexed.IndexedDataset(str(tmp_path / "out" / stem))
    ours = [ids for _, ids in shards.documents("train")]
    assert len(dataset) == len(ours) == shards.manifest["documents"]
    for k, ids in enumerate(ours):
        assert ids[0] == shards.manifest["bos_id"] and ids[-1] == shards.manifest["eos_id"]
        assert np.array_equal(dataset[k], ids)
    assert dataset.sequence_lengths.sum() == shards.manifest["tokens"]


def test_uint32_shards_read_by_megatron_core(tmp_path) -> None:
    indexed = pytest.importorskip("megatron.core.datasets.indexed_dataset")
    assert token_dtype(65_536) == "uint16" and token_dtype(65_537) == "uint32"
    writer = ShardWriter(tmp_path, "train", 0, "uint32")
    writer.append(np.array([70_000, 1, 2, 99_999, 0]), np.array([2, 3]), np.array([5, 9]))
    assert writer.finish().tokens == 5
    dataset = indexed.IndexedDataset(str(tmp_path / "train-00000"))
    assert dataset[0].tolist() == [70_000, 1] and dataset[1].tolist() == [2, 99_999, 0]


def test_shuffle_is_seeded_and_keeps_every_document(selected, tmp_path) -> None:
    ws, tokenizer_dir, _ = selected
    orders = []
    for name, seed in (("a", 3), ("b", 3), ("c", 4)):
        options = TokenizeOptions(str(tokenizer_dir), shuffle_seed=seed)
        export_tokens(ws, "sel", tmp_path / name, options)
        orders.append([d for d, _ in TokenShards(tmp_path / name).documents("train")])
    ranked, _ = _selection_texts(ws)
    assert orders[0] == orders[1] != orders[2]
    assert sorted(orders[0]) == sorted(orders[2]) == sorted(ranked) and orders[0] != ranked


def test_an_interrupted_export_resumes_its_finished_shards(selected, tmp_path, monkeypatch) -> None:
    ws, tokenizer_dir, _ = selected
    options = TokenizeOptions(str(tokenizer_dir), docs_per_shard=10)
    calls: list[int] = []
    real = shard_format.tokenize_unit

    def failing_map(fn, units):
        for unit in units:
            if unit.shard == 2:
                raise RuntimeError("killed")
            yield fn(unit)

    with pytest.raises(RuntimeError):
        export_tokens(ws, "sel", tmp_path / "out", options, work_map=failing_map)
    assert not (tmp_path / "out").exists()  # nothing half-done at the destination

    def counting(unit):
        calls.append(unit.shard)
        return real(unit)

    monkeypatch.setattr(shard_format, "tokenize_unit", counting)
    before = sorted(p.name for p in tmp_path.glob(".out.tmp-*/*.json"))
    assert before == ["train-00000.json", "train-00001.json"]
    export_tokens(ws, "sel", tmp_path / "out", options)
    assert TokenShards(tmp_path / "out").manifest["documents"] == 30
    assert not list(tmp_path.glob(".out.tmp-*"))  # the staging directory was swapped in
    assert calls == [0, 1, 2]  # every unit is asked; 0 and 1 return their stored summary
    fresh = export_tokens(ws, "sel", tmp_path / "again", options)
    assert fresh["tokens"] == TokenShards(tmp_path / "out").manifest["tokens"]


def test_shards_are_the_same_bytes_whichever_way_the_units_run(selected, tmp_path) -> None:
    from gristmill.pipeline.map import ThreadMap
    from gristmill.storage.files import file_hash

    ws, tokenizer_dir, _ = selected
    options = TokenizeOptions(str(tokenizer_dir), shuffle_seed=5, heldout_fraction=0.3,
                              docs_per_shard=4)  # fmt: skip
    export_tokens(ws, "sel", tmp_path / "serial", options)
    export_tokens(ws, "sel", tmp_path / "threads", options, work_map=ThreadMap(3))
    files = sorted(p.name for p in (tmp_path / "serial").iterdir())
    assert files == sorted(p.name for p in (tmp_path / "threads").iterdir())
    for name in files:
        if name != "manifest.json":  # it names its directory's tokenizer path only
            assert file_hash(tmp_path / "serial" / name) == file_hash(tmp_path / "threads" / name)
    for split in ("train", "heldout"):
        for shard in TokenShards(tmp_path / "threads").manifest["splits"][split]["shards"]:
            assert shard["hash"] == file_hash(tmp_path / "threads" / f"{shard['stem']}.bin")


def test_destination_rules_are_those_of_the_text_formats(selected, tmp_path) -> None:
    ws, tokenizer_dir, _ = selected
    options = TokenizeOptions(str(tokenizer_dir))
    export_tokens(ws, "sel", tmp_path / "out", options)
    with pytest.raises(InputError, match="earlier gristmill export; pass --overwrite"):
        export_tokens(ws, "sel", tmp_path / "out", options)
    export_tokens(ws, "sel", tmp_path / "out", options, overwrite=True)
    other = tmp_path / "mine"
    other.mkdir()
    (other / "notes.txt").write_text("keep me")
    with pytest.raises(InputError, match="not an earlier gristmill export"):
        export_tokens(ws, "sel", other, options, overwrite=True)
    assert (other / "notes.txt").read_text() == "keep me"


def test_a_tokenizer_that_is_not_local_is_an_input_error(selected, tmp_path) -> None:
    ws, _, _ = selected
    with pytest.raises(InputError, match="nothing is downloaded"):
        export_tokens(ws, "sel", tmp_path / "out", TokenizeOptions("gpt2-not-here"))


@pytest.mark.usefixtures("prefect_server")
def test_materialize_format_tokens_from_the_cli_and_a_recipe(selected, tmp_path) -> None:
    from typer.testing import CliRunner

    from gristmill.cli import app
    from gristmill.recipe import load_recipe

    ws, tokenizer_dir, _ = selected
    runner = CliRunner()
    missing = runner.invoke(app, ["materialize", "sel", "--out", str(tmp_path / "a"),
                                  "--format", "tokens", "-w", str(ws.root)])  # fmt: skip
    assert missing.exit_code == 2 and "needs --tokenizer" in missing.output
    done = runner.invoke(app, ["materialize", "sel", "--out", str(tmp_path / "a"), "--format",
                               "tokens", "--tokenizer", str(tokenizer_dir), "--shuffle-seed", "3",
                               "-w", str(ws.root), "-q"])  # fmt: skip
    assert done.exit_code == 0, done.output
    assert "30 documents" in done.stdout and "tokens" in done.stdout
    assert TokenShards(tmp_path / "a").manifest["documents"] == 30
    # The flow ran a task per shard, each result cached, and wrote what the library writes.
    from gristmill.flows.tasks import result_storage
    from gristmill.storage.files import file_hash

    cached = [p.read_text() for p in (result_storage(ws) / "units").glob("*.json")]
    assert sum('"ShardSummary"' in text for text in cached) >= 1
    export_tokens(ws, "sel", tmp_path / "b", TokenizeOptions(str(tokenizer_dir), shuffle_seed=3))
    assert file_hash(tmp_path / "a" / "train-00000.bin") == file_hash(
        tmp_path / "b" / "train-00000.bin"
    )
    recipe = tmp_path / "r.yaml"
    recipe.write_text(
        "materialize:\n  - {selection: sel, out: out, format: tokens,\n"
        f"     tokenizer: {tokenizer_dir}}}\n"
    )
    assert load_recipe(recipe).materialize[0].tokenize_options().tokenizer == str(tokenizer_dir)
    recipe.write_text("materialize:\n  - {selection: sel, out: out, format: tokens}\n")
    with pytest.raises(InputError, match="tokenizer"):
        load_recipe(recipe)
