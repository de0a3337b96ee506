"""The `classifier` selector: a trained fastText bigram classifier (DCLM, Li et al. 2024).

prepare() trains a classifier of positives against negatives, or loads a pre-trained fastText
model from a local path; score() stores each document's log-odds of the positive class as the
signal, so selecting again at another budget scores nothing.

- positives: the target corpus (`--target`), the pool's documents whose meta field (or
  `domain`) has one of `positive_values`, or a selection's documents (`positive_selection`);
- negatives: a seeded random sample of the pool, `negative_ratio` times the positives, with
  the positives' own documents (and pool copies of target texts) left out, or a given corpus
  (`negative_corpus`);
- the pool sample is unlabelled, not negative: it holds documents of the target's own kind
  (positive-unlabelled learning). Before the final fit, every training document is scored by a
  model trained without it (two folds), and pool documents scoring above the `pu_quantile`
  quantile of the positives' own such scores are dropped from the negatives;
- the linear backend (the default) also counts layout: line breaks and the document's start
  and end are tokens of their own (`layout_tokens`), so an instruction's "task, blank line,
  answer" shape or code's lines weigh beside its words;
- part of both classes (`heldout_fraction`) is held out: its accuracy and AUROC go into the
  selection's scoring summary.

The trained model is saved in the workspace under models/classifier-<key>, where the key hashes
the training data's versions (corpus versions, selection members), the seed and the settings:
the same inputs load it again instead of training.
"""

from __future__ import annotations

import functools
import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import duckdb
import numpy as np
import pyarrow as pa
import scipy.sparse as sp
import xxhash
from pydantic import Field, field_validator, model_validator

from gristmill.errors import InputError
from gristmill.selectors import fasttext_model
from gristmill.selectors.base import Section, Selector, SelectorConfig, SelectorContext, Table
from gristmill.selectors.fasttext_model import FastTextSettings
from gristmill.selectors.featurize import ngram_matrix
from gristmill.selectors.requirements import CorpusRead, Requirement, Setting
from gristmill.storage import catalog
from gristmill.storage.files import file_hash, sql_files, write_json_atomic

if TYPE_CHECKING:
    from gristmill.storage.queries import SelectionView

POSITIVE = "positive"
NEGATIVE = "negative"
TRAINING_FILE = "training.json"
MODEL_FILES = {"fasttext": "model.bin", "linear": "model.npz"}
PU_FOLDS = 2
# Layout tokens are private-use characters, which real text does not use: the tokenizer keeps
# each as a punctuation token of its own, so they make unigrams and bigrams like any word.
LINE_BREAK, DOC_START, DOC_END = " \ue000 ", "\ue001 ", " \ue002"
# Probabilities are float32 with a floor near 1e-5: clip before the log-odds.
_EPS = 1e-7


