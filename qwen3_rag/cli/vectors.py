"""A collection's stored chunks read into memory, and exact nearest-neighbour search over their vectors at any
Matryoshka size up to the stored one -- truncated, then re-normalised, as the embedder does -- so that ``qwen3-rag
eval`` can measure smaller sizes without re-indexing."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from qwen3_rag.cli.errors import UsageError
from qwen3_rag.cli.search import Hit
from qwen3_rag.embedder import _normalise

PAGE = 5000
"""Chunks read per ``collection.get`` call."""


@dataclass
class StoredChunks:
    ids: list[str]
    metadatas: list[dict[str, Any]]
    documents: list[str] | None = None
    vectors: np.ndarray | None = None
    """float32, one row per chunk, as stored (``None`` when not read)."""
    _sizes: dict[int, np.ndarray] = field(default_factory=dict, repr=False)

    @classmethod
    def read(cls, collection: Any, *, vectors: bool, documents: bool, page: int = PAGE) -> StoredChunks:
        """Every chunk's id and metadata, and on request its vector and text, read ``page`` chunks at a time."""
        include = ["metadatas"] + (["embeddings"] if vectors else []) + (["documents"] if documents else [])
        ids: list[str] = []
        metadatas: list[dict[str, Any]] = []
        texts: list[str] = []
        pages: list[np.ndarray] = []
        seen: set[str] = set()
        offset = 0
        while True:
            batch = collection.get(include=include, limit=page, offset=offset)
            if not batch["ids"]:
                break
            offset += len(batch["ids"])
            keep = [i for i, id_ in enumerate(batch["ids"]) if id_ not in seen]  # a concurrent write moved a page
            seen.update(batch["ids"])
            ids.extend(batch["ids"][i] for i in keep)
            metadatas.extend(batch["metadatas"][i] or {} for i in keep)
            if documents:
                texts.extend(batch["documents"][i] or "" for i in keep)
            if vectors:
                try:
                    rows = np.asarray(batch["embeddings"], dtype=np.float32)
                except ValueError:
                    sizes = sorted({len(v) for v in batch["embeddings"]})
                    raise UsageError(
                        f"the index holds vectors of several sizes ({', '.join(map(str, sizes))})"
                    ) from None
                pages.append(rows[keep])
        matrix = None
        if vectors:
            sizes = sorted({p.shape[1] for p in pages})
            if len(sizes) > 1:
                raise UsageError(f"the index holds vectors of several sizes ({', '.join(map(str, sizes))})")
            matrix = np.concatenate(pages) if pages else np.zeros((0, 0), dtype=np.float32)
        return cls(ids, metadatas, texts if documents else None, matrix)

    @property
    def sources(self) -> set[str]:
        return {m.get("source", "?") for m in self.metadatas}

    @property
    def dimensions(self) -> int:
        """The size of the stored vectors."""
        if self.vectors is None:
            raise ValueError("the vectors were not read")
        return int(self.vectors.shape[1])

    def at(self, dimensions: int) -> np.ndarray:
        """The stored vectors truncated to ``dimensions`` and normalised again (computed once per size)."""
        if self.vectors is None:
            raise ValueError("the vectors were not read")
        if dimensions not in self._sizes:
            self._sizes[dimensions] = truncate(self.vectors, dimensions)
        return self._sizes[dimensions]

    def nearest(self, query: np.ndarray, dimensions: int, *, top_k: int) -> list[Hit]:
        """The ``top_k`` chunks nearest to ``query`` (a stored-size query vector) at ``dimensions``, by exact cosine
        similarity, best first; equal scores keep the stored order."""
        matrix = self.at(dimensions)
        scores = matrix @ truncate(np.asarray(query, dtype=np.float32)[None, :], dimensions)[0]
        k = min(top_k, len(scores))
        if k < len(scores):  # the k best, and every chunk tied with the k-th, then sorted: ties stay in stored order
            kth = np.partition(-scores, k - 1)[k - 1]
            candidates = np.flatnonzero(-scores <= kth)
        else:
            candidates = np.arange(len(scores))
        best = candidates[np.lexsort((candidates, -scores[candidates]))][:k]
        texts = self.documents
        return [
            Hit.from_record(self.ids[i], texts[i] if texts is not None else "", self.metadatas[i], float(scores[i]))
            for i in best
        ]


def truncate(vectors: np.ndarray, dimensions: int) -> np.ndarray:
    """The first ``dimensions`` components of each row, normalised to unit length again (the embedder's own
    normalisation, so that the result equals what ``dimensions=`` would have returned)."""
    return _normalise(torch.from_numpy(np.ascontiguousarray(vectors[:, :dimensions], dtype=np.float32))).numpy()
