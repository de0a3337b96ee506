"""The experiment: what continued pretraining on each selection is worth downstream.

A base model (trained from a preset or loaded) -> for each arm and seed: continued pretraining
on the arm's data for the same token budget -> fine-tuning on the task -> evaluation. Arms:
`none` (no continued pretraining), `full` (the whole pool), `random` (random pool documents,
as many tokens as the largest selection arm) and any selection by name. Plain library code:
the Prefect flow in gristmill.flows.experiment schedules it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from gristmill.errors import InputError
from gristmill.storage.workspace import Workspace
from gristmill.training.config import BUILTIN_ARMS, ExperimentSpec, TaskSpec
from gristmill.training.data import DataSource, heldout_mask, read_documents, take_tokens, tokenize
from gristmill.training.finetune import (
    ClassificationData,
    SFTData,
    evaluate_classification,
    evaluate_sft,
    finetune_classification,
    finetune_sft,
)
from gristmill.training.lm import bits_per_byte, continue_pretraining, pretrain
from gristmill.training.models import (
    load_causal_lm,
    load_tokenizer,
    resolve_model_path,
    save_model,
)
from gristmill.training.trainer import DONE_FILE, is_done

BASE_SETTINGS = "gristmill_base.json"  # the experiment settings a workspace base was made with


def check_sources(workspace: Workspace, spec: ExperimentSpec) -> None:
    """Every corpus and selection the experiment needs exists (before anything trains)."""
    from gristmill.storage import catalog

    with workspace.catalog(read_only=True) as con:
        known = set(catalog.corpus_names(con))
        selections = {r[0] for r in con.execute("select name from selections").fetchall()}
    needed = {
        "pool": spec.pool,
        "target": spec.target,
        "task.corpus": spec.task.corpus,
        "base.corpus": spec.base.corpus,
    }
    for key, corpus in needed.items():
        if corpus is not None and corpus not in known:
            raise InputError(f"experiment.{key}: no corpus named {corpus!r} in the workspace")
    for index, arm in enumerate(spec.arms):
        if arm not in BUILTIN_ARMS and arm not in selections:
            raise InputError(
                f"experiment.arms.{index}: {arm!r} is neither none/random/full nor a selection "
                f"(selections: {', '.join(sorted(selections)) or 'none yet'})"
            )


def data_versions(workspace: Workspace, spec: ExperimentSpec) -> dict[str, str | None]:
    """Versions of every corpus and selection an experiment reads, so changed data is a new run."""
    from gristmill.storage import catalog
    from gristmill.storage.files import file_hash

    corpora = {spec.pool, spec.target, spec.task.corpus, spec.base.corpus} - {None}
    with workspace.catalog(read_only=True) as con:
        versions: dict[str, str | None] = {
            f"corpus:{c}": catalog.corpus_version(con, c) for c in sorted(corpora)
        }
    for arm in spec.selection_arms():
        members = workspace.selection_dir(arm) / "members.parquet"
        versions[f"selection:{arm}"] = file_hash(members) if members.exists() else None
    return versions


def _texts(workspace: Workspace, source: DataSource, split: str, fraction: float) -> list[str]:
    return read_documents(workspace, source, split, fraction, ("doc_id", "text"))[
        "text"
    ].to_pylist()  # type: ignore[arg-type]


def prepare_base(workspace: Workspace, spec: ExperimentSpec) -> str:
    """Path of the base model: loaded and saved into the workspace, or pretrained there."""
    if spec.base.model is not None:
        source = resolve_model_path(spec.base.model, workspace.root / "models")
        if Path(source).is_dir():  # a local or workspace model is used where it is
            return source
    out_dir = workspace.root / "models" / spec.base.name
    settings = {
        "base": spec.base.model_dump(mode="json"),
        "heldout": spec.heldout_fraction,
        "pool": spec.pool,
        "data": data_versions(workspace, spec)[f"corpus:{spec.base.corpus or spec.pool}"],
    }
    origin = out_dir / BASE_SETTINGS
    if origin.exists() and json.loads(origin.read_text(encoding="utf-8")) != settings:
        raise InputError(
            f"experiment.base.name: models/{spec.base.name} was made with other settings "
            f"({origin}); give this base another name"
        )
    if is_done(out_dir) or (spec.base.model is not None and (out_dir / "config.json").exists()):
        return str(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    origin.write_text(json.dumps(settings, indent=2), encoding="utf-8")
    if spec.base.model is not None:  # a hub model, copied into the workspace once
        tokenizer = load_tokenizer(source)
        model = load_causal_lm(source, trust_remote_code=spec.base.trust_remote_code)
        save_model(model, tokenizer, out_dir)
        return str(out_dir)
    corpus = spec.base.corpus or spec.pool
    texts = _texts(workspace, DataSource(corpus=corpus), "train", spec.heldout_fraction)
    pretrain(
        spec.base.preset,
        texts,
        out_dir,
        spec.base.train,
        spec.base.vocab_size,
        description=f"pretrain base {spec.base.name}",
    )
    return str(out_dir)


def arm_texts(
    workspace: Workspace, spec: ExperimentSpec, arm: str, seed: int, tokenizer: Any
) -> list[str]:
    """Training documents of an arm (never held-out ones)."""
    fraction = spec.heldout_fraction
    if arm in spec.selection_arms():
        return _texts(workspace, DataSource(selection=arm), "train", fraction)
    pool = _texts(workspace, DataSource(corpus=spec.pool), "train", fraction)
    if arm == "full":
        return pool
    budget = spec.random_tokens or random_budget(workspace, spec, tokenizer)
    token_lists = tokenize(tokenizer, pool)
    order = np.random.default_rng([seed, 7919]).permutation(len(pool))
    return [pool[i] for i in sorted(take_tokens(token_lists, order, budget))]


def random_budget(workspace: Workspace, spec: ExperimentSpec, tokenizer: Any) -> int:
    """Tokens of the largest selection arm (with EOS), or the pool's half without any."""
    sizes = []
    for arm in spec.selection_arms():
        texts = _texts(workspace, DataSource(selection=arm), "train", spec.heldout_fraction)
        sizes.append(sum(len(t) + 1 for t in tokenize(tokenizer, texts)))
    if sizes:
        return max(sizes)
    pool = _texts(workspace, DataSource(corpus=spec.pool), "train", spec.heldout_fraction)
    return max(1, sum(len(t) + 1 for t in tokenize(tokenizer, pool)) // 2)


def task_data(
    workspace: Workspace, task: TaskSpec
) -> tuple[ClassificationData | SFTData, ClassificationData | SFTData]:
    """Train and test examples of the task (a deterministic split by doc_id)."""
    table = read_documents(
        workspace, DataSource(corpus=task.corpus), columns=("doc_id", "text", "meta")
    )
    test = heldout_mask(table["doc_id"].to_numpy(), task.test_fraction)
    texts = table["text"].to_pylist()
    metas = [json.loads(m) if m else {} for m in table["meta"].to_pylist()]
    sides = {"train": np.flatnonzero(~test), "test": np.flatnonzero(test)}
    limits = {"train": task.max_train_examples, "test": task.max_test_examples}
    sides = {k: v[: limits[k]] if limits[k] else v for k, v in sides.items()}
    if task.kind == "classification":
        labels = []
        for index, meta in enumerate(metas):
            if task.label_field not in meta:
                raise InputError(
                    f"experiment.task.label_field: document {index} of corpus {task.corpus!r} "
                    f"has no meta field {task.label_field!r} (fields: {', '.join(meta)})"
                )
            labels.append(str(meta[task.label_field]))
        names = sorted(set(labels))
        ids = {name: i for i, name in enumerate(names)}
        return tuple(  # type: ignore[return-value]
            ClassificationData([texts[i] for i in rows], [ids[labels[i]] for i in rows], names)
            for rows in (sides["train"], sides["test"])
        )
    prompts = []
    for index, meta in enumerate(metas):
        try:
            prompts.append(task.prompt_template.format_map(meta))
        except (KeyError, IndexError, ValueError) as error:
            raise InputError(
                f"experiment.task.prompt_template: document {index} of corpus {task.corpus!r}: "
                f"{error!r} (meta fields: {', '.join(meta)})"
            ) from None
    return tuple(  # type: ignore[return-value]
        SFTData([prompts[i] for i in rows], [texts[i] for i in rows])
        for rows in (sides["train"], sides["test"])
    )


def eval_texts(workspace: Workspace, spec: ExperimentSpec) -> list[str]:
    """Held-out target documents for bits per byte (never trained on by any arm)."""
    source = DataSource(corpus=spec.target or spec.pool)
    return _texts(workspace, source, "heldout", spec.heldout_fraction)[: spec.max_eval_docs]


def run_arm(
    workspace: Workspace, spec: ExperimentSpec, run_dir: Path, base: str, arm: str, seed: int
) -> dict[str, Any]:
    """Continue pretraining (unless `none`), fine-tune and evaluate one arm with one seed."""
    arm_dir = run_dir / "arms" / f"{arm}-seed{seed}"
    result_file = arm_dir / "metrics.json"
    if result_file.exists():  # finished before an interruption
        return json.loads(result_file.read_text(encoding="utf-8"))
    tokenizer = load_tokenizer(base)
    remote = spec.base.trust_remote_code  # every load of the base's descendants, not only the first
    lm_path = base
    cpt: dict[str, Any] = {}
    if arm != "none":
        texts = arm_texts(workspace, spec, arm, seed, tokenizer)
        lm_path = str(arm_dir / "continued")
        cpt = continue_pretraining(
            base,
            texts,
            Path(lm_path),
            spec.run_config(seed),
            description=f"continue pretraining: {arm}, seed {seed}",
            trust_remote_code=remote,
        )

    heldout = bits_per_byte(
        lm_path,
        eval_texts(workspace, spec),
        device=spec.continued.device,
        precision=spec.continued.precision,
        trust_remote_code=remote,
    )
    train_data, test_data = task_data(workspace, spec.task)
    ft_dir = arm_dir / "finetuned"
    task_config = spec.task.train.model_copy(update={"seed": seed})
    description = f"fine-tune: {arm}, seed {seed}"
    if isinstance(train_data, ClassificationData):
        assert isinstance(test_data, ClassificationData)
        finetune_classification(
            lm_path, tokenizer, train_data, task_config, ft_dir, spec.task.max_length,
            description, trust_remote_code=remote,
        )  # fmt: skip
        from transformers import AutoModelForSequenceClassification

        model = AutoModelForSequenceClassification.from_pretrained(
            str(ft_dir), use_safetensors=True, local_files_only=True, trust_remote_code=remote
        )
        task_metrics = evaluate_classification(
            model,
            tokenizer,
            test_data,
            spec.task.max_length,
            device=task_config.device,
            precision=task_config.precision,
        )
    else:
        assert isinstance(test_data, SFTData)
        finetune_sft(
            lm_path, tokenizer, train_data, task_config, ft_dir, spec.task.max_length,
            description, trust_remote_code=remote,
        )  # fmt: skip
        task_metrics = evaluate_sft(
            load_causal_lm(str(ft_dir), trust_remote_code=remote),
            tokenizer,
            test_data,
            spec.task.max_length,
            device=task_config.device,
            precision=task_config.precision,
        )
    result = {
        "arm": arm,
        "seed": seed,
        "metrics": {"bits_per_byte": heldout["bits_per_byte"], **task_metrics},
        "continued_tokens": cpt.get("tokens", 0),
        "continued_tokens_per_s": cpt.get("tokens_per_s"),
        "continued_mfu": cpt.get("mfu"),
        "eval_bytes": heldout["eval_bytes"],
        "task_train_examples": len(
            getattr(train_data, "texts", getattr(train_data, "prompts", []))
        ),
    }
    arm_dir.mkdir(parents=True, exist_ok=True)
    tmp = result_file.with_name(".metrics.json.tmp")
    tmp.write_text(json.dumps(result, indent=2), encoding="utf-8")
    tmp.replace(result_file)
    return result


def base_summary(base: str) -> dict[str, Any]:
    """What the base model's training recorded (empty for a loaded model)."""
    done = Path(base) / DONE_FILE
    return json.loads(done.read_text(encoding="utf-8")) if done.exists() else {}