class ClassifierConfig(SelectorConfig):
    """Where positives and negatives come from, the fastText settings, or a pre-trained model."""

    positive_field: str | None = Field(
        None, description="positives: pool documents whose meta field (or 'domain') matches"
    )
    positive_values: list[str] | None = Field(
        None, description="positive_field: the values that make a document positive"
    )
    positive_selection: str | None = Field(None, description="positives: a selection's documents")
    negative_corpus: str | None = Field(
        None, description="negatives: this corpus (default: a random sample of the pool)"
    )
    negative_ratio: float = Field(40.0, gt=0, description="pool negatives per positive")
    max_negatives: int = Field(20_000, ge=1, description="sample at most this many negatives")
    pu_quantile: float | None = Field(
        0.3,
        gt=0,
        lt=1,
        description="drop pool negatives whose cross-fitted score is above this quantile of "
        "the positives' (they are likely of the target's kind); None: keep every negative",
    )
    max_positives: int = Field(100_000, ge=2, description="train on at most this many positives")
    heldout_fraction: float = Field(
        0.1, ge=0, lt=1, description="share of each class held out for accuracy and AUROC"
    )
    backend: Literal["linear", "fasttext"] = Field(
        "linear",
        description="linear: logistic regression on tf-idf of hashed unigrams+bigrams (the "
        "stronger with hundreds of positives); fasttext: a fastText bigram classifier (DCLM's)",
    )
    num_buckets: int = Field(1 << 18, ge=1024, description="linear: hash buckets of n-grams")
    inverse_regularisation: float = Field(10.0, gt=0, description="linear: C of the regression")
    layout_tokens: bool = Field(
        True,
        description="linear: count line breaks and the document's start and end as tokens "
        "(layout as well as words); false: words only, as in version 1",
    )
    model: str | None = Field(
        None, description="a pre-trained fastText model (local .bin path) instead of training"
    )
    positive_label: str | None = Field(
        None, description="the pre-trained model's positive label (e.g. hq for DCLM's)"
    )
    dim: int = Field(64, ge=4, description="fastText vector size")
    epochs: int = Field(10, ge=1, description="fastText epochs")
    lr: float = Field(0.1, gt=0, description="fastText learning rate")
    word_ngrams: int = Field(2, ge=1, le=5, description="fastText word n-grams (2: bigrams)")
    lowercase: bool = Field(True, description="lower-case texts before training and scoring")
    max_chars: int | None = Field(
        20_000, ge=1, description="read only the first this many characters of each document"
    )

    @field_validator("positive_values", mode="before")
    @classmethod
    def _split_values(cls, value: Any) -> Any:
        """Accept a comma-separated string (--param positive_values=a,b) as the list."""
        if isinstance(value, str):
            return [v.strip() for v in value.split(",") if v.strip()]
        return value

    @model_validator(mode="after")
    def _field_needs_values(self) -> ClassifierConfig:
        if (self.positive_field is None) != (not self.positive_values):
            raise ValueError("positive_field and positive_values go together")
        if self.model is not None and self.positive_selection is not None:
            raise ValueError("a pre-trained model is not trained: drop positive_selection")
        return self

    def fasttext(self) -> FastTextSettings:
        """The fastText settings."""
        return FastTextSettings(
            dim=self.dim, epochs=self.epochs, lr=self.lr, word_ngrams=self.word_ngrams,
            lowercase=self.lowercase, max_chars=self.max_chars,
        )  # fmt: skip


class LinearModel:
    """Logistic regression on sublinear tf-idf of hashed unigrams+bigrams, L2-normalised rows.

    Saved as plain arrays (npz, read without pickle): idf, coefficients, intercept and layout.
    """

    def __init__(
        self, idf: np.ndarray, coef: np.ndarray, intercept: float, layout: bool = False
    ) -> None:
        self.idf, self.coef, self.intercept, self.layout = idf, coef, intercept, layout

    @staticmethod
    def weighted(counts: sp.csr_matrix, idf: np.ndarray) -> sp.csr_matrix:
        """Rows of (1 + log tf) * idf, L2-normalised."""
        counts = counts.copy()
        counts.data = 1.0 + np.log(counts.data)
        counts = counts @ sp.diags(idf)
        norms = np.sqrt(np.asarray(counts.multiply(counts).sum(axis=1)).ravel())
        return sp.csr_matrix(sp.diags(1.0 / np.maximum(norms, 1e-12)) @ counts)

    @staticmethod
    def counts(
        texts: list[str], buckets: int, max_chars: int | None, layout: bool
    ) -> sp.csr_matrix:
        """Hashed unigram+bigram counts of the texts (first `max_chars` characters)."""
        if max_chars is not None:
            texts = [(t or "")[:max_chars] for t in texts]
        if layout:
            texts = [DOC_START + (t or "").replace("\n", LINE_BREAK) + DOC_END for t in texts]
        return ngram_matrix(texts, buckets)

    @classmethod
    def fit(
        cls, counts: sp.csr_matrix, positive: np.ndarray, c: float, layout: bool
    ) -> LinearModel:
        """Fit idf on the training rows and the regression, classes weighted equally."""
        from sklearn.linear_model import LogisticRegression

        present = np.bincount(counts.indices, minlength=counts.shape[1])
        idf = (np.log((1 + counts.shape[0]) / (1 + present)) + 1.0).astype(np.float32)
        regression = LogisticRegression(C=c, class_weight="balanced", max_iter=1000)
        regression.fit(cls.weighted(counts, idf), positive)
        coef = regression.coef_[0].astype(np.float32)
        return cls(idf, coef, float(regression.intercept_[0]), layout)

    def counts_log_odds(self, counts: sp.csr_matrix) -> np.ndarray:
        """The regression's log-odds of the positive class for each row of counts."""
        return np.asarray(self.weighted(counts, self.idf) @ self.coef) + self.intercept

    def log_odds(self, texts: list[str], max_chars: int | None) -> np.ndarray:
        """The regression's log-odds of the positive class for each text."""
        return self.counts_log_odds(self.counts(texts, len(self.idf), max_chars, self.layout))

    def save(self, path: Path) -> None:
        """Write the arrays (npz, no pickle)."""
        with path.open("wb") as handle:
            np.savez(handle, idf=self.idf, coef=self.coef, intercept=np.float64(self.intercept),
                     layout=np.bool_(self.layout))  # fmt: skip

    @classmethod
    def load(cls, path: str | Path) -> LinearModel:
        """Read a saved model (arrays only)."""
        with np.load(path, allow_pickle=False) as arrays:
            # Models saved by version 1 have no layout flag: they counted words only.
            layout = bool(arrays["layout"]) if "layout" in arrays.files else False
            return cls(arrays["idf"], arrays["coef"], float(arrays["intercept"]), layout)


