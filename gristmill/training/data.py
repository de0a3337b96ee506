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
from gristmill.storage.token_shards import TokenShards, heldout_mask
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


def read_documents(
    workspace: Workspace,
    source: DataSource,
    split: Split = "all",
    heldout_fraction: float = 0.0,
    columns: tuple[str, ...] = ("doc_id", "text", "meta", "n_bytes"),
) -> pa.Table:
    """The source's documents (in a stable order), restricted to one side of the held-out split."""
    with workspace.catalog(read_only=True) as con:
        members = None
        corpus = source.corpus
        if source.selection is not None:
            corpus = catalog.get_selection(con, source.selection)["corpus"]
            members = workspace.members_path(source.selection)
        if corpus is None:
            raise InputError("a data source needs a corpus or a selection")
        catalog.require_corpus(con, corpus)
        shards = workspace.shard_files(con, corpus)
    if not shards:
        raise InputError(f"{source.label()} has no documents")
    wanted = ", ".join(f"d.{c}" for c in columns)
    with duckdb.connect() as con:
        if members is None:
            query = (
                f"select {wanted} from read_parquet({sql_files(shards)}, filename = true, "
                "file_row_number = true) d order by d.filename, d.file_row_number"
            )
        else:
            query = (
                f"select {wanted} from read_parquet({sql_files([members])}) m "
                f"join read_parquet({sql_files(shards)}) d using (doc_id) order by m.rank"
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


def shard_documents(directory: Path, split: str = "train") -> list[np.ndarray]:
    """Each document's token ids from token shards written with EOS and no BOS, EOS dropped
    (`pack` puts it back): memory-mapped views, so only the packed rows are ever copied."""
    shards = TokenShards(directory)
    if shards.manifest["eos_id"] is None or shards.manifest["bos_id"] is not None:
        raise InputError(f"{directory}: packing needs token shards with EOS and without BOS")
    return [ids[:-1] for _, ids in shards.documents(split)]


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
    n_rows = total // seq_len
    if n_rows == 0:
        raise InputError(
            f"too little text to train on: {total} tokens, less than one sequence of {seq_len}"
        )
    return torch.from_numpy(stream[: n_rows * seq_len].reshape(n_rows, seq_len))


def take_tokens(token_lists: list[list[int]], order: np.ndarray, budget: int) -> list[int]:
    """Indices of documents, in `order`, until `budget` tokens (counting EOS) are reached."""
    chosen, used = [], 0
    for index in order:
        if used >= budget:
            break
        chosen.append(int(index))
        used += len(token_lists[index]) + 1
    return chosen


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
    """Causal-LM batches of packed rows."""

    def __init__(self, rows: torch.Tensor, micro_batch_size: int, seed: int) -> None:
        super().__init__(rows.shape[0], micro_batch_size, seed)
        self.rows = rows

    def batch(self, index: int) -> dict[str, torch.Tensor]:
        """input_ids and labels (the model shifts labels itself)."""
        x = self.rows[torch.from_numpy(self.indices(index)).to(self.rows.device)]
        return {"input_ids": x, "labels": x}

    def move_to(self, device: torch.device) -> None:
        """Packed token ids are small (8 bytes a token): copy them once, not every step."""
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
