"""Training stage: packing, held-out split, bits per byte, SFT masking, resume, lm_loss, and a
tiny end-to-end experiment through the CLI (base -> continued pretraining -> fine-tune -> eval).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import PROSE, SHARED_DATA
from typer.testing import CliRunner

from gristmill.cli import app
from gristmill.errors import InputError
from gristmill.recipe import load_recipe
from gristmill.storage.workspace import Workspace
from gristmill.training.config import TrainConfig
from gristmill.training.data import DataSource, PackedBatches, heldout_mask, pack, read_documents
from gristmill.training.finetune import (
    SFTBatches,
    SFTData,
    evaluate_sft,
    finetune_sft,
    macro_f1,
    sft_example,
)
from gristmill.training.lm_scoring import score_documents
from gristmill.training.models import (
    PRESETS,
    build_model,
    load_causal_lm,
    save_model,
    train_tokenizer,
)
from gristmill.training.trainer import train

TEXTS = [f"Story {i}. " + PROSE[: 80 + 7 * i] for i in range(40)]


@pytest.fixture(scope="module")
def tokenizer():
    return train_tokenizer(TEXTS, 300)


def _model(tokenizer, seed: int = 0):
    return build_model(PRESETS["tiny"], tokenizer, seed=seed)


def test_tokenizer_is_deterministic_and_round_trips(tokenizer) -> None:
    again = train_tokenizer(TEXTS, 300)
    assert again.get_vocab() == tokenizer.get_vocab()
    text = "The miller's wheel — 42 ünïcode bytes!"
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    assert tokenizer.decode(ids) == text  # byte-level: any text is encodable


def test_pack_separates_documents_with_eos() -> None:
    rows = pack([[1, 2, 3], [4, 5], [6, 7, 8, 9]], seq_len=4, eos_id=0)
    assert rows.tolist() == [[1, 2, 3, 0], [4, 5, 0, 6], [7, 8, 9, 0]]
    batches = PackedBatches(rows, micro_batch_size=2, seed=3)
    first = [batches.batch(i)["input_ids"].tolist() for i in range(3)]
    again = PackedBatches(rows, micro_batch_size=2, seed=3)
    assert first == [again.batch(i)["input_ids"].tolist() for i in range(3)]  # seeded
    seen = [tuple(r) for b in first[:1] for r in b] + [tuple(first[1][0])]
    assert len(set(seen)) == 3  # one epoch visits every row once


def test_rows_read_from_token_shards_equal_rows_packed_in_memory(tokenizer, tmp_path) -> None:
    from conftest import write_jsonl

    from gristmill import pipeline
    from gristmill.storage.token_shards import TOKEN_CACHE
    from gristmill.training.data import take_tokens, token_documents, tokenize

    write_jsonl(tmp_path / "raw.jsonl", [{"text": t} for t in TEXTS])
    ws = Workspace(tmp_path / "ws")
    pipeline.ingest(ws, [str(tmp_path / "raw.jsonl")], "stories")
    table = read_documents(ws, DataSource(corpus="stories"), "train", 0.2, ("doc_id", "text"))
    tokenizer.save_pretrained(tmp_path / "tok")
    documents = token_documents(
        ws, DataSource(corpus="stories"), "train", 0.2, str(tmp_path / "tok")
    )
    in_memory = tokenize(tokenizer, table["text"].to_pylist())
    assert [documents.tokens(i).tolist() for i in range(len(documents))] == in_memory
    eos = tokenizer.eos_token_id
    for seq_len in (5, 16, 64):  # rows that cut documents, and rows of several documents
        rows = documents.rows(seq_len)
        assert torch.equal(rows.take(np.arange(len(rows))), pack(in_memory, seq_len, eos))
    # A subset in any order, repeats allowed (the zoo's mixtures, the random arm).
    picked = np.array([7, 2, 2, 11, 0, 5])
    expected = pack([in_memory[i] for i in picked], 8, eos)
    assert torch.equal(documents.rows(8, picked).take(np.arange(len(expected))), expected)
    batches = PackedBatches(documents.rows(16), micro_batch_size=3, seed=1)
    in_memory_batches = PackedBatches(pack(in_memory, 16, eos), micro_batch_size=3, seed=1)
    assert all(torch.equal(batches.batch(i)["input_ids"], in_memory_batches.batch(i)["input_ids"])
               for i in range(4))  # fmt: skip
    lengths = np.array([len(t) + 1 for t in in_memory])
    order = np.random.default_rng(0).permutation(len(lengths))
    for budget in (1, 40, 10**9):
        taken, used = [], 0
        for index in order:  # the rule: take a document while the budget is not reached
            if used >= budget:
                break
            taken.append(index)
            used += lengths[index]
        assert take_tokens(lengths, order, budget).tolist() == taken
    # Tokenized once: the same documents and tokenizer read the same shards again.
    again = token_documents(ws, DataSource(corpus="stories"), "train", 0.2, str(tmp_path / "tok"))
    assert again.streams[0].filename == documents.streams[0].filename
    assert len(list((ws.root / TOKEN_CACHE).iterdir())) == 1


def test_heldout_split_is_stable_and_disjoint() -> None:
    ids = np.arange(1, 20001, dtype=np.uint64) * np.uint64(0x9E3779B1)
    held = heldout_mask(ids, 0.1)
    assert 0.08 < held.mean() < 0.12
    assert np.array_equal(held, heldout_mask(ids.copy(), 0.1))
    assert not (heldout_mask(ids, 0.05) & ~held).any()  # smaller splits nest inside larger


def test_bits_per_byte_matches_hand_computation(tokenizer) -> None:
    model = _model(tokenizer)
    texts = [TEXTS[3], "Short one.", TEXTS[30] + " and more ünïcode"]
    scores = score_documents(model, tokenizer, texts, batch_tokens=64, device="cpu")
    for i, text in enumerate(texts):
        ids = [tokenizer.eos_token_id, *tokenizer(text, add_special_tokens=False)["input_ids"]]
        with torch.no_grad():
            logits = model(input_ids=torch.tensor([ids])).logits[0, :-1].double()
        nll = -torch.log_softmax(logits, -1)[torch.arange(len(ids) - 1), torch.tensor(ids[1:])]
        expected = float(nll.sum()) / (math.log(2) * len(text.encode("utf-8")))
        assert scores.n_tokens[i] == len(ids) - 1
        assert scores.bits_per_byte[i] == pytest.approx(expected, rel=1e-4)
        assert scores.mean_loss[i] == pytest.approx(float(nll.mean()), rel=1e-4)
    # Windows shorter than a document: every token is still predicted exactly once.
    windowed = score_documents(model, tokenizer, texts, max_length=16, device="cpu")
    assert np.array_equal(windowed.n_tokens, scores.n_tokens)
    assert windowed.bits_per_byte[1] == pytest.approx(scores.bits_per_byte[1], rel=1e-4)


def test_sft_loss_is_on_response_tokens_only(tokenizer) -> None:
    ids, labels = sft_example(tokenizer, "Question: what turns?\n", "The wheel.", 64)
    prompt_len = len(tokenizer("Question: what turns?\n", add_special_tokens=False)["input_ids"])
    assert labels[:prompt_len] == [-100] * prompt_len
    assert labels[prompt_len:] == ids[prompt_len:] and ids[-1] == tokenizer.eos_token_id
    data = SFTData(["Q1: a?\n", "Q2: b?\n"], ["yes", "no"])
    batch = SFTBatches(tokenizer, data, 64, micro_batch_size=2, seed=0).batch(0)
    assert ((batch["labels"] != -100) <= (batch["attention_mask"] == 1)).all()  # no pad labels
    # The training loss on such a batch is the mean over response tokens only.
    model = _model(tokenizer)
    with torch.no_grad():
        loss = model(**batch).loss
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    response = batch["labels"][:, 1:] != -100
    token_losses = torch.nn.functional.cross_entropy(
        logits[:, :-1].transpose(1, 2), batch["labels"][:, 1:].clamp(min=0), reduction="none"
    )
    manual = token_losses[response].mean()
    assert float(loss) == pytest.approx(float(manual), rel=1e-5)


def test_sft_fine_tuning_lowers_response_loss(tokenizer, tmp_path: Path) -> None:
    base = tmp_path / "base"
    save_model(_model(tokenizer), tokenizer, base)
    data = SFTData([f"Q{i}: which wheel?\n" for i in range(16)], ["The mill wheel."] * 16)
    before = evaluate_sft(load_causal_lm(str(base)), tokenizer, data, device="cpu")
    config = TrainConfig(max_steps=15, micro_batch_size=8, lr=0.01, warmup_steps=1, device="cpu")
    finetune_sft(str(base), tokenizer, data, config, tmp_path / "sft", max_length=32)
    after = evaluate_sft(load_causal_lm(str(tmp_path / "sft")), tokenizer, data, device="cpu")
    assert after["response_loss"] < before["response_loss"] - 1.0
    assert (tmp_path / "sft" / "model.safetensors").exists()


def test_macro_f1() -> None:
    labels = np.array([0, 0, 1, 1, 2])
    predictions = np.array([0, 1, 1, 1, 0])
    # class 0: tp1 fp1 fn1 -> 0.5; class 1: tp2 fp1 fn0 -> 0.8; class 2: tp0 fn1 -> 0
    assert macro_f1(labels, predictions, 3) == pytest.approx((0.5 + 0.8 + 0.0) / 3)


def test_interrupted_training_resumes_to_the_same_model(tokenizer, tmp_path: Path) -> None:
    rows = pack([tokenizer(t)["input_ids"] for t in TEXTS], 32, tokenizer.eos_token_id)
    config = TrainConfig(
        seq_len=32,
        micro_batch_size=4,
        max_steps=6,
        checkpoint_every=2,
        warmup_steps=2,
        device="cpu",
    )

    def saver(model, out_dir: Path) -> None:
        save_model(model, tokenizer, out_dir)

    whole = _model(tokenizer)
    train(whole, PackedBatches(rows, 4, 0), config, tmp_path / "whole", saver)

    def crash(step: int) -> None:
        if step == 5:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(
            _model(tokenizer),
            PackedBatches(rows, 4, 0),
            config,
            tmp_path / "cut",
            saver,
            on_step=crash,
        )
    assert (tmp_path / "cut" / "checkpoint" / "model.safetensors").exists()
    state = torch.load(tmp_path / "cut" / "checkpoint" / "trainer_state.pt", weights_only=True)
    assert state["step"] == 4  # the last checkpoint before the crash
    fresh = _model(tokenizer, seed=123)  # different init: the checkpoint must replace it
    summary = train(fresh, PackedBatches(rows, 4, 0), config, tmp_path / "cut", saver)
    assert summary["steps"] == 6 and not (tmp_path / "cut" / "checkpoint").exists()
    for (name, a), b in zip(whole.state_dict().items(), fresh.state_dict().values(), strict=True):
        assert torch.allclose(a, b, atol=1e-6), name
    assert (tmp_path / "cut" / "model.safetensors").exists()


def test_experiment_recipe_errors_name_the_key(tmp_path: Path) -> None:
    base = "experiment:\n  pool: p\n  tokens: 100\n  task: {kind: classification, corpus: t}\n"
    for change, key in [
        ("  arms: [none, '../x']\n", "experiment.arms"),
        ("  base: {preset: huge}\n", "experiment.base.preset"),
        ("  continued: {max_steps: 3}\n", "continued.max_steps"),
        ("  tokenz: 5\n", "experiment.tokenz"),
    ]:
        path = tmp_path / "recipe.yaml"
        path.write_text(base + change)
        with pytest.raises(InputError, match=key.replace(".", r"\.")):
            load_recipe(path)


def test_experiment_command_needs_an_experiment_section(tmp_path: Path) -> None:
    path = tmp_path / "recipe.yaml"
    path.write_text("name: curation-only\n")
    result = CliRunner().invoke(app, ["experiment", str(path)])
    assert result.exit_code == 2 and "has no experiment section" in result.output


# -- end to end ----------------------------------------------------------------------------------
def _experiment_inputs(tmp_path: Path) -> tuple[Path, Path]:
    """Stories and labelled sentences: real ones from ../shared/data, else a built fixture."""
    stories = tmp_path / "data" / "stories.txt"
    labelled = tmp_path / "data" / "sentences.tsv"
    stories.parent.mkdir(parents=True)
    story_file = SHARED_DATA / "tinystories_2mib" / "tinystories_sample.txt"
    sst2 = SHARED_DATA / "sst2_alps" / "dev.tsv"
    if story_file.exists() and sst2.exists():
        text = story_file.read_text(encoding="utf-8").split("<|endoftext|>")[:240]
        rows = sst2.read_text(encoding="utf-8").splitlines()[:321]
    else:
        words = PROSE.split()
        text = [" ".join(words[i % 40 :] + words[: i % 40]) for i in range(240)]
        rows = ["sentence\tlabel"] + [
            f"{'a fine' if i % 2 else 'a dull'} mill story number {i}\t{i % 2}" for i in range(320)
        ]
    stories.write_text("<|endoftext|>".join(text), encoding="utf-8")
    labelled.write_text("\n".join(rows) + "\n", encoding="utf-8")
    return stories, labelled


RECIPE = """
name: tiny-experiment
workspace: ws
ingest:
  - {corpus: stories, paths: [data/stories.txt], separator: "<|endoftext|>"}
  - {corpus: sentences, paths: [data/sentences.tsv], text_field: sentence}
