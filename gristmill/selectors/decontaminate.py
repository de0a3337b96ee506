"""The `decontaminate` selector: drop pool documents sharing a word n-gram with an eval corpus.

n-grams are word n-grams of the same normalised text as `dedup` (lower case, no punctuation,
whitespace folded), hashed to 64 bits. An evaluation text with fewer than n words but at least
`min_words` contributes its whole text as one shorter gram, matched against the pool's grams of
that length; evaluation texts shorter than `min_words` are not used (too little evidence of
contamination). A pool document with fewer words than every gram length cannot match: kept.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from pydantic import Field

from gristmill.errors import InputError
from gristmill.selectors import minhash
from gristmill.selectors.base import Selector, SelectorConfig, SelectorContext
from gristmill.selectors.requirements import CorpusRead, Requirement
from gristmill.storage.workspace import safe_name


class DecontaminateConfig(SelectorConfig):
    """Settings of the decontaminate selector."""

    eval: str = Field(description="the evaluation corpus (ingest it into the workspace first)")
    n: int = Field(13, ge=1, le=256, description="words per n-gram")
    min_words: int = Field(8, ge=1, description="shortest evaluation text that is used")


class DecontaminateSelector(Selector):
    """Score 0.0 for pool documents sharing an n-gram with the evaluation corpus, else 1.0."""

    name: ClassVar[str] = "decontaminate"
    version: ClassVar[str] = "1"
    Config = DecontaminateConfig
    default_mode = "threshold"
    default_threshold = 0.5

    config: DecontaminateConfig

    def __init__(self, config: SelectorConfig) -> None:
        super().__init__(config)
        self.prepared = False
        self.eval_hashes = np.zeros(0, np.uint64)
        self.eval_owners = np.zeros(0, np.uint64)
        self.short_lengths: list[int] = []

    def requirements(self, context: SelectorContext) -> list[Requirement]:
        """The evaluation corpus's documents (its version keys every shard's scores)."""
        config = self.config
        safe_name("corpus", config.eval)
        if config.eval == context.corpus:
            raise InputError(f"decontaminate: eval names the pool corpus itself ({config.eval!r})")
        return [CorpusRead("eval", config.eval)]

    def prepare(self, context: SelectorContext) -> None:
        """Hash every n-gram of the evaluation corpus into a sorted array (with owning doc_id)."""
        config = self.config
        files = context.inputs.documents("eval").files
        hashes, owners, short = [], [], set()
        for path in files:
            table = pq.read_table(path, columns=["doc_id", "text"])
            normalized = minhash.normalize(table["text"])
            _, offsets = minhash.word_hashes(normalized)
            counts = np.diff(offsets)
            short.update(int(c) for c in counts if config.min_words <= c < config.n)
            ids = table["doc_id"].to_numpy()
            found, owner = minhash.ngram_hashes(normalized, config.n)
            hashes.append(found)
            owners.append(ids[owner])
            for length in sorted({int(c) for c in counts if config.min_words <= c < config.n}):
                whole = np.flatnonzero(counts == length)
                grams, owner = minhash.ngram_hashes(normalized.take(whole), length)
                hashes.append(grams)
                owners.append(ids[whole][owner])
        all_hashes = np.concatenate(hashes) if hashes else np.zeros(0, np.uint64)
        all_owners = np.concatenate(owners) if owners else np.zeros(0, np.uint64)
        order = np.lexsort((all_owners, all_hashes))  # ties: the smallest eval doc_id first
        self.eval_hashes, self.eval_owners = all_hashes[order], all_owners[order]
        self.short_lengths = sorted(short)
        self.prepared = True

    def score(self, documents: pa.Table) -> pa.Table:
        """doc_id, score, matched_ngrams and matched_eval (the smallest matching eval doc_id)."""
        config = self.config
        if not self.prepared:
            raise RuntimeError("decontaminate: prepare(context) must run before scoring")
        normalized = minhash.normalize(documents["text"])
        grams, owner = minhash.ngram_hashes(normalized, config.n, self.short_lengths)
        position = np.searchsorted(self.eval_hashes, grams)
        inside = position < len(self.eval_hashes)
        hit = np.zeros(len(grams), bool)
        hit[inside] = self.eval_hashes[position[inside]] == grams[inside]
        n = documents.num_rows
        matched = np.bincount(owner[hit], minlength=n)
        first_eval: dict[int, int] = {}
        for doc, eval_id in zip(owner[hit], self.eval_owners[position[hit]], strict=True):
            if doc not in first_eval or eval_id < first_eval[doc]:
                first_eval[int(doc)] = int(eval_id)
        return pa.table(
            {
                "doc_id": documents["doc_id"],
                "score": pa.array(np.where(matched > 0, 0.0, 1.0), pa.float64()),
                "reasons": pa.array(
                    [["eval_ngram"] if m else [] for m in matched], pa.list_(pa.string())
                ),
                "matched_ngrams": pa.array(matched, pa.int64()),
                "matched_eval": pa.array([first_eval.get(i) for i in range(n)], pa.uint64()),
            }
        )
