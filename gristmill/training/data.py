"""Training data: documents from a corpus or selection, a held-out split, packed token streams.

The held-out split is a pure function of `doc_id` (ids are unique in a workspace), so held-out
documents never reach training, whichever corpus or selection the training data comes from.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import duckdb
import numpy as np
import pyarrow as pa
import torch

from gristmill.errors import InputError
from gristmill.storage import catalog
from gristmill.storage.files import sql_files
from gristmill.storage.token_shards import (
    TokenizeOptions,
    TokenShards,
    cached_token_shards,
    documents_by_id,
    heldout_mask,
)
from gristmill.storage.workspace import Workspace

Split = Literal["train", "heldout", "all"]
__all__ = ["heldout_mask"]  # defined with the token shards, which split the same way


@dataclass(frozen=True)
class DataSource:
    """Documents of a corpus, or of a selection (in rank order)."""

    corpus: str | None = None
    selection: str | None = None

    def label(self) -> str:
        """How the source is named in logs and errors."""
        return f"selection {self.selection!r}" if self.selection else f"corpus {self.corpus!r}"


@dataclass(frozen=True)
class Located:
    """Where a source's documents are: its corpus (and that corpus's version now), its
    selection's members file (None for a corpus) and the corpus's shard files."""

    corpus: str
    version: str
    members: Path | None
    shards: list[str]


def locate(workspace: Workspace, source: DataSource) -> Located:
    """Where a source's documents are (one look in the catalog)."""
    with workspace.catalog(read_only=True) as con:
        corpus = source.corpus
        if source.selection is not None:
            corpus = catalog.get_selection(con, source.selection)["corpus"]
        if corpus is None:
            raise InputError("a data source needs a corpus or a selection")
        catalog.require_corpus(con, corpus)
        shards = workspace.shard_files(con, corpus)
        version = catalog.corpus_version(con, corpus)
    if not shards:
        raise InputError(f"{source.label()} has no documents")
    members = None if source.selection is None else workspace.members_path(source.selection)
    return Located(corpus, version, members, shards)


def read_documents(
    workspace: Workspace | Located,
    source: DataSource,
    split: Split = "all",
    heldout_fraction: float = 0.0,
    columns: tuple[str, ...] = ("doc_id", "text", "meta", "n_bytes"),
) -> pa.Table:
    """The source's documents (in a stable order), restricted to one side of the held-out split
    (`workspace`: or where the source's documents are, looked up before)."""
    found = workspace if isinstance(workspace, Located) else locate(workspace, source)
    wanted = ", ".join(f"d.{c}" for c in columns)
    with duckdb.connect() as con:
        if found.members is None:
            query = (
                f"select {wanted} from read_parquet({sql_files(found.shards)}, filename = true, "
                "file_row_number = true) d order by d.filename, d.file_row_number"
            )
        else:
            query = (
                f"select {wanted} from read_parquet({sql_files([found.members])}) m "
                f"join read_parquet({sql_files(found.shards)}) d using (doc_id) order by m.rank"
            )
        table = con.sql(query).to_arrow_table()
    if split != "all" and "doc_id" in columns:
        mask = heldout_mask(table["doc_id"].to_numpy(), heldout_fraction)
        table = table.filter(pa.array(mask if split == "heldout" else ~mask))
    return table


def tokenize(tokenizer: Any, texts: list[str], batch_size: int = 1000) -> list[list[int]]:
    """Token ids of each text, without special tokens."""
    ids: list[list[int]] = []
    for start in range(0, len(texts), batch_size):
        batch = texts[start : start + batch_size]
        ids.extend(tokenizer(batch, add_special_tokens=False)["input_ids"])
    return ids