select:
  - {name: long-stories, corpus: stories, selector: quality, mode: topk, budget: 0.5}
experiment:
  name: tiny
  pool: stories
  arms: [none, long-stories]
  tokens: 4096
  heldout_fraction: 0.1
  max_eval_docs: 20
  seeds: [0, 1]
  base:
    preset: tiny
    vocab_size: 512
    train: {max_steps: 20, seq_len: 64, micro_batch_size: 8, lr: 0.003, device: cpu}
  continued: {seq_len: 64, micro_batch_size: 8, warmup_steps: 2, device: cpu}
  task:
    kind: classification
    corpus: sentences
    max_length: 32
    max_train_examples: 200
    max_test_examples: 60
    train: {max_steps: 8, micro_batch_size: 16, warmup_steps: 2, device: cpu}
"""


@pytest.mark.usefixtures("prefect_server")
def test_tiny_experiment_end_to_end(tmp_path: Path) -> None:
    _experiment_inputs(tmp_path)
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(RECIPE)
    result = CliRunner().invoke(app, ["experiment", str(recipe), "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    run_dir = Path(summary["run_dir"])
    table = {(r["arm"], r["metric"]): r for r in summary["table"]}
    for arm in ("none", "long-stories"):
        for metric in ("bits_per_byte", "accuracy", "macro_f1"):
            assert table[(arm, metric)]["n"] == 2
    assert 0 < table[("none", "bits_per_byte")]["mean"] < 8
    # Continued pretraining on stories lowers bits per byte on held-out stories.
    assert (
        table[("long-stories", "bits_per_byte")]["mean"] < table[("none", "bits_per_byte")]["mean"]
    )
    assert {r["continued_tokens"] for r in summary["runs"] if r["arm"] != "none"} == {4096}
    for name in ("metrics.json", "report.md", "metrics.png"):
        assert (run_dir / name).stat().st_size > 0
    assert (run_dir / "metrics.png").read_bytes()[:4] == b"\x89PNG"
    ws = tmp_path / "ws"
    base = ws / "models" / "base"
    assert (base / "model.safetensors").exists() and (base / "tokenizer.json").exists()
    # The arms' training documents and the held-out ones split the corpus without overlap.
    sides = {
        split: set(
            read_documents(Workspace(ws), DataSource(corpus="stories"), split, 0.1, ("doc_id",))[
                "doc_id"
            ].to_pylist()
        )
        for split in ("train", "heldout", "all")
    }
    assert sides["heldout"] and not sides["train"] & sides["heldout"]
    assert sides["train"] | sides["heldout"] == sides["all"]
    runs = CliRunner().invoke(
        app, ["sql", "select status, metrics from runs", "-w", str(ws), "--json"]
    )
    assert json.loads(runs.stdout)[0]["status"] == "done"

    # Per-document LM scores as a stored signal, reused on the second run.
    score = [
        "score",
        "stories",
        "--selector",
        "lm_loss",
        "--param",
        "model=base",
        "-w",
        str(ws),
        "--json",
    ]
    first = CliRunner().invoke(app, score)
    assert first.exit_code == 0, first.output
    assert json.loads(first.stdout)["shards_scored"] >= 1
    again = json.loads(CliRunner().invoke(app, score).stdout)
    assert again["shards_scored"] == 0 and again["shards_reused"] >= 1
    rows = CliRunner().invoke(
        app,
        [
            "sql",
            'select avg(bits_per_byte) b, min(score) s, max(loss) l from "stories__lm_loss"',
            "-w",
            str(ws),
            "--json",
        ],
    )
    stats = json.loads(rows.stdout)[0]
    assert 0 < stats["b"] < 8 and stats["s"] == pytest.approx(-stats["l"])


def test_run_id_changes_when_a_selection_arm_is_rebuilt(tmp_path: Path) -> None:
    import pyarrow as pa
    from conftest import write_jsonl
    from ingest_helpers import CORPUS, ingest_catalogued

    from gristmill.flows.experiment import run_id_for
    from gristmill.storage.files import write_parquet_atomic
    from gristmill.training.config import ExperimentSpec
    from gristmill.training.experiment import data_versions

    write_jsonl(tmp_path / "docs.jsonl", [{"text": f"{PROSE} {i}"} for i in range(6)])
    ws = ingest_catalogued(tmp_path / "ws", [tmp_path / "docs.jsonl"])
    spec = ExperimentSpec.model_validate(
        {"pool": CORPUS, "arms": ["none", "picked"], "tokens": 100,
         "task": {"kind": "classification", "corpus": CORPUS}}
    )  # fmt: skip
    members = ws.selection_dir("picked") / "members.parquet"
    write_parquet_atomic(pa.table({"doc_id": pa.array([1, 2], pa.uint64())}), members)
    first = run_id_for(spec, data_versions(ws, spec))
    assert run_id_for(spec, data_versions(ws, spec)) == first  # same data, same run (resume)
    write_parquet_atomic(pa.table({"doc_id": pa.array([1, 3], pa.uint64())}), members)
    assert run_id_for(spec, data_versions(ws, spec)) != first
