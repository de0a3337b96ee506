"""Checks that need no flow: every mistake that can be found before anything runs, refused at once.

The CLI calls these before it imports the flows (Prefect's start-up costs seconds), so a
misspelt selector, an unknown corpus or a full output directory fails in well under a second.
Each check reuses the validation the library step itself does; the catalog is only read.
Nothing here imports Prefect.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from gristmill.errors import InputError, NotFoundError
from gristmill.pipeline.ingestion import as_workspace, check_first_records
from gristmill.recipe import Recipe
from gristmill.selectors import registry
from gristmill.selectors.base import Selector
from gristmill.selectors.budget import Budget
from gristmill.selectors.selection import SelectOptions
from gristmill.storage import catalog, exporters
from gristmill.storage.readers import READERS, IngestOptions, expand_inputs, is_url
from gristmill.storage.workspace import Workspace, validate_name

RUNNERS = ("threads", "processes", "ray", "dask")


def check_runner(runner: str, address: str | None = None) -> None:
    """InputError for an unknown task runner, or an address for a runner that takes none."""
    if runner not in RUNNERS:
        raise InputError(f"unknown runner {runner!r} (use one of {', '.join(RUNNERS)})")
    if address is not None and runner not in ("ray", "dask"):
        raise InputError(f"--address needs --runner ray or dask, not {runner!r}")


def check_can_write(path: Path) -> None:
    """InputError unless `path` could be created or written: its nearest existing ancestor is a
    writable directory."""
    existing = path
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if existing.exists() and not existing.is_dir():
        raise InputError(f"{path}: {existing} is a file, not a directory")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise InputError(f"{path}: cannot write there ({existing} is not writable)")


def check_workspace(workspace: Workspace) -> None:
    """The workspace may be written: a workspace or a new or empty directory, writable."""
    workspace.check_writable()
    check_can_write(workspace.root)


def check_selector(
    selector: str, params: dict[str, Any], options: SelectOptions | None = None
) -> Selector:
    """The selector built from its name and params (InputError naming each bad key), with the
    selection options it could not use refused."""
    built = registry.get(selector).from_params(params)
    options = options or SelectOptions()
    mode = options.mode or built.default_mode
    if mode == "threshold" and options.threshold is None and built.default_threshold is None:
        raise InputError(f"selector {selector}: threshold mode needs --threshold")
    return built


def check_curate(
    workspace: Workspace | str | os.PathLike[str],
    corpus: str,
    selector: str,
    *,
    params: dict[str, Any] | None = None,
    budget: str | None = None,
    name: str | None = None,
    target: str | None = None,
    input_selection: str | None = None,
    options: SelectOptions | None = None,
    replace: bool = True,
) -> None:
    """Everything `pipeline.curate` needs that exists before it runs: the selector and its
    params, the budget and options, the selection name, and the corpus, target and input
    selection in the workspace; with `replace` False, a selection of that name is refused."""
    built = check_selector(selector, params or {}, options)
    if budget is not None:
        Budget.parse(budget)
    if name is not None:
        validate_name("selection", name)
    if target is None and built.requires_target:
        raise InputError(f"selector {selector!r} needs a target corpus (--target)")
    ws = as_workspace(workspace)
    with ws.catalog(read_only=True) as con:
        catalog.require_corpus(con, corpus)
        if target is not None:
            catalog.require_corpus(con, target)
        if input_selection is not None:
            parent = catalog.get_selection(con, input_selection)
            if parent["corpus"] != corpus:
                raise InputError(
                    f"--input: selection {input_selection!r} is from corpus "
                    f"{parent['corpus']!r}, not {corpus!r}"
                )
        if name is not None and not replace:
            found = catalog.rows(
                con, "select corpus, selector from selections where name = ?", [name]
            )
            if found:
                raise InputError(
                    f"selection {name!r} already exists ({found[0]['selector']} on "
                    f"{found[0]['corpus']}); pass --replace to replace it, or choose another "
                    "--name"
                )
    check_workspace(ws)  # scores and selections are written into it


def check_ingest_inputs(paths: list[str], options: IngestOptions) -> None:
    """Every input exists, is readable and has a known format; the first records of the first
    local file are read, so that options that reject every record are refused now."""
    inputs = expand_inputs(paths, options)
    first = next(((p, s, f) for p, s, f in inputs if f != "hf" and not is_url(p)), None)
    if first is not None:
        path, source, fmt = first
        chunks = READERS[fmt].plan(path, source, fmt, options)
        if chunks:
            check_first_records(chunks[0], options)


def check_ingest(
    workspace: Workspace | str | os.PathLike[str],
    paths: list[str],
    corpus: str,
    options: IngestOptions,
) -> None:
    """Everything `pipeline.ingest` can refuse before it reads the inputs through: the corpus
    name, the workspace, the inputs and their formats, and options that reject every record."""
    validate_name("corpus", corpus)
    ws = as_workspace(workspace)
    check_workspace(ws)
    if ws.exists():
        with ws.catalog(read_only=True) as con:
            catalog.check_corpus_name(con, corpus)
    check_ingest_inputs(paths, options)


def check_destination(workspace: Workspace, out: str | os.PathLike[str], overwrite: bool) -> None:
    """The output directory may receive an export: new, empty, or an earlier gristmill export
    that `overwrite` allows replacing (the only kind --overwrite ever replaces); writable."""
    out_dir = Path(out).expanduser().resolve()
    exporters.check_destination(workspace, out_dir, overwrite)
    check_can_write(out_dir)


def check_materialize(
    workspace: Workspace | str | os.PathLike[str],
    selection: str,
    out: str | os.PathLike[str],
    fmt: str = "parquet",
    overwrite: bool = False,
    tokenizer: str | None = None,
) -> None:
    """The format (and for tokens its local tokenizer), the selection and the output directory
    of a materialisation."""
    from gristmill.pipeline.export import FORMATS

    if fmt not in FORMATS:
        raise InputError(f"unknown export format {fmt!r} (use one of {', '.join(FORMATS)})")
    ws = as_workspace(workspace)
    if fmt == "tokens":
        from gristmill.storage.token_shards import resolve_tokenizer

        if tokenizer is None:
            raise InputError("format tokens needs --tokenizer (a local tokenizer directory or "
                             "a workspace model)")  # fmt: skip
        resolve_tokenizer(ws, tokenizer)
    elif tokenizer is not None:
        raise InputError(f"--tokenizer is for format tokens, not {fmt!r}")
    with ws.catalog(read_only=True) as con:
        catalog.get_selection(con, selection)
    check_destination(ws, out, overwrite)


def check_transform(
    workspace: Workspace | str | os.PathLike[str],
    corpus: str,
    transforms: str | list[Any],
    name: str,
) -> None:
    """A transform step: its transforms and settings, the parent corpus, the output's name."""
    from gristmill.pipeline.transformation import build_chain, check_names

    ws = as_workspace(workspace)
    check_workspace(ws)
    build_chain(transforms, corpus, name)
    with ws.catalog(read_only=True) as con:
        check_names(con, corpus, name)