@functools.lru_cache(maxsize=2)
def _loaded(path: str, modified: float) -> Any:
    """A saved model, loaded once per process (keyed by its path and modification time)."""
    del modified
    return LinearModel.load(path) if path.endswith(".npz") else fasttext_model.load(path)


def cross_fitted(
    positive: np.ndarray, folds: int, rng: np.random.Generator,
    fit_score: Callable[[np.ndarray, np.ndarray], np.ndarray],
) -> np.ndarray:  # fmt: skip
    """A score for each row from a model fitted without it: `fit_score(train, test)`.

    Folds are stratified, so each model is fitted on both classes.
    """
    fold = np.empty(len(positive), np.int64)
    for members in (np.flatnonzero(positive), np.flatnonzero(~positive)):
        fold[members] = rng.permutation(len(members)) % folds
    scores = np.empty(len(positive), np.float64)
    for f in range(folds):
        scores[fold == f] = fit_score(np.flatnonzero(fold != f), np.flatnonzero(fold == f))
    return scores


def pu_negatives(scores: np.ndarray, positive: np.ndarray, quantile: float) -> np.ndarray:
    """Which unlabelled rows stay negatives: those scored below `quantile` of the positives.

    The pool sample is unlabelled: rows that score like held-out positives are likely of the
    target's kind and would teach the model that the target is negative.
    """
    threshold = np.quantile(scores[positive], quantile)
    return ~positive & (scores < threshold)


def _sigmoid(values: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * values))


def _text_hashes(texts: list[str]) -> set[int]:
    return {xxhash.xxh3_64_intdigest(fasttext_model.one_line(t, True).encode()) for t in texts}