class ShardDocuments:
    """The documents of a token export's split as spans of its memory-mapped shards, each span
    a document followed by its EOS (as written): packed rows are cut from these spans, so only
    the rows of a batch are ever copied, and the data is not bounded by memory."""

    def __init__(self, directory: Path, split: str = "train") -> None:
        shards = TokenShards(directory)
        if shards.manifest["eos_id"] is None or shards.manifest["bos_id"] is not None:
            raise InputError(f"{directory}: packing needs token shards with EOS and without BOS")
        self.eos_id: int = shards.manifest["eos_id"]
        self.corpus: str = shards.manifest["corpus"]
        stems = shards.shards(split)
        self.streams = [shards.tokens(stem) for stem in stems]
        lengths = [shards.lengths(stem).astype(np.int64) for stem in stems]
        self.shard = np.concatenate(
            [np.full(len(n), k, np.int64) for k, n in enumerate(lengths)] or [np.zeros(0, np.int64)]
        )
        self.lengths = np.concatenate(lengths or [np.zeros(0, np.int64)])  # with EOS
        self.start = np.concatenate([np.cumsum(n) - n for n in lengths] or [np.zeros(0, np.int64)])
        self.doc_ids = np.concatenate(
            [shards.doc_ids(stem) for stem in stems] or [np.zeros(0, np.uint64)]
        )

    def __len__(self) -> int:
        return len(self.lengths)

    def tokens(self, index: int) -> np.ndarray:
        """Document `index`'s token ids, without its EOS (a view, no copy)."""
        start = self.start[index]
        return self.streams[self.shard[index]][start : start + self.lengths[index] - 1]

    def rows(self, seq_len: int, documents: np.ndarray | None = None) -> ShardRows:
        """The documents (all, or these indices in this order, repeats allowed) concatenated and
        cut into rows of `seq_len` tokens, tail dropped: `pack`'s rows, read where they lie."""
        chosen = np.arange(len(self)) if documents is None else np.asarray(documents, np.int64)
        return ShardRows(self.streams, self.shard[chosen], self.start[chosen],
                         self.lengths[chosen], seq_len)  # fmt: skip


class ShardRows:
    """Rows of `seq_len` tokens over spans of token streams read as one stream (tail dropped)."""

    def __init__(
        self,
        streams: list[np.ndarray],
        shard: np.ndarray,
        start: np.ndarray,
        lengths: np.ndarray,
        seq_len: int,
    ) -> None:
        self.streams = streams
        self.shard, self.start, self.seq_len = shard, start, seq_len
        self.ends = np.cumsum(lengths, dtype=np.int64)  # of each span in the joined stream
        self.n_rows = _row_count(int(self.ends[-1]) if len(self.ends) else 0, seq_len)

    def __len__(self) -> int:
        return self.n_rows

    def take(self, rows: np.ndarray) -> torch.Tensor:
        """The token ids of these rows (int64, one row each)."""
        out = np.empty((len(rows), self.seq_len), dtype=np.int64)
        for k, row in enumerate(rows):
            position, end = int(row) * self.seq_len, (int(row) + 1) * self.seq_len
            span = int(np.searchsorted(self.ends, position, side="right"))
            filled = 0
            while position < end:
                span_start = int(self.ends[span - 1]) if span else 0
                offset = int(self.start[span]) + position - span_start
                take = min(end - position, int(self.ends[span]) - position)
                piece = self.streams[self.shard[span]][offset : offset + take]
                out[k, filled : filled + take] = piece
                filled, position, span = filled + take, position + take, span + 1
        return torch.from_numpy(out)


def _row_count(total: int, seq_len: int) -> int:
    """Rows of `seq_len` in `total` tokens (tail dropped); InputError when not even one."""
    if total < seq_len:
        raise InputError(
            f"too little text to train on: {total} tokens, less than one sequence of {seq_len}"
        )
    return total // seq_len


def token_documents(
    workspace: Workspace, source: DataSource, split: Split, fraction: float, tokenizer: str
) -> ShardDocuments:
    """A source's documents (one side of the held-out split, in `read_documents`' order) as
    token shards of `tokenizer` in the workspace: tokenized once, reused while the documents,
    the tokenizer and the settings are the same."""
    found = locate(workspace, source)
    doc_ids = read_documents(found, source, split, fraction, ("doc_id",))["doc_id"].to_numpy()
    label = f"{source.selection or source.corpus}-{split}"
    options = TokenizeOptions(tokenizer)
    directory = cached_token_shards(workspace, found.corpus, found.version, doc_ids, options, label)
    return ShardDocuments(directory)


def texts_of(workspace: Workspace, corpus: str, doc_ids: np.ndarray) -> list[str]:
    """The texts of a corpus's documents `doc_ids`, in that order."""
    batches = documents_by_id(workspace, corpus, doc_ids)
    return [text for batch in batches for text in batch.column("text").to_pylist()]