def check_corpus(workspace: Workspace | str | os.PathLike[str], corpus: str) -> None:
    """NotFoundError unless the workspace has the corpus."""
    with as_workspace(workspace).catalog(read_only=True) as con:
        catalog.require_corpus(con, corpus)


def _held(ws: Workspace) -> tuple[set[str], dict[str, str]]:
    """The corpora and the selections (name -> corpus) a workspace holds now (none if new)."""
    if not ws.exists():
        return set(), {}
    with ws.catalog(read_only=True) as con:
        corpora = set(catalog.corpus_names(con))
        selections = catalog.rows(con, "select name, corpus from selections")
    return corpora, {row["name"]: row["corpus"] for row in selections}


def _listed(names: set[str] | dict[str, str]) -> str:
    return ", ".join(sorted(names)) or "none"


def check_recipe(recipe: Recipe, workspace: Workspace | str | os.PathLike[str]) -> None:
    """A whole recipe against its workspace, before any step runs: the workspace is writable,
    every ingest's inputs exist and are readable, every corpus a step reads is ingested by the
    recipe or held by the workspace, every selection a step reads is made by an earlier step or
    held, and every output directory may be written. (Loading the recipe checked each step's
    selector, params, budget and names already.)"""
    ws = as_workspace(workspace)
    check_workspace(ws)
    corpora, selections = _held(ws)
    for index, step in enumerate(recipe.ingest):
        options = IngestOptions(**step.model_dump(exclude={"corpus", "paths"}))
        try:
            check_ingest_inputs(step.paths, options)
        except InputError as error:
            raise InputError(f"ingest[{index}]: {error}") from None
    corpora |= {step.corpus for step in recipe.ingest}

    def need_corpus(where: str, name: str | None) -> None:
        if name is not None and name not in corpora:
            raise NotFoundError(
                f"{where}: no corpus named {name!r} in this workspace or ingested by the recipe "
                f"(corpora: {_listed(corpora)})"
            )

    held = set(corpora) - {step.corpus for step in recipe.ingest}
    for index, rewrite in enumerate(recipe.transform):
        need_corpus(f"transform[{index}].corpus", rewrite.corpus)
        if rewrite.corpus in held:  # its output name can be checked against the workspace now
            try:
                check_transform(ws, rewrite.corpus, rewrite.specs(), rewrite.name)
            except InputError as error:
                raise InputError(f"transform[{index}]: {error}") from None
        corpora.add(rewrite.name)
    for index, zoo in enumerate(recipe.zoo):
        need_corpus(f"zoo[{index}].corpus", zoo.corpus)
    made: dict[str, str] = {}

    def need_selection(where: str, name: str) -> str:
        corpus = made.get(name, selections.get(name))
        if corpus is None:
            known = set(made) | set(selections)
            raise NotFoundError(
                f"{where}: no selection named {name!r} made by an earlier step or in this "
                f"workspace (selections: {_listed(known)})"
            )
        return corpus

    for index, step in enumerate(recipe.select):
        assert step.corpus is not None  # the recipe's validator fills it in
        need_corpus(f"select[{index}].corpus", step.corpus)
        need_corpus(f"select[{index}].target", step.target)
        try:
            built = check_selector(step.selector, step.params, step.select_options())
        except InputError as error:
            raise InputError(f"select[{index}]: {error}") from None
        if step.target is None and built.requires_target:
            raise InputError(f"select[{index}].target: selector {step.selector!r} needs a target")
        if step.input is not None and step.input != step.corpus:
            parent_corpus = need_selection(f"select[{index}].input", step.input)
            if parent_corpus != step.corpus:
                raise InputError(
                    f"select[{index}].input: selection {step.input!r} is from corpus "
                    f"{parent_corpus!r}, not {step.corpus!r}"
                )
        made[step.name] = step.corpus
    for index, out in enumerate(recipe.materialize):
        need_selection(f"materialize[{index}].selection", out.selection)
        try:
            if out.format == "tokens":
                from gristmill.storage.token_shards import resolve_tokenizer

                resolve_tokenizer(ws, out.tokenizer or "")
            check_destination(ws, out.out, out.overwrite)
        except InputError as error:
            raise InputError(f"materialize[{index}].out: {error}") from None
    if recipe.experiment is not None:
        _check_experiment(recipe, corpora, set(made) | set(selections))


def _check_experiment(recipe: Recipe, corpora: set[str], selections: set[str]) -> None:
    """The corpora and selections an experiment reads exist or are made by the recipe."""
    spec = recipe.experiment
    assert spec is not None
    either = corpora | selections
    needed = [(f"experiment.arms[{i}]", arm, selections, "selection")
              for i, arm in enumerate(spec.arms) if arm in spec.selection_arms()]  # fmt: skip
    needed += [
        ("experiment.pool", spec.pool, either, "corpus or selection"),
        ("experiment.target", spec.target, either, "corpus or selection"),
        ("experiment.base.corpus", spec.base.corpus, either, "corpus or selection"),
        ("experiment.task.corpus", spec.task.corpus, corpora, "corpus"),
        ("experiment.task.test_corpus", spec.task.test_corpus, corpora, "corpus"),
    ]
    for where, name, known, kind in needed:
        if name is not None and name not in known:
            raise NotFoundError(
                f"{where}: no {kind} named {name!r} in this workspace or made by the recipe "
                f"(known: {_listed(known)})"
            )