class ClassifierSelector(Selector):
    """Log-odds of a fastText classifier of positives (target-like text) against the pool."""

    name: ClassVar[str] = "classifier"
    version: ClassVar[str] = "2"
    Config = ClassifierConfig
    default_mode = "topk"

    config: ClassifierConfig

    def __init__(self, config: ClassifierConfig) -> None:
        super().__init__(config)
        self.model_path: str | None = None
        self.label = config.positive_label or POSITIVE
        self.training: dict[str, Any] = {}

    # --- requirements ---------------------------------------------------------------------

    def _positive_source(self, context: SelectorContext) -> str:
        cfg = self.config
        given = [
            name for name, present in (
                ("target", context.target is not None),
                ("positive_field", cfg.positive_field is not None),
                ("positive_selection", cfg.positive_selection is not None),
            ) if present
        ]  # fmt: skip
        if len(given) != 1:
            raise InputError(
                "selector 'classifier' needs exactly one source of positives: a target corpus "
                "(--target), positive_field with positive_values, or positive_selection (given: "
                f"{', '.join(given) or 'none'}); or a pre-trained model (--param model=PATH)"
            )
        return given[0]

    def requirements(self, context: SelectorContext) -> list[Requirement]:
        """What the model is trained on (or which model file): every shard's scores read it."""
        if self.config.model is not None:
            path = Path(self.config.model).expanduser()
            if not path.is_file():
                raise InputError(f"selector classifier: model {self.config.model!r}: no such file")
            return [Setting("model", {"path": str(path.resolve()), "hash": file_hash(path)},
                            stage="shard")]  # fmt: skip
        source = self._positive_source(context)
        needs: list[Requirement] = [
            CorpusRead("pool", context.corpus),
            Setting("seed", context.seed, stage="shard"),
        ]
        if source == "target":
            assert context.target is not None
            needs.append(CorpusRead("positives", context.target))
        elif source == "positive_selection":
            needs.append(Setting("positive_selection", self._selection_version(context),
                                 stage="shard"))  # fmt: skip
        if self.config.negative_corpus is not None:
            needs.append(CorpusRead("negatives", self.config.negative_corpus))
        return needs

    def _selection_version(self, context: SelectorContext) -> dict[str, Any]:
        name = self.config.positive_selection
        assert name is not None
        with context.workspace.catalog(read_only=True) as con:
            record = catalog.get_selection(con, name)
        members = context.workspace.members_path(name)
        return {"selection": name, "corpus": record["corpus"], "members": file_hash(members)}

    # --- training -------------------------------------------------------------------------

    def prepare(self, context: SelectorContext) -> None:
        """Load the given model, or the saved one for these inputs, or train and save it."""
        cfg = self.config
        if cfg.model is not None:
            self._use_pretrained(context)
            return
        # The shard signal's key hashes exactly what training read: the model is keyed by it.
        key = self.signal_key("shard", context.dependencies)
        directory = context.workspace.root / "models" / f"classifier-{key}"
        model_file = directory / MODEL_FILES[cfg.backend]
        if model_file.exists() and (directory / TRAINING_FILE).exists():
            self.training = json.loads((directory / TRAINING_FILE).read_text(encoding="utf-8"))
            self.model_path = str(model_file)
            return
        self.training = self._train(context, directory)
        self.model_path = str(model_file)

    def _use_pretrained(self, context: SelectorContext) -> None:
        model_path = str(Path(self.config.model or "").expanduser().resolve())
        try:
            model = fasttext_model.load(model_path)
        except ValueError as error:
            raise InputError(f"selector classifier: model {self.config.model!r}: {error}") from None
        labels = fasttext_model.model_labels(model)
        if self.label not in labels:
            raise InputError(
                f"selector classifier: model {self.config.model!r} has no label {self.label!r} "
                f"(its labels: {', '.join(labels)}); set positive_label"
            )
        self.model_path = model_path
        self.training = {"trained": False, "model": model_path, "labels": labels,
                         "positive_label": self.label}  # fmt: skip

    def _read(
        self, files: list[Path], ids: np.ndarray | None = None, columns: str = "d.text"
    ) -> pa.Table:
        """Columns of the documents in `files` (only `ids`, when given), in doc_id order."""
        query = f"select d.doc_id, {columns} from read_parquet({sql_files(files)}) d"
        with duckdb.connect() as con:
            if ids is not None:
                con.register("wanted", pa.table({"doc_id": pa.array(ids, pa.uint64())}))
                query += " semi join wanted w using (doc_id)"
            return con.sql(query + " order by d.doc_id").to_arrow_table()

    def _positives(self, context: SelectorContext, rng: np.random.Generator) -> tuple[
        list[str], np.ndarray, dict[str, Any]
    ]:  # fmt: skip
        """Positive texts, the pool doc_ids they are (empty for another corpus), and a summary."""
        cfg = self.config
        source = self._positive_source(context)
        pool_files = context.inputs.documents("pool").files
        if source == "target":
            files = context.inputs.documents("positives").files
            ids = self._read(files, columns="1 as one")["doc_id"].to_numpy()
            from_pool = False
            described = {"source": "target", "corpus": context.target}
        elif source == "positive_field":
            field = cfg.positive_field
            if field == "domain":
                value = "d.domain"
                params: list[Any] = []
            else:
                value = "json_extract_string(d.meta, ?)"
                params = ["$." + json.dumps(field)]
            query = (
                f"select d.doc_id from read_parquet({sql_files(pool_files)}) d "
                f"where {value} in (select unnest(?::varchar[])) order by d.doc_id"
            )
            with duckdb.connect() as con:
                found_ids = con.sql(query, params=[*params, cfg.positive_values]).to_arrow_table()
            ids = found_ids["doc_id"].to_numpy()
            files, from_pool = pool_files, True
            described = {"source": "positive_field", "field": field, "values": cfg.positive_values}
        else:
            version = context.dependencies.shard["positive_selection"]
            if version["corpus"] != context.corpus:
                raise InputError(
                    f"selector classifier: selection {version['selection']!r} is of corpus "
                    f"{version['corpus']!r}, not {context.corpus!r}"
                )
            members = context.workspace.members_path(version["selection"])
            with duckdb.connect() as con:
                ids = con.sql(f"select doc_id from read_parquet({sql_files([members])}) "
                              "order by doc_id").to_arrow_table()["doc_id"].to_numpy()  # fmt: skip
            files, from_pool = pool_files, True
            described = {"source": "positive_selection", "selection": version["selection"]}
        if len(ids) < 2:
            raise InputError(
                f"selector classifier: {len(ids)} positive document(s) ({described}); "
                "training needs at least two"
            )
        found = len(ids)
        if len(ids) > cfg.max_positives:
            ids = np.sort(rng.choice(ids, cfg.max_positives, replace=False))
        texts = self._read(files, ids)["text"].to_pylist()
        described["documents"] = found
        return texts, (ids if from_pool else np.zeros(0, np.uint64)), described

    def _negatives(
        self, context: SelectorContext, rng: np.random.Generator, positives: list[str],
        positive_ids: np.ndarray,
    ) -> tuple[list[str], dict[str, Any]]:  # fmt: skip
        """Negative texts: the given corpus, or a pool sample without the positives."""
        cfg = self.config
        wanted = max(1, min(cfg.max_negatives, round(cfg.negative_ratio * len(positives))))
        if cfg.negative_corpus is not None:
            files = context.inputs.documents("negatives").files
            corpus, excluded_ids = cfg.negative_corpus, np.zeros(0, np.uint64)
        else:
            files = context.inputs.documents("pool").files
            corpus, excluded_ids = context.corpus, positive_ids
        ids = self._read(files, columns="1 as one")["doc_id"].to_numpy()
        ids = ids[~np.isin(ids, excluded_ids)]
        # Sample a little more than wanted: copies of positive texts are dropped after reading.
        take = min(len(ids), wanted + wanted // 10 + 10)
        picked = np.sort(rng.choice(ids, take, replace=False)) if take < len(ids) else ids
        texts = self._read(files, picked)["text"].to_pylist()
        positive_hashes = _text_hashes(positives)
        kept = [t for t in texts
                if xxhash.xxh3_64_intdigest(fasttext_model.one_line(t, True).encode())
                not in positive_hashes]  # fmt: skip
        copies = len(texts) - len(kept)
        kept = kept[:wanted]
        if len(kept) < 1:
            raise InputError(f"selector classifier: corpus {corpus!r} has no negative documents")
        return kept, {"source": "corpus" if cfg.negative_corpus else "pool sample",
                      "corpus": corpus, "documents": len(kept),
                      "excluded_positives": int(len(excluded_ids) + copies)}  # fmt: skip

    def _train(self, context: SelectorContext, directory: Path) -> dict[str, Any]:
        cfg = self.config
        rng = np.random.default_rng(context.seed)
        positives, positive_ids, positive_report = self._positives(context, rng)
        negatives, negative_report = self._negatives(context, rng, positives, positive_ids)
        texts = positives + negatives
        is_positive = np.r_[np.ones(len(positives), bool), np.zeros(len(negatives), bool)]
        heldout = np.zeros(len(texts), bool)
        for members in (np.flatnonzero(is_positive), np.flatnonzero(~is_positive)):
            n = round(cfg.heldout_fraction * len(members))
            if 0 < n < len(members):
                heldout[rng.choice(members, n, replace=False)] = True
        train = np.flatnonzero(~heldout)
        staging = directory.with_name(directory.name + f".tmp-{os.getpid()}")
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
        model_file = MODEL_FILES[cfg.backend]
        report: dict[str, Any] = {
            "trained": True, "backend": cfg.backend,
            "model": context.workspace.relative(directory / model_file),
            "positives": positive_report, "negatives": negative_report,
            "train_documents": len(train),
        }  # fmt: skip
        train_texts = [texts[i] for i in train]
        fit, log_odds = self._fitter(train_texts, is_positive[train], context.seed, staging)
        chosen = np.arange(len(train))
        if cfg.pu_quantile is not None and cfg.negative_corpus is None:
            # Positive-unlabelled: drop the pool documents that score like the positives.
            positive = is_positive[train]
            scores = cross_fitted(positive, PU_FOLDS, rng,
                                  lambda fold, rest: log_odds(fit(fold), rest))  # fmt: skip
            chosen = np.flatnonzero(positive | pu_negatives(scores, positive, cfg.pu_quantile))
            negative_report["dropped_as_likely_positive"] = len(train) - len(chosen)
        model = fit(chosen)
        report["train_documents"] = len(chosen)
        if cfg.backend == "linear":
            features = "tf-idf of hashed unigrams+bigrams" + (
                " with layout tokens" if cfg.layout_tokens else ""
            )
            report["linear"] = {"num_buckets": cfg.num_buckets, "features": features,
                                "C": cfg.inverse_regularisation}  # fmt: skip
        else:
            report["fasttext"] = cfg.fasttext().as_dict()
        test = np.flatnonzero(heldout)
        report["heldout"] = None
        if len(test):
            p = self._probability(model, [texts[i] for i in test])
            truth = is_positive[test]
            report["heldout"] = {
                "documents": len(test), "positives": int(truth.sum()),
                "accuracy": round(float(((p >= 0.5) == truth).mean()), 4),
                "auroc": _rounded(fasttext_model.auroc(p, truth)),
            }  # fmt: skip
        if cfg.backend == "linear":
            model.save(staging / model_file)
        else:
            model.save_model(str(staging / model_file))
        write_json_atomic(staging / TRAINING_FILE, report)
        shutil.rmtree(directory, ignore_errors=True)
        staging.rename(directory)
        return report

    def _fitter(
        self, texts: list[str], positive: np.ndarray, seed: int, scratch: Path
    ) -> tuple[Callable[[np.ndarray], Any], Callable[[Any, np.ndarray], np.ndarray]]:
        """fit(rows) -> model and log_odds(model, rows) over these training texts."""
        cfg = self.config
        if cfg.backend == "linear":
            counts = LinearModel.counts(texts, cfg.num_buckets, cfg.max_chars, cfg.layout_tokens)
            return (
                lambda rows: LinearModel.fit(counts[rows], positive[rows],
                                             cfg.inverse_regularisation, cfg.layout_tokens),
                lambda model, rows: model.counts_log_odds(counts[rows]),
            )  # fmt: skip
        settings = cfg.fasttext()
        labels = [POSITIVE if p else NEGATIVE for p in positive]
        return (
            lambda rows: fasttext_model.train([texts[i] for i in rows], [labels[i] for i in rows],
                                              settings, seed, scratch),
            lambda model, rows: self._log_odds(model, [texts[i] for i in rows]),
        )  # fmt: skip

    def _log_odds(self, model: Any, texts: list[str]) -> np.ndarray:
        """Log-odds of the positive class under a linear or fastText model."""
        cfg = self.config
        if isinstance(model, LinearModel):
            return model.log_odds(texts, cfg.max_chars)
        p = fasttext_model.probability(model, texts, self.label, cfg.lowercase, cfg.max_chars)
        clipped = np.clip(p, _EPS, 1 - _EPS)
        return np.log(clipped) - np.log1p(-clipped)

    def _probability(self, model: Any, texts: list[str]) -> np.ndarray:
        return _sigmoid(self._log_odds(model, texts))

    # --- scoring --------------------------------------------------------------------------

    def score(self, documents: pa.Table) -> pa.Table:
        """doc_id, score (log-odds of the positive class) and P(positive) of each document."""
        if self.model_path is None:
            raise RuntimeError("classifier: prepare() must run before scoring")
        model = _loaded(self.model_path, os.path.getmtime(self.model_path))
        log_odds = self._log_odds(model, documents["text"].to_pylist())
        columns = {
            "doc_id": documents["doc_id"],
            "score": pa.array(log_odds, pa.float64()),
            "probability": pa.array(_sigmoid(log_odds), pa.float64()),
        }
        report = {"method": "classifier", "positive_label": self.label, **self.training}
        return pa.table(columns).replace_schema_metadata({"gristmill": json.dumps(report)})

    def release(self) -> None:
        """Drop the loaded model (it is loaded again when next needed)."""
        _loaded.cache_clear()

    def explain(self, view: SelectionView) -> list[Section]:
        """How the classifier was trained: positives, negatives and held-out accuracy/AUROC."""
        report = view.report
        if not isinstance(report, dict) or report.get("method") != "classifier":
            return []
        rows = []
        for role in ("positives", "negatives"):
            part = report.get(role) or {}
            where = part.get("corpus") or part.get("selection") or part.get("field")
            rows.append({"class": role, "source": part.get("source"), "from": where,
                         "documents": part.get("documents")})  # fmt: skip
        heldout = report.get("heldout") or {}
        rows.append({"class": "held out", "source": "accuracy / AUROC",
                     "from": f"{heldout.get('accuracy')} / {heldout.get('auroc')}",
                     "documents": heldout.get("documents")})  # fmt: skip
        if not report.get("trained"):
            rows = [{"class": "pre-trained", "source": report.get("model"),
                     "from": report.get("positive_label"), "documents": None}]  # fmt: skip
        table = Table("classifier training", rows)
        return [Section("classifier", report, [table], shows=("positives", "negatives",
                                                             "heldout"))]  # fmt: skip


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 4)
