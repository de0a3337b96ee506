"""The effect study's recipes as a smoke run: data built by examples/study/build_data.py at a
small scale, one seed, a minimal budget; continued-pretraining arms and fine-tuning-set arms
from one shared base, and the EFFECT.md tables written from what finished.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from gristmill.cli import app

STUDY = Path(__file__).resolve().parents[1] / "examples" / "study"
TINY_TRAIN = {"seq_len": 64, "micro_batch_size": 8, "warmup_steps": 1, "device": "cpu"}


def _module(name: str) -> Any:
    spec = importlib.util.spec_from_file_location(name, STUDY / f"{name}.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _smoke_recipe(name: str, out_dir: Path, arms: list[str]) -> Path:
    """The study recipe with one seed, a minimal budget and some of its arms (each selector
    has its own tests; this checks the study's wiring)."""
    recipe = yaml.safe_load((STUDY / name).read_text(encoding="utf-8"))
    experiment = recipe["experiment"]
    assert set(arms) <= set(experiment["arms"])
    pool = experiment.get("pool")
    recipe["select"] = [
        s for s in recipe["select"] if s["name"] in arms or s["name"].startswith(str(pool))
    ]
    zoos = {s.get("params", {}).get("zoo") for s in recipe["select"]}
    recipe["zoo"] = [z for z in recipe.get("zoo", []) if z["name"] in zoos]
    experiment["arms"] = arms
    experiment.update(seeds=[0], max_eval_docs=20)
    if experiment.get("vary", "continued") == "continued":
        experiment.update(tokens=1024, random_tokens=1024)
        experiment["continued"] = {**TINY_TRAIN, "lr": 0.001}
    experiment["base"]["vocab_size"] = 256
    experiment["base"]["train"] = {**TINY_TRAIN, "max_steps": 6}
    experiment["task"].update(max_test_examples=40, max_length=32)
    experiment["task"]["train"] = {**TINY_TRAIN, "max_steps": 3, "micro_batch_size": 16}
    path = out_dir / name
    path.write_text(yaml.safe_dump(recipe), encoding="utf-8")
    return path


@pytest.fixture
def one_thread() -> Any:
    """Torch on one thread: on a busy 2-core box two threads spin-wait and run ~10x slower."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.mark.usefixtures("prefect_server", "one_thread")
def test_study_smoke(shared_data: Path, tmp_path: Path) -> None:
    counts = _module("build_data").build(shared_data, tmp_path / "data", scale=0.04)
    assert counts["pool"] > counts["base"] > 0
    summaries = {}
    smoke_arms = {
        "study-sst2.yaml": ["none", "random", "full", "pool-dsir-sst2"],
        "finetune-sst2.yaml": ["full", "random", "sst2-quality", "sst2-coreset"],
    }
    for name, arms in smoke_arms.items():
        recipe = _smoke_recipe(name, tmp_path, arms)
        result = CliRunner().invoke(app, ["experiment", str(recipe), "--json"])
        assert result.exit_code == 0, result.output
        summaries[name] = json.loads(result.stdout)

    continued = summaries["study-sst2.yaml"]
    arms = {r["arm"]: r for r in continued["runs"]}
    assert set(arms) == set(smoke_arms["study-sst2.yaml"])
    assert {r["continued_tokens"] for a, r in arms.items() if a != "none"} == {1024}
    for arm, run in arms.items():
        assert 0 < run["metrics"]["bits_per_byte"] < 10 and 0 <= run["metrics"]["accuracy"] <= 1
        assert ("loss_gap" in run["metrics"]) == (arm != "none")

    # Decontamination removed every planted test-set document from the arms' pool.
    leaked = CliRunner().invoke(
        app,
        [
            "sql",
            'select count(*) n from "selection__pool-decon" m join pool p using (doc_id) '
            "where json_extract_string(p.meta, '$.planted') = 'contamination'",
            "-w",
            str(tmp_path / "ws"),
            "--json",
        ],
    )
    assert leaked.exit_code == 0, leaked.output
    assert json.loads(leaked.stdout)[0]["n"] == 0

    # Fine-tuning arms: the same base, the selection's examples, random of the largest size.
    finetune = summaries["finetune-sst2.yaml"]
    sizes = {r["arm"]: r["task_train_examples"] for r in finetune["runs"]}
    assert sizes["full"] == counts["sst2_train"]
    assert sizes["random"] == max(sizes["sst2-quality"], sizes["sst2-coreset"]) < sizes["full"]
    assert continued["run_dir"] != finetune["run_dir"]
    assert all("train_accuracy" in r["metrics"] for r in finetune["runs"])
    assert len(list((tmp_path / "ws" / "models").iterdir())) == 1  # one base for both

    effect = _module("effect")
    lines = effect.section(tmp_path / "finetune-sst2.yaml", tmp_path / "plots", tmp_path)
    table = "\n".join(lines)
    assert "4 of 4 arm runs finished" in table and "| sst2-coreset | 1 |" in table
    assert (tmp_path / "plots" / "finetune-sst2.png").read_bytes()[:4] == b"\x89PNG"


def _spec(**fields: Any) -> Any:
    from gristmill.training.config import ExperimentSpec

    task = {"kind": "classification", "corpus": "corp"}
    return ExperimentSpec.model_validate({"task": task, **fields})


def test_experiment_spec_checks_each_kind_of_arm() -> None:
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="pool"):
        _spec(tokens=100)
    with pytest.raises(ValidationError, match="tokens"):
        _spec(pool="corp")
    with pytest.raises(ValidationError, match="no fine-tuning set"):
        _spec(vary="finetune", arms=["none", "full"], base={"corpus": "corp"})
    assert _spec(vary="finetune", arms=["full", "random"], base={"corpus": "corp"}).tokens is None


def test_adding_an_arm_keeps_the_finished_arms(tmp_path: Path) -> None:
    import pyarrow as pa
    from conftest import PROSE, write_jsonl
    from ingest_helpers import CORPUS, ingest_catalogued

    from gristmill.storage.files import write_parquet_atomic
    from gristmill.training.experiment import arm_dir

    write_jsonl(tmp_path / "docs.jsonl", [{"text": f"{PROSE} {i}"} for i in range(6)])
    ws = ingest_catalogued(tmp_path / "ws", [tmp_path / "docs.jsonl"])
    for name, ids in (("picked", [1, 2]), ("added", [3])):
        members = ws.selection_dir(name) / "members.parquet"
        write_parquet_atomic(pa.table({"doc_id": pa.array(ids, pa.uint64())}), members)
    before = _spec(pool=CORPUS, tokens=100, arms=["none", "random", "picked"])
    after = _spec(pool=CORPUS, tokens=100, arms=["none", "random", "picked", "added"])
    for arm in ("none", "picked"):
        assert arm_dir(ws, before, arm, 0, None) == arm_dir(ws, after, arm, 0, None)
    # The random arm is the same run while its size is; a larger size is a new run.
    assert arm_dir(ws, before, "random", 0, 50) == arm_dir(ws, after, "random", 0, 50)
    assert arm_dir(ws, before, "random", 0, 50) != arm_dir(ws, after, "random", 0, 60)
    assert arm_dir(ws, before, "none", 0, None) != arm_dir(ws, before, "none", 1, None)
    # A rebuilt selection is a new run of that arm only.
    first_picked = arm_dir(ws, after, "picked", 0, None)
    first_none = arm_dir(ws, after, "none", 0, None)
    members = ws.selection_dir("picked") / "members.parquet"
    write_parquet_atomic(pa.table({"doc_id": pa.array([1, 4], pa.uint64())}), members)
    assert arm_dir(ws, after, "picked", 0, None) != first_picked
    assert arm_dir(ws, after, "none", 0, None) == first_none


def test_continued_checkpoints_are_shared_across_tasks_and_targets(tmp_path: Path) -> None:
    from conftest import PROSE, write_jsonl
    from ingest_helpers import CORPUS, ingest_catalogued

    from gristmill.training.experiment import continued_dir

    write_jsonl(tmp_path / "docs.jsonl", [{"text": f"{PROSE} {i}"} for i in range(6)])
    ws = ingest_catalogued(tmp_path / "ws", [tmp_path / "docs.jsonl"])
    sentiment = _spec(pool=CORPUS, tokens=100, arms=["full"], target=CORPUS)
    news = _spec(pool=CORPUS, tokens=100, arms=["full", "random"], name="other",
                 task={"kind": "sft", "corpus": CORPUS})  # fmt: skip
    assert continued_dir(ws, sentiment, "full", 0, None) == continued_dir(ws, news, "full", 0, None)
    # What the checkpoint depends on: the token budget, the seed, the arm.
    longer = _spec(pool=CORPUS, tokens=200, arms=["full"])
    assert continued_dir(ws, longer, "full", 0, None) != continued_dir(ws, news, "full", 0, None)
    assert continued_dir(ws, news, "full", 1, None) != continued_dir(ws, news, "full", 0, None)
    assert continued_dir(ws, news, "random", 0, 50) != continued_dir(ws, news, "random", 0, 60)
