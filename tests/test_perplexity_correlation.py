"""perplexity_correlation: estimator and projection parity, the zoo, the planted check, errors."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import yaml
from conftest import write_jsonl
from typer.testing import CliRunner

from gristmill import pipeline
from gristmill.cli import app
from gristmill.errors import InputError
from gristmill.selectors import pc_math
from gristmill.selectors.base import SelectorContext
from gristmill.selectors.budget import Budget
from gristmill.selectors.perplexity_correlation import (
    PerplexityCorrelationSelector,
    find_zoo_csv,
    load_zoo,
)
from gristmill.storage.readers import IngestOptions
from gristmill.storage.workspace import Workspace

runner = CliRunner()

# Four domains with disjoint vocabularies: a model trained on more of a domain has a lower loss
# on it, so the zoo's mixtures drive its per-domain bits per byte.
VOCABULARIES = {
    "animals": "cat dog horse cow sheep goat lion tiger bear wolf fox deer rabbit mouse owl hawk",
    "numbers": "one two three four five six seven eight nine ten eleven twelve zero hundred",
    "colors": "red green blue yellow purple orange black white grey pink brown violet cyan teal",
    "food": "bread cheese apple pear rice beans soup salad butter honey milk tea coffee cake pie",
}
PLANTED = "colors"


def cli(*args: str, code: int = 0) -> str:
    """Run the CLI in-process and check its exit code; returns stdout (or all output on error)."""
    result = runner.invoke(app, list(args))
    assert result.exit_code == code, (result.output, result.exception)
    return result.stdout if code == 0 else result.output


def _records(seed: int, per_domain: int = 60, domain_field: bool = True) -> list[dict]:
    rng = np.random.default_rng(seed)
    records = []
    for name, words in VOCABULARIES.items():
        vocabulary = words.split()
        for _ in range(per_domain):
            text = " ".join(rng.choice(vocabulary, size=int(rng.integers(40, 80)))) + "."
            records.append({"text": text, "dom": name} if domain_field else {"text": text})
    return records


ZOO_SETTINGS = {
    "target_domain": PLANTED, "models": 5, "sizes": ["xs", "s"], "tokens": [6000, 12000],
    "micro_batch_size": 8, "heldout_fraction": 0.2, "device": "cpu",
}  # fmt: skip


@pytest.fixture(scope="module")
def zoo_workspace(tmp_path_factory: pytest.TempPathFactory, prefect_server: None) -> Path:
    """A recipe run: a pool of four domains, a corpus without domains, a zoo of five tiny
    models whose benchmark is the held-out loss of the planted domain, and a 20% selection."""
    root = tmp_path_factory.mktemp("pc")
    write_jsonl(root / "pool.jsonl", _records(0))
    write_jsonl(root / "flat.jsonl", _records(1, per_domain=25, domain_field=False))
    recipe = {
        "name": "pc", "workspace": "ws",
        "ingest": [{"corpus": "pool", "paths": ["pool.jsonl"], "domain_field": "dom"},
                   {"corpus": "flat", "paths": ["flat.jsonl"]}],
        "zoo": [{"name": "z", "corpus": "pool", **ZOO_SETTINGS}],
        "select": [{"name": "pc", "corpus": "pool", "selector": "perplexity_correlation",
                    "params": {"zoo": "z"}, "budget": "20%"}],
    }  # fmt: skip
    (root / "recipe.yaml").write_text(yaml.safe_dump(recipe), encoding="utf-8")
    cli("run", str(root / "recipe.yaml"))
    return root / "ws"


# -- parity with the perplexity-correlations package ---------------------------------------------


def test_estimators_match_the_reference_package() -> None:
    reference = pytest.importorskip("perplexity_correlations.estimation")
    rng = np.random.default_rng(0)
    x, y = rng.random((15, 60)) * 3, rng.random(15)
    for name, estimator in pc_math.ESTIMATORS.items():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            expected = getattr(reference, name)(x, y)
        np.testing.assert_allclose(estimator(x, y), expected, atol=1e-12, err_msg=name)


def test_projections_match_the_reference_package() -> None:
    reference = pytest.importorskip("perplexity_correlations.projection")
    rng = np.random.default_rng(1)
    for trial in range(20):
        estimate = rng.normal(size=50)  # distinct values: both sort the same way
        tau = rng.random(50) * (0.05 if trial % 2 else 0.5) + 1e-3
        if tau.sum() < 1:
            tau *= 1.2 / tau.sum()
        np.testing.assert_allclose(
            pc_math.linear(estimate, tau), reference.linear(estimate, tau), atol=1e-6
        )  # fmt: skip  (the package returns float32)
        np.testing.assert_allclose(pc_math.l2(estimate, tau), reference.l2(estimate, tau),
                                   atol=1e-9)  # fmt: skip
        for project in (pc_math.linear, pc_math.l2):
            p = project(estimate, tau)
            assert abs(p.sum() - 1) < 1e-9 and np.all(p >= 0) and np.all(p <= tau + 1e-12)


def test_ranks_with_ties_average_and_linear_fills_best_first() -> None:
    x = np.array([[1.0, 2.0, 2.0], [2.0, 2.0, 1.0], [3.0, 2.0, 0.0]])
    y = np.array([0.1, 0.2, 0.3])
    estimate = pc_math.sign_cdf(x, y)
    assert estimate[0] > 0 > estimate[2] and estimate[1] == 0  # a constant column says nothing
    assert pc_math.spearmanr(x, y)[0] == pytest.approx(1.0)
    p = pc_math.linear(np.array([0.5, 0.9, -1.0]), np.array([0.7, 0.6, 1.0]))
    np.testing.assert_allclose(p, [0.4, 0.6, 0.0])
    bpb = np.array([[1.0, 3.0, 2.0], [2.0, np.nan, 4.0]])
    grouped = pc_math.grouped_bits_per_byte(bpb, np.array([1, 3, 2]), np.array([0, 0, 1]), 2)
    np.testing.assert_allclose(grouped, [[2.5, 2.0], [2.0, 4.0]])  # token-weighted, NaN skipped


def test_spearman_is_the_correlation_of_ranks_with_ties() -> None:
    from scipy.stats import spearmanr as scipy_spearmanr

    rng = np.random.default_rng(2)
    x = rng.integers(0, 3, size=(12, 40)).astype(float)  # many ties in every column
    y = rng.integers(0, 4, size=12).astype(float)  # ties in y too
    x[:, 0] = 1.5  # a constant column: no correlation, not 0.5
    expected = [scipy_spearmanr(x[:, j], y).statistic for j in range(1, x.shape[1])]
    estimate = pc_math.spearmanr(x, y)
    assert estimate[0] == 0
    np.testing.assert_allclose(estimate[1:], expected, atol=1e-12)
    assert pc_math.spearmanr(x, np.full(12, 0.3)).tolist() == [0.0] * 40  # constant y


# -- the zoo and the planted check ----------------------------------------------------------------


def test_zoo_is_hf_checkpoints_and_a_csv(zoo_workspace: Path) -> None:
    zoo_csv = find_zoo_csv(Workspace(zoo_workspace), "z")
    zoo = load_zoo(zoo_csv)
    assert len(zoo.models) == 5 and all(0 <= m.error < 1 for m in zoo.models)
    for entry in zoo.models:
        assert (zoo_csv.parent / entry.model / "model.safetensors").exists()
        assert (zoo_csv.parent / entry.model / "tokenizer.json").exists()
    meta = zoo.metadata
    assert meta["benchmark"]["target_domain"] == PLANTED and meta["heldout_fraction"] == 0.2
    assert {m["size"] for m in meta["models"]} <= {"xs", "s"}
    mixtures = np.array([list(m["mixture"].values()) for m in meta["models"]])
    np.testing.assert_allclose(mixtures.sum(axis=1), 1.0)
    assert len({tuple(np.round(m, 6)) for m in mixtures}) == 5  # each model its own mixture


def test_zoo_build_resumes_and_refuses_other_settings(zoo_workspace: Path) -> None:
    ws = str(zoo_workspace)
    zoo_csv = zoo_workspace / "zoos" / "z" / "zoo.csv"
    before = zoo_csv.read_text()
    args = ["zoo", "build", "pool", "--name", "z", "--target-domain", PLANTED, "--models", "5",
            "--param", 'sizes=["xs", "s"]', "--param", "tokens=[6000, 12000]",
            "--param", "micro_batch_size=8", "--param", "heldout_fraction=0.2",
            "-w", ws]  # fmt: skip
    out = cli(*args, "--device", "cpu")
    assert "5 models" in out and zoo_csv.read_text() == before  # finished models are kept
    out = cli(*args[:8], "4", *args[9:], code=2)
    assert "other settings" in out


def test_planted_domain_ranks_first_and_fills_the_selection(zoo_workspace: Path) -> None:
    ws = str(zoo_workspace)
    record = json.loads(cli("inspect", "pc", "--ranked", "3", "-w", ws, "--json"))
    scoring = record["selection"]["summary"]["scoring"]
    ranking = [d["domain"] for d in scoring["domains"]]
    assert PLANTED in ranking[:2], scoring["domains"]
    assert scoring["classifier"]["trained"] and scoring["unit"] == "domain"
    kept = {d["domain"]: d["kept"] for d in record["selection"]["summary"]["domains"]}
    assert sum(kept.values()) == 48 and kept[PLANTED] / 48 >= 0.75, kept
    assert {r["domain"] for r in record["highest"]} == {PLANTED}
    text = cli("inspect", "pc", "-w", ws)
    assert "domains by estimate" in text

    # The zoo's losses are lm_loss signals, scored once per model and corpus and reused.
    stored = json.loads(cli("sql", 'select count(distinct config_hash) n from signals '
                            "where signal = 'lm_loss'", "-w", ws, "--json"))  # fmt: skip
    assert stored[0]["n"] == 5
    again = json.loads(cli("select", "pool", "--selector", "perplexity_correlation", "--param",
                           "zoo=z", "--param", "estimator=spearmanr", "--budget", "20%",
                           "--name", "pc2", "-w", ws, "--json"))  # fmt: skip
    assert again["selection"]["n_selected"] == 48
    stored = json.loads(cli("sql", "select count(*) n from signals where signal = 'lm_loss'",
                            "-w", ws, "--json"))  # fmt: skip
    assert stored[0]["n"] == 5  # one shard x five models: nothing rescored


def test_per_document_mode_without_domains(zoo_workspace: Path) -> None:
    ws = Workspace(zoo_workspace)
    selector = PerplexityCorrelationSelector.from_params({"zoo": "z", "estimator": "spearmanr"})
    plan = pipeline.curate(ws, "flat", selector, budget="25%").plan
    table = pq.read_table(ws.absolute(plan.stored["set"]))
    report = json.loads(table.schema.metadata[b"gristmill"])
    assert report["unit"] == "document" and table.num_rows == 100
    weights = table["weight"].to_numpy()
    assert weights.sum() == pytest.approx(1.0) and (weights > 0).sum() == 25
    # Per document, the linear projection keeps the best-estimated documents whole.
    scores = table["score"].to_numpy()
    assert scores[weights > 0].min() >= scores[weights == 0].max()


# -- errors --------------------------------------------------------------------------------------


def _context(zoo_workspace: Path) -> SelectorContext:
    return SelectorContext(Workspace(zoo_workspace), "pool", budget=Budget.parse("20%"))


def _zoo_csv(tmp_path: Path, rows: list[str], header: str = "model,error") -> str:
    path = tmp_path / f"zoo-{len(list(tmp_path.glob('zoo-*.csv')))}.csv"
    path.write_text("\n".join([header, *rows]) + "\n", encoding="utf-8")
    return str(path)


def test_bad_zoos_are_input_errors_naming_file_and_key(zoo_workspace: Path, tmp_path: Path) -> None:
    models = Workspace(zoo_workspace).root / "zoos" / "z"
    good = [f"{models / f'model-00{i}'},0.{i + 1}" for i in range(3)]
    out_of_range = [good[0], good[1][:-3] + "1.5", good[2]]
    missing_model = [*good[:2], "./missing-model,0.3"]
    cases = {
        "at least 3 models": _zoo_csv(tmp_path, good[:2]),
        "line 3: error: 1.5 is outside [0, 1]": _zoo_csv(tmp_path, out_of_range),
        "line 4: model: './missing-model' not found": _zoo_csv(tmp_path, missing_model),
        "header: missing column(s) error": _zoo_csv(tmp_path, ["a,1"], header="model,accuracy"),
        "no such zoo": str(tmp_path / "nowhere"),
    }
    for expected, zoo in cases.items():
        selector = PerplexityCorrelationSelector.from_params({"zoo": zoo})
        with pytest.raises(InputError) as raised:
            selector.prepare(_context(zoo_workspace))
        assert expected in str(raised.value), (expected, str(raised.value))
        if expected != "no such zoo":
            assert f"{tmp_path}/zoo-" in str(raised.value)
    out = cli("select", "pool", "--selector", "perplexity_correlation", "--param",
              f"zoo={_zoo_csv(tmp_path, good[:2])}", "--budget", "20%", "--name", "bad",
              "-w", str(zoo_workspace), code=2)  # fmt: skip
    assert "at least 3 models" in out


def test_needs_a_budget_or_keep_fraction(zoo_workspace: Path) -> None:
    selector = PerplexityCorrelationSelector.from_params({"zoo": "z"})
    with pytest.raises(InputError, match="needs a budget"):
        selector.prepare(SelectorContext(Workspace(zoo_workspace), "pool"))
    out = cli("zoo", "build", "pool", "--name", "y", "--target-domain", "nope", "--models", "3",
              "-w", str(zoo_workspace), code=2)  # fmt: skip
    assert "target_domain" in out and "nope" in out


# -- keys ----------------------------------------------------------------------------------------


def _members(workspace: Path, name: str) -> list[int]:
    return pq.read_table(Workspace(workspace).selection_dir(name) / "members.parquet")[
        "doc_id"
    ].to_pylist()


@pytest.mark.slow
def test_zoo_losses_run_as_ray_tasks(zoo_workspace: Path, tmp_path: Path) -> None:
    """Each zoo model's per-shard losses are tasks of the run's task runner like any shard: on
    Ray, in a fresh workspace, every model scores the pool once and the selection is the one
    the recipe's thread run made."""
    pytest.importorskip("prefect_ray")
    from gristmill.flows.tasks import curate_flow, task_runner

    fresh = tmp_path / "ws"
    pool = zoo_workspace.parent / "pool.jsonl"
    pipeline.ingest(Workspace(fresh), [str(pool)], "pool", IngestOptions(domain_field="dom"))
    flow = curate_flow.with_options(task_runner=task_runner("ray", 2))
    zoo = str(zoo_workspace / "zoos" / "z")
    state = flow(str(fresh), "pool", "perplexity_correlation", params={"zoo": zoo},
                 budget="20%", name="pc", return_state=True)  # fmt: skip
    assert state.result()["selection"]["n_selected"] == 48
    from prefect import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    with get_client(sync_client=True) as client:
        runs = client.read_task_runs(
            flow_run_filter=FlowRunFilter(
                id=FlowRunFilterId(any_=[state.state_details.flow_run_id])
            )
        )
    # Task runs are named after their shards ("score shard 00000 of pool"); the task is known
    # by its key. Five models' losses plus the selector's own per-shard pass: Prefect tasks on
    # Ray, one each, as the pool is one shard (a task runs a group of small shards).
    shard_tasks = [t for t in runs if t.task_key.startswith("score_shard_task-")]
    assert len(shard_tasks) == 6 and all(t.state.name == "Completed" for t in shard_tasks)
    with Workspace(fresh).catalog(read_only=True) as con:
        losses = con.execute(
            "select count(distinct config_hash), count(*) from signals where signal = 'lm_loss'"
        ).fetchone()
    assert losses == (5, 5)  # five models x one shard
    assert _members(fresh, "pc") == _members(zoo_workspace, "pc")


def test_a_retrained_zoo_model_rescores_only_its_losses(zoo_workspace: Path) -> None:
    """Last in the module: it changes one model's files (same weights, so later runs agree)."""
    ws = Workspace(zoo_workspace)
    models = sorted((ws.root / "zoos" / "z").glob("model-*"))
    before = pipeline.curate(ws, "pool", "perplexity_correlation", params={"zoo": "z"},
                             budget="20%")  # fmt: skip
    losses = [f"loss:{i}" for i in range(len(models))]
    assert {label: before.requirements[label].scored for label in losses} == dict.fromkeys(
        losses, 0
    )
    config = models[1] / "config.json"
    config.write_text(json.dumps(json.loads(config.read_text()), indent=4), encoding="utf-8")
    after = pipeline.curate(ws, "pool", "perplexity_correlation", params={"zoo": "z"},
                            budget="20%")  # fmt: skip
    rescored = {label: after.requirements[label].scored for label in losses}
    assert rescored == {label: int(label == "loss:1") for label in losses}
    assert after.scored == 0  # the per-shard pass (doc_id, domain) reads no model
    assert after.plan.config_hash != before.plan.config_hash  # the set signal recomputed
