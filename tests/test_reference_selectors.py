"""The learnability and cartography selectors: planted noise is found, stored statistics are
reused when re-selecting, RHO's halves never score what they trained on, and clear errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from conftest import write_jsonl
from ingest_helpers import ingest_catalogued
from typer.testing import CliRunner

from gristmill import pipeline
from gristmill.cli import app
from gristmill.errors import InputError
from gristmill.selectors import learnability as learnability_module
from gristmill.selectors.base import SelectorContext
from gristmill.selectors.cartography import CartographySelector
from gristmill.selectors.learnability import LearnabilitySelector
from gristmill.storage import queries
from gristmill.storage.readers import IngestOptions
from gristmill.storage.workspace import Workspace
from gristmill.training import finetune

TINY = {"preset": "tiny", "base_steps": 40, "max_length": 64, "device": "cpu"}


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny models on a shared 2-core box: two OpenMP threads spin-wait each other."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def auroc(scores: np.ndarray, positive: np.ndarray) -> float:
    """P(random positive scores above random negative)."""
    pos, neg = scores[positive], scores[~positive]
    return float((pos[:, None] > neg[None, :]).mean() + 0.5 * (pos[:, None] == neg).mean())


def workspace_of(tmp_path: Path, records: list[dict], text_field: str) -> Workspace:
    """A workspace with corpus `pool` holding `records` (other fields land in meta)."""
    write_jsonl(tmp_path / "pool.jsonl", records)
    options = IngestOptions(text_field=text_field, id_field="id")
    return ingest_catalogued(tmp_path / "ws", [tmp_path / "pool.jsonl"], "pool", options)


def run(ws: Workspace, selector, budget: str | None, name: str) -> tuple[dict, dict[int, dict]]:
    """Per-shard step, set step and selection, as the curate flow does; record and signal rows
    (with the stored file's path under the key "path")."""
    curation = pipeline.curate(ws, "pool", selector, budget=budget, name=name)
    plan, record = curation.plan, curation.record
    assert record is not None
    signal = pq.read_table(ws.absolute(plan.stored["set"])).to_pylist()
    return record, {"path": plan.stored["set"]} | {row["doc_id"]: row for row in signal}


def meta_by_id(ws: Workspace) -> dict[int, dict]:
    """doc_id -> meta of every document of `pool`."""
    rows = queries.run_sql(ws, "select doc_id, meta from pool")["rows"]
    return {doc_id: json.loads(meta) for doc_id, meta in rows}


def members(ws: Workspace, name: str) -> list[int]:
    return pq.read_table(ws.selection_dir(name) / "members.parquet")["doc_id"].to_pylist()


# -- learnability ------------------------------------------------------------------------------
def alpaca_with_noise(data: Path, n: int, noisy: int) -> list[dict]:
    """The first n Alpaca examples; `noisy` of them get responses of random words."""
    examples = json.loads((data / "alpaca_subset" / "alpaca_5000.json").read_text())[:n]
    rng = np.random.default_rng(0)
    words = " ".join(e["output"] for e in examples).split()
    records = [{"id": str(i), **e, "noise": False} for i, e in enumerate(examples)]
    for i in rng.choice(n, noisy, replace=False):
        length = max(3, len(records[i]["output"].split()))
        records[i] |= {"output": " ".join(rng.choice(words, length)), "noise": True}
    return records


def test_learnability_ranks_clean_alpaca_above_random_responses(
    shared_data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ws = workspace_of(tmp_path, alpaca_with_noise(shared_data, 240, 40), "output")
    # AUROC 0.766 (0.778 with 100 steps and 3 epochs, at twice the CPU time); 128 tokens
    # cut some prompts to nothing and fall under 0.75.
    params = {**TINY, "base_steps": 50, "epochs": 2, "max_length": 256}
    selector = LearnabilitySelector.from_params(params)
    record, signal = run(ws, selector, "50%", "learnable")
    noise = {d: m["noise"] for d, m in meta_by_id(ws).items()}
    ids = [d for d in signal if d != "path"]
    # An example whose prompt fills max_length has no response tokens: NaN, ranked last.
    scores = np.nan_to_num([signal[d]["score"] for d in ids], nan=-np.inf)
    is_clean = np.array([not noise[d] for d in ids])
    assert auroc(scores, is_clean) >= 0.75
    # Fine-tuning on the set lowered the response loss of the clean examples.
    base = np.array([signal[d]["loss_base"] for d in ids])
    ref = np.array([signal[d]["loss_ref"] for d in ids])
    assert np.nanmean(ref[is_clean]) < np.nanmean(base[is_clean])
    assert record["n_selected"] == 120
    assert record["summary"]["scoring"]["method"] == "lobass"

    # Another budget and the unnormalised ranking reuse the stored losses: nothing retrains.
    def no_training(*args, **kwargs):
        raise AssertionError("re-selecting must not train")

    monkeypatch.setattr(finetune, "finetune_sft", no_training)
    monkeypatch.setattr("gristmill.training.lm.pretrain", no_training)
    again = LearnabilitySelector.from_params({**params, "normalize": False})
    _, signal2 = run(ws, again, "10%", "learnable-10")
    assert signal2["path"] == signal["path"]
    reducible = {d: signal[d]["loss_base"] - signal[d]["loss_ref"] for d in ids}
    ranked = sorted((d for d in ids if np.isfinite(reducible[d])), key=lambda d: (-reducible[d], d))
    assert members(ws, "learnable-10") == ranked[:24]
    shown = pipeline.inspect_selection(ws, "learnable-10", sample=3)["regions"]
    assert [r["score"] for r in shown["high learnability"]] == sorted(scores, reverse=True)[:3]


def sft_records(n: int) -> list[dict]:
    """Short instruction examples: repeat a word list."""
    rng = np.random.default_rng(1)
    vocab = [f"w{i}" for i in range(30)]
    records = []
    for i in range(n):
        words = " ".join(rng.choice(vocab, 5))
        records.append({"id": str(i), "instruction": f"Repeat: {words}", "input": "",
                        "output": words})  # fmt: skip
    return records


def test_rho_scores_each_half_with_the_model_that_did_not_see_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ws = workspace_of(tmp_path, sft_records(60), "output")
    trained: list[set[str]] = []
    scored: list[set[str]] = []
    real_finetune, real_losses = finetune.finetune_sft, finetune.response_losses

    def recording_finetune(base, tokenizer, data, *args, **kwargs):
        trained.append(set(data.prompts))
        return real_finetune(base, tokenizer, data, *args, **kwargs)

    def recording_losses(model, tokenizer, data, *args, **kwargs):
        scored.append(set(data.prompts))
        return real_losses(model, tokenizer, data, *args, **kwargs)

    monkeypatch.setattr(finetune, "finetune_sft", recording_finetune)
    monkeypatch.setattr(finetune, "response_losses", recording_losses)
    selector = LearnabilitySelector.from_params({**TINY, "method": "rho", "epochs": 1})
    _, signal = run(ws, selector, "50%", "rho")
    everything = {f"Repeat: {r['output']}\n\n" for r in sft_records(60)}
    first, second = trained
    assert first and second and not first & second and first | second == everything
    # scored: the whole pool under the base, then each half under the other half's model.
    assert scored == [everything, second, first]
    assert all(np.isfinite(signal[d]["loss_ref"]) for d in signal if d != "path")


def test_learnability_errors_name_the_key(tmp_path: Path) -> None:
    records = sft_records(6)
    del records[2]["instruction"]
    ws = workspace_of(tmp_path, records, "output")
    with pytest.raises(InputError, match=r"prompt_template: 1 documents .*'instruction'"):
        run(ws, LearnabilitySelector.from_params(TINY), "50%", "bad")
    missing = LearnabilitySelector.from_params({**TINY, "model": str(tmp_path / "no-model")})
    with pytest.raises(InputError, match="selector learnability: model: tokenizer"):
        missing.prepare(SelectorContext(ws, "pool"))
    with pytest.raises(InputError, match="reference: method rho"):
        LearnabilitySelector.from_params({"method": "rho", "reference": "x"})


# -- cartography -------------------------------------------------------------------------------
def keyword_records(n: int, flip: float) -> list[dict]:
    """Texts of class-specific words (three classes) with `flip` of the labels changed."""
    rng = np.random.default_rng(2)
    classes = ["sport", "money", "space"]
    vocab = {c: [f"{c}{i}" for i in range(12)] for c in classes}
    common = [f"the{i}" for i in range(20)]
    records = []
    for i in range(n):
        label = classes[i % 3]
        words = list(rng.choice(vocab[label], 4)) + list(rng.choice(common, 4))
        rng.shuffle(words)
        records.append({"id": str(i), "text": " ".join(words), "label": label, "flipped": False})
    for i in rng.choice(n, int(flip * n), replace=False):
        wrong = [c for c in classes if c != records[i]["label"]]
        records[i] |= {"label": wrong[int(rng.integers(2))], "flipped": True}
    return records


def test_cartography_hard_region_finds_flipped_labels_and_reselects_without_training(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ws = workspace_of(tmp_path, keyword_records(300, 0.1), "text")
    params = {**TINY, "epochs": 4, "lr": 1e-3, "region": "hard"}
    record, signal = run(ws, CartographySelector.from_params(params), "10%", "hard")
    flipped = {d: m["flipped"] for d, m in meta_by_id(ws).items()}
    ids = [d for d in signal if d != "path"]
    confidence = np.array([signal[d]["confidence"] for d in ids])
    is_flipped = np.array([flipped[d] for d in ids])
    assert auroc(-confidence, is_flipped) >= 0.9
    assert all(len(signal[d]["p_gold"]) == 4 for d in ids)
    row = signal[ids[0]]
    assert row["confidence"] == pytest.approx(np.mean(row["p_gold"]))
    assert row["variability"] == pytest.approx(np.std(row["p_gold"]))
    assert members(ws, "hard") == sorted(ids, key=lambda d: (signal[d]["confidence"], d))[:30]
    assert len(record["summary"]["scoring"]["train_accuracy_per_epoch"]) == 4

    def no_training(*args, **kwargs):
        raise AssertionError("re-selecting must not train")

    monkeypatch.setattr(finetune, "classification_dynamics", no_training)
    for region, key in (("ambiguous", "variability"), ("easy", "confidence")):
        _, again = run(ws, CartographySelector.from_params({**params, "region": region}),
                       "33%", region)  # fmt: skip
        assert again == signal
        expected = sorted(ids, key=lambda d: (-signal[d][key], d))[:99]
        assert members(ws, region) == expected
    regions = pipeline.inspect_selection(ws, "easy", sample=2)["regions"]
    assert set(regions) == {"ambiguous", "hard", "easy"}
    assert regions["hard"][0]["confidence"] == min(confidence)


def test_cartography_errors_name_the_key(tmp_path: Path) -> None:
    records = keyword_records(9, 0.0)
    del records[4]["label"]
    ws = workspace_of(tmp_path, records, "text")
    with pytest.raises(InputError, match=r"label_field: 1 documents .*'label'"):
        run(ws, CartographySelector.from_params(TINY), "10%", "x")
    one_class = [{**r, "label": "same"} for r in keyword_records(9, 0.0)]
    ws = workspace_of(tmp_path / "one", one_class, "text")
    with pytest.raises(InputError, match="at least 2"):
        run(ws, CartographySelector.from_params(TINY), "10%", "x")
    with pytest.raises(InputError, match="unknown preset"):
        CartographySelector.from_params({"preset": "huge"})


def test_cli_selects_a_region_and_inspect_shows_all_three(
    tmp_path: Path, prefect_server: None
) -> None:
    write_jsonl(tmp_path / "pool.jsonl", keyword_records(90, 0.1))
    cli = CliRunner()
    ws = ["-w", str(tmp_path / "ws")]
    result = cli.invoke(app, ["ingest", str(tmp_path / "pool.jsonl"), "--corpus", "pool", *ws])
    assert result.exit_code == 0, result.output
    params = [f"--param={k}={v}" for k, v in {**TINY, "epochs": 2, "base_steps": 10}.items()]
    select = ["select", "pool", "--selector", "cartography", "--name", "amb", *params, *ws]
    result = cli.invoke(app, [*select, "--budget", "33%"])
    assert result.exit_code == 0, result.output
    assert "of 90 documents" in result.output
    result = cli.invoke(app, [*select, "--param=label_field=topic", "--name", "y",
                              "--budget", "33%"])  # fmt: skip
    assert result.exit_code == 2 and "label_field" in result.output
    result = cli.invoke(app, ["inspect", "amb", *ws])
    assert result.exit_code == 0, result.output
    for region in ("ambiguous", "hard", "easy"):
        assert region in result.output
    assert learnability_module.LearnabilitySelector.name in cli.invoke(app, ["selectors"]).output


def test_recipe_steps_take_both_selectors_and_name_bad_params(tmp_path: Path) -> None:
    from gristmill.recipe import load_recipe

    step = (
        "  - name: {name}\n    corpus: pool\n    selector: {selector}\n    budget: 33%\n"
        "    params: {params}\n"
    )
    text = "name: r\nworkspace: ws\nselect:\n" + "".join(
        step.format(name=n, selector=s, params=p)
        for n, s, p in (
            ("amb", "cartography", "{region: ambiguous, epochs: 3}"),
            ("learn", "learnability", "{method: rho}"),
        )
    )
    (tmp_path / "r.yaml").write_text(text)
    assert [s.selector for s in load_recipe(tmp_path / "r.yaml").select] == [
        "cartography",
        "learnability",
    ]
    (tmp_path / "bad.yaml").write_text(text.replace("region: ambiguous", "region: middle"))
    with pytest.raises(InputError, match="region"):
        load_recipe(tmp_path / "bad.yaml")
