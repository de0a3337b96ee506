"""The experiment: what continued pretraining on each selection is worth downstream.

A base model (trained from a preset or loaded) -> for each arm and seed: continued pretraining
on the arm's data for the same token budget -> fine-tuning on the task -> evaluation. Arms:
`none` (no continued pretraining), `full` (the whole pool), `random` (random pool documents,
as many tokens as the largest selection arm) and any selection by name. Plain library code:
the Prefect flow in gristmill.flows.experiment schedules it.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import xxhash

from gristmill.errors import InputError
from gristmill.storage.files import resolve_model_path, write_json_atomic
from gristmill.storage.workspace import Workspace
from gristmill.training.config import BUILTIN_ARMS, ExperimentSpec, TaskSpec
from gristmill.training.data import (
    DataSource,
    ShardDocuments,
    heldout_mask,
    read_documents,
    take_tokens,
    texts_of,
    token_documents,
)
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
    save_model,
)
from gristmill.training.trainer import DONE_FILE, is_done

BASE_SETTINGS = "gristmill_base.json"  # the experiment settings a workspace base was made with


def check_sources(workspace: Workspace, spec: ExperimentSpec) -> None:
    """Every corpus and selection the experiment needs exists (before anything trains)."""
    from gristmill.storage import catalog

    with workspace.catalog(read_only=True) as con:
        known = set(catalog.corpus_names(con))
        selections = dict(con.execute("select name, corpus from selections").fetchall())
    needed = {
        "target": spec.target,
        "task.corpus": spec.task.corpus,
        "task.test_corpus": spec.task.test_corpus,
        "base.corpus": spec.base.corpus,
    }
    for key, corpus in needed.items():
        if corpus is not None and corpus not in known:
            raise InputError(f"experiment.{key}: no corpus named {corpus!r} in the workspace")
    if spec.pool is not None and spec.pool not in known and spec.pool not in selections:
        raise InputError(
            f"experiment.pool: no corpus or selection named {spec.pool!r} in the workspace"
        )
    for index, arm in enumerate(spec.arms):
        if arm not in BUILTIN_ARMS and arm not in selections:
            raise InputError(
                f"experiment.arms.{index}: {arm!r} is neither none/random/full nor a selection "
                f"(selections: {', '.join(sorted(selections)) or 'none yet'})"
            )
        if arm in selections and spec.vary == "finetune" and selections[arm] != spec.task.corpus:
            raise InputError(
                f"experiment.arms.{index}: selection {arm!r} is over corpus "
                f"{selections[arm]!r}, but fine-tuning arms select from the task corpus "
                f"{spec.task.corpus!r}"
            )


def source_of(workspace: Workspace, name: str) -> DataSource:
    """A corpus by that name, else the selection by that name (a pool can be either)."""
    from gristmill.storage import catalog

    with workspace.catalog(read_only=True) as con:
        is_corpus = name in set(catalog.corpus_names(con))
    return DataSource(corpus=name) if is_corpus else DataSource(selection=name)


def data_versions(workspace: Workspace, spec: ExperimentSpec) -> dict[str, str | None]:
    """Versions of every corpus and selection an experiment reads, so changed data is a new run."""
    from gristmill.storage import catalog
    from gristmill.storage.files import file_hash

    named = {spec.pool, spec.target, spec.task.corpus, spec.task.test_corpus, spec.base.corpus}
    sources = [source_of(workspace, n) for n in sorted(named - {None})]  # type: ignore[arg-type]
    corpora = sorted(s.corpus for s in sources if s.corpus is not None)
    with workspace.catalog(read_only=True) as con:
        versions: dict[str, str | None] = {
            f"corpus:{c}": catalog.corpus_version(con, c) for c in corpora
        }
    selected = [s.selection for s in sources if s.selection is not None]
    for arm in sorted(set(selected) | set(spec.selection_arms())):
        members = workspace.members_path(arm)
        versions[f"selection:{arm}"] = file_hash(members) if members.exists() else None
    return versions


def _version_of(versions: dict[str, str | None], source: DataSource) -> str | None:
    key = f"selection:{source.selection}" if source.selection else f"corpus:{source.corpus}"
    return versions[key]


def _texts(workspace: Workspace, source: DataSource, split: str, fraction: float) -> list[str]:
    return read_documents(workspace, source, split, fraction, ("doc_id", "text"))[
        "text"
    ].to_pylist()  # type: ignore[arg-type]


def prepare_base(workspace: Workspace, spec: ExperimentSpec) -> str:
    """Path of the base model: loaded and saved into the workspace, or pretrained there."""
    if spec.base.model is not None:
        model_path = resolve_model_path(spec.base.model, workspace.root / "models")
        if Path(model_path).is_dir():  # a local or workspace model is used where it is
            return model_path
    out_dir = workspace.root / "models" / spec.base.name
    corpus = spec.base_corpus()
    source = None if corpus is None else source_of(workspace, corpus)
    settings = {
        "base": spec.base.model_dump(mode="json"),
        "heldout": spec.heldout_fraction,
        "pool": corpus,  # what a preset base trains on (the key predates base.corpus)
        "data": None if source is None else _version_of(data_versions(workspace, spec), source),
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
    write_json_atomic(origin, settings)
    if spec.base.model is not None:  # a hub model, copied into the workspace once
        tokenizer = load_tokenizer(model_path)
        model = load_causal_lm(model_path, trust_remote_code=spec.base.trust_remote_code)
        save_model(model, tokenizer, out_dir)
        return str(out_dir)
    assert source is not None  # the spec's validator requires a corpus for a preset base
    texts = _texts(workspace, source, "train", spec.heldout_fraction)
    pretrain(
        spec.base.preset,
        texts,
        out_dir,
        spec.base.train,
        spec.base.vocab_size,
        description=f"pretrain base {spec.base.name}",
    )
    return str(out_dir)


def arm_documents(
    workspace: Workspace,
    spec: ExperimentSpec,
    arm: str,
    seed: int,
    base: str,
    budget: int | None = None,
) -> tuple[ShardDocuments, np.ndarray | None]:
    """Training documents of an arm (never held-out ones) as token shards of the base's
    tokenizer, and which of them it trains on (None: all); `budget`: the random arm's tokens."""
    fraction = spec.heldout_fraction
    if arm in spec.selection_arms():
        return token_documents(workspace, DataSource(selection=arm), "train", fraction, base), None
    pool = token_documents(workspace, _pool(workspace, spec), "train", fraction, base)
    if arm == "full":
        return pool, None
    budget = budget or random_size(workspace, spec, base)
    order = np.random.default_rng([seed, 7919]).permutation(len(pool))
    return pool, np.sort(take_tokens(pool.lengths, order, budget))