def pack(token_lists: Sequence[Sequence[int]], seq_len: int, eos_id: int) -> torch.Tensor:
    """Concatenate documents, each followed by EOS, into rows of `seq_len` tokens (tail dropped)."""
    total = sum(len(t) + 1 for t in token_lists)
    stream = np.empty(total, dtype=np.int64)
    position = 0
    for tokens in token_lists:
        stream[position : position + len(tokens)] = tokens
        position += len(tokens)
        stream[position] = eos_id
        position += 1
    n_rows = _row_count(total, seq_len)
    return torch.from_numpy(stream[: n_rows * seq_len].reshape(n_rows, seq_len))


def take_tokens(lengths: np.ndarray, order: np.ndarray, budget: int) -> np.ndarray:
    """Indices of documents, in `order`, until `budget` tokens are reached (`lengths`: each
    document's tokens with its EOS)."""
    used = np.cumsum(lengths[order], dtype=np.int64)
    # A document is taken while the tokens before it are still under the budget.
    return order[: int(np.searchsorted(used, budget, side="left")) + 1]


class Batches(ABC):
    """Micro-batches by global index; each epoch is a fresh seeded permutation of the examples.

    Batch i is a pure function of (seed, i), so a resumed run sees exactly the batches an
    uninterrupted run would have seen.
    """

    def __init__(self, n_examples: int, micro_batch_size: int, seed: int) -> None:
        if n_examples == 0:
            raise InputError("no training examples")
        self.n = n_examples
        self.micro_batch_size = micro_batch_size
        self.seed = seed
        self._epoch = -1
        self._perm: np.ndarray = np.arange(0)

    def indices(self, index: int) -> np.ndarray:
        """Example indices of micro-batch `index`."""
        positions = np.arange(index * self.micro_batch_size, (index + 1) * self.micro_batch_size)
        out = np.empty(len(positions), dtype=np.int64)
        for k, position in enumerate(positions):
            epoch, offset = divmod(int(position), self.n)
            if epoch != self._epoch:
                self._perm = np.random.default_rng([self.seed, epoch]).permutation(self.n)
                self._epoch = epoch
            out[k] = self._perm[offset]
        return out

    @abstractmethod
    def batch(self, index: int) -> dict[str, torch.Tensor]:
        """The tensors of micro-batch `index`."""

    def move_to(self, device: torch.device) -> None:  # noqa: B027 (optional hook)
        """Keep the examples on `device` when they fit there (default: they stay on the host)."""


class PackedBatches(Batches):
    """Causal-LM batches of packed rows: in memory (`pack`) or read from token shards."""

    def __init__(self, rows: torch.Tensor | ShardRows, micro_batch_size: int, seed: int) -> None:
        super().__init__(len(rows), micro_batch_size, seed)
        self.rows = rows

    def batch(self, index: int) -> dict[str, torch.Tensor]:
        """input_ids and labels (the model shifts labels itself)."""
        if isinstance(self.rows, ShardRows):
            x = self.rows.take(self.indices(index))
        else:
            x = self.rows[torch.from_numpy(self.indices(index)).to(self.rows.device)]
        return {"input_ids": x, "labels": x}

    def move_to(self, device: torch.device) -> None:
        """Rows in memory are small (8 bytes a token): copy them once, not every step (rows
        read from shards stay there; each batch is moved as it is read)."""
        if isinstance(self.rows, torch.Tensor):
            self.rows = self.rows.to(device)


def pad_batch(
    sequences: list[list[int]], pad_id: int, labels: list[list[int]] | None = None
) -> dict[str, torch.Tensor]:
    """Right-pad sequences; labels (if given) are padded with -100 so padding is never learnt."""
    width = max(len(s) for s in sequences)
    ids = torch.full((len(sequences), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(sequences), width), dtype=torch.long)
    out = {"input_ids": ids, "attention_mask": mask}
    if labels is not None:
        out["labels"] = torch.full((len(sequences), width), -100, dtype=torch.long)
    for row, sequence in enumerate(sequences):
        ids[row, : len(sequence)] = torch.tensor(sequence, dtype=torch.long)
        mask[row, : len(sequence)] = 1
        if labels is not None:
            out["labels"][row, : len(sequence)] = torch.tensor(labels[row], dtype=torch.long)
    return out