def _pool(workspace: Workspace, spec: ExperimentSpec) -> DataSource:
    if spec.pool is None:
        raise InputError("experiment.pool: the `full` and `random` arms need a pool")
    return source_of(workspace, spec.pool)


def random_budget(workspace: Workspace, spec: ExperimentSpec, base: str) -> int:
    """Tokens of the largest selection arm (with EOS), or the pool's half without any."""
    fraction = spec.heldout_fraction
    sizes = [
        int(token_documents(workspace, DataSource(selection=arm), "train", fraction, base)
            .lengths.sum())
        for arm in spec.selection_arms()
    ]  # fmt: skip
    if sizes:
        return max(sizes)
    pool = token_documents(workspace, _pool(workspace, spec), "train", fraction, base)
    return max(1, int(pool.lengths.sum()) // 2)


def _task_rows(
    workspace: Workspace, task: TaskSpec
) -> tuple[np.ndarray, list[str], list[dict[str, Any]], dict[str, np.ndarray]]:
    """doc_ids, texts and meta of the task's examples, and the rows of each side."""
    corpora = [task.corpus] if task.test_corpus is None else [task.corpus, task.test_corpus]
    tables = [
        read_documents(workspace, DataSource(corpus=c), columns=("doc_id", "text", "meta"))
        for c in corpora
    ]
    doc_ids = np.concatenate([t["doc_id"].to_numpy() for t in tables])
    texts = [text for t in tables for text in t["text"].to_pylist()]
    metas = [json.loads(m) if m else {} for t in tables for m in t["meta"].to_pylist()]
    if task.test_corpus is None:  # a deterministic split by doc_id
        test = heldout_mask(doc_ids, task.test_fraction)
    else:
        test = np.arange(len(doc_ids)) >= tables[0].num_rows
    sides = {"train": np.flatnonzero(~test), "test": np.flatnonzero(test)}
    limits = {"train": task.max_train_examples, "test": task.max_test_examples}
    sides = {k: v[: limits[k]] if limits[k] else v for k, v in sides.items()}
    return doc_ids, texts, metas, sides


def task_train_ids(workspace: Workspace, task: TaskSpec) -> np.ndarray:
    """doc_ids of the task's training examples (what a fine-tuning arm selects from)."""
    doc_ids, _, _, sides = _task_rows(workspace, task)
    return doc_ids[sides["train"]]


def task_data(
    workspace: Workspace, task: TaskSpec, keep: np.ndarray | None = None
) -> tuple[ClassificationData | SFTData, ClassificationData | SFTData]:
    """Train and test examples of the task; `keep` restricts training to those doc_ids."""
    doc_ids, texts, metas, sides = _task_rows(workspace, task)
    if keep is not None:
        sides["train"] = sides["train"][np.isin(doc_ids[sides["train"]], keep)]
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


def random_size(workspace: Workspace, spec: ExperimentSpec, base: str | None) -> int:
    """Size of the `random` arm: tokens of continued pretraining (`random_tokens`, else the
    largest selection arm, in the base's tokens), or fine-tuning examples (`random_examples`,
    else likewise)."""
    if spec.vary == "continued":
        assert base is not None  # continued pretraining always has a base
        return spec.random_tokens or random_budget(workspace, spec, base)
    if spec.random_examples:
        return spec.random_examples
    train_ids = task_train_ids(workspace, spec.task)
    sizes = [int(np.isin(train_ids, _members(workspace, a)).sum()) for a in spec.selection_arms()]
    return max(sizes or [len(train_ids) // 2])


def finetune_keep(
    workspace: Workspace, spec: ExperimentSpec, arm: str, seed: int, size: int | None = None
) -> np.ndarray | None:
    """doc_ids a fine-tuning arm trains on: all (`full`), a selection's, or `size` random
    training examples (`random`)."""
    if arm == "full":
        return None
    if arm != "random":
        return _members(workspace, arm)
    train_ids = task_train_ids(workspace, spec.task)
    size = size or random_size(workspace, spec, None)
    rng = np.random.default_rng([seed, 7919])
    return rng.choice(train_ids, size=min(size, len(train_ids)), replace=False)


def arm_dir(
    workspace: Workspace, spec: ExperimentSpec, arm: str, seed: int, size: int | None
) -> Path:
    """Where one arm run lives: `runs/arms/<arm>-seed<n>-<hash>`, the hash over everything the
    result depends on (settings, data versions, the random arm's size) and not the list of
    other arms, so adding an arm to a study reuses every finished arm run."""
    versions = data_versions(workspace, spec)
    own = {k: v for k, v in versions.items() if k.removeprefix("selection:") not in spec.arms}
    settings = spec.model_dump(
        mode="json", exclude={"name", "arms", "seeds", "random_tokens", "random_examples"}
    )
    key = json.dumps(
        [settings, own, arm, versions.get(f"selection:{arm}"), size if arm == "random" else None],
        sort_keys=True,
    )
    return _run_path(workspace, "arms", arm, seed, key)


def continued_dir(
    workspace: Workspace, spec: ExperimentSpec, arm: str, seed: int, size: int | None
) -> Path:
    """Where an arm's continued-pretraining checkpoint lives: `runs/continued/<arm>-seed<n>-
    <hash>`, the hash over what that training depends on alone (base, continued settings,
    pool, the arm's data), so experiments that differ only in task or target share it."""
    versions = data_versions(workspace, spec)
    sources = {spec.pool, spec.base.corpus, arm} - {None}
    own = {k: v for k, v in versions.items() if k.split(":", 1)[1] in sources}
    settings = {
        "base": spec.base.model_dump(mode="json"),
        "continued": spec.run_config(seed).model_dump(mode="json"),
        "pool": spec.pool,
        "heldout_fraction": spec.heldout_fraction,
    }
    key = json.dumps([settings, own, arm, size if arm == "random" else None], sort_keys=True)
    return _run_path(workspace, "continued", arm, seed, key)


def _run_path(workspace: Workspace, kind: str, arm: str, seed: int, key: str) -> Path:
    digest = xxhash.xxh3_64_hexdigest(key.encode())[:10]
    return workspace.root / "runs" / kind / f"{arm}-seed{seed}-{digest}"


def finished_arm(
    workspace: Workspace, spec: ExperimentSpec, base: str, arm: str, seed: int
) -> dict[str, Any] | None:
    """The result of a finished arm run, or None."""
    size = random_size(workspace, spec, base) if arm == "random" else None
    result = arm_dir(workspace, spec, arm, seed, size) / "metrics.json"
    return json.loads(result.read_text(encoding="utf-8")) if result.exists() else None


def _members(workspace: Workspace, selection: str) -> np.ndarray:
    return read_documents(workspace, DataSource(selection=selection), columns=("doc_id",))[
        "doc_id"
    ].to_numpy()


def eval_texts(workspace: Workspace, spec: ExperimentSpec) -> list[str]:
    """Target documents for bits per byte (held-out ones unless target_split is `all`)."""
    source = _pool(workspace, spec) if spec.target is None else DataSource(corpus=spec.target)
    texts = _texts(workspace, source, spec.target_split, spec.heldout_fraction)
    return texts[: spec.max_eval_docs]


def _sample(count: int, limit: int, seed: int) -> np.ndarray:
    """Up to `limit` of `count` items' indices, drawn by the seed (the same for every arm of a
    seed), in order."""
    if count <= limit:
        return np.arange(count)
    return np.sort(np.random.default_rng([seed, 104729]).choice(count, limit, replace=False))


def run_arm(
    workspace: Workspace, spec: ExperimentSpec, base: str, arm: str, seed: int
) -> dict[str, Any]:
    """Continue pretraining (unless `none`) or select the fine-tuning set, fine-tune and
    evaluate one arm with one seed; a finished run (of this or another study) is read back."""
    tokenizer = load_tokenizer(base)
    size = random_size(workspace, spec, base) if arm == "random" else None
    out_dir = arm_dir(workspace, spec, arm, seed, size)
    result_file = out_dir / "metrics.json"
    if result_file.exists():  # finished before an interruption, or before arms were added
        return json.loads(result_file.read_text(encoding="utf-8"))
    started = time.monotonic()
    remote = spec.base.trust_remote_code  # every load of the base's descendants, not only the first
    lm_path = base
    cpt: dict[str, Any] = {}
    metrics: dict[str, float] = {}
    keep = None
    evaluate = {
        "device": spec.continued.device,
        "precision": spec.continued.precision,
        "trust_remote_code": remote,
    }
    if spec.vary == "continued":
        texts: list[str] = []
        if arm != "none":
            documents, chosen = arm_documents(workspace, spec, arm, seed, base, size)
            lm_path = str(continued_dir(workspace, spec, arm, seed, size))
            cpt = continue_pretraining(
                base,
                documents,
                Path(lm_path),
                spec.run_config(seed),
                description=f"continue pretraining: {arm}, seed {seed}",
                trust_remote_code=remote,
                chosen=chosen,
            )
            # The arm's own documents the training loss is measured on: only their texts.
            trained = documents.doc_ids if chosen is None else documents.doc_ids[chosen]
            sample = trained[_sample(len(trained), spec.max_eval_docs, seed)]
            texts = texts_of(workspace, documents.corpus, sample)
        metrics["bits_per_byte"] = bits_per_byte(lm_path, eval_texts(workspace, spec), **evaluate)[
            "bits_per_byte"
        ]
        # Memorisation shows as a gap between the loss on the arm's own training documents and
        # on held-out pool documents (the `none` arm has no training documents).
        pool_heldout = _texts(workspace, _pool(workspace, spec), "heldout", spec.heldout_fraction)
        picked = _sample(len(pool_heldout), spec.max_eval_docs, seed)
        heldout_sample = [pool_heldout[i] for i in picked]
        heldout = bits_per_byte(lm_path, heldout_sample, **evaluate)
        metrics["heldout_loss"] = heldout["token_loss"]
        if texts:
            train = bits_per_byte(lm_path, texts, **evaluate)
            metrics["train_loss"] = train["token_loss"]
            metrics["loss_gap"] = heldout["token_loss"] - train["token_loss"]
    else:
        keep = finetune_keep(workspace, spec, arm, seed, size)
    train_data, test_data = task_data(workspace, spec.task, keep)
    n_train = len(getattr(train_data, "texts", getattr(train_data, "prompts", [])))
    if n_train == 0:
        raise InputError(f"experiment.arms: arm {arm!r} has no training examples of the task")
    ft_dir = out_dir / "finetuned"
    task_config = spec.task.train.model_copy(update={"seed": seed})
    description = f"fine-tune: {arm}, seed {seed}"
    on_device = {"device": task_config.device, "precision": task_config.precision}
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
            model, tokenizer, test_data, spec.task.max_length, **on_device
        )
        if spec.vary == "finetune":
            seen = _subset(train_data, spec.max_eval_docs, seed)
            fitted = evaluate_classification(
                model, tokenizer, seen, spec.task.max_length, **on_device
            )
            task_metrics["train_accuracy"] = fitted["accuracy"]
    else:
        assert isinstance(test_data, SFTData)
        finetune_sft(
            lm_path, tokenizer, train_data, task_config, ft_dir, spec.task.max_length,
            description, trust_remote_code=remote,
        )  # fmt: skip
        model = load_causal_lm(str(ft_dir), trust_remote_code=remote)
        task_metrics = evaluate_sft(model, tokenizer, test_data, spec.task.max_length, **on_device)
        if spec.vary == "finetune":
            seen = _subset(train_data, spec.max_eval_docs, seed)
            fitted = evaluate_sft(model, tokenizer, seen, spec.task.max_length, **on_device)
            task_metrics["train_response_loss"] = fitted["response_loss"]
            task_metrics["response_loss_gap"] = (
                task_metrics["response_loss"] - fitted["response_loss"]
            )
    result = {
        "arm": arm,
        "seed": seed,
        "metrics": {**metrics, **task_metrics},
        "continued_tokens": cpt.get("tokens", 0),
        "continued_tokens_per_s": cpt.get("tokens_per_s"),
        "continued_mfu": cpt.get("mfu"),
        "task_train_examples": n_train,
        "wall_s": time.monotonic() - started,
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    write_json_atomic(result_file, result)
    return result


def _subset(data: ClassificationData | SFTData, limit: int, seed: int) -> Any:
    """Up to `limit` training examples, drawn by the seed (to measure the training fit)."""
    size = len(data.texts) if isinstance(data, ClassificationData) else len(data.prompts)
    rows = _sample(size, limit, seed)
    if isinstance(data, ClassificationData):
        return ClassificationData(
            [data.texts[i] for i in rows], [data.labels[i] for i in rows], data.label_names
        )
    return SFTData([data.prompts[i] for i in rows], [data.responses[i] for i in rows])


def base_summary(base: str) -> dict[str, Any]:
    """What the base model's training recorded (empty for a loaded model)."""
    done = Path(base) / DONE_FILE
    return json.loads(done.read_text(encoding="utf-8")) if done.exists() else {}
