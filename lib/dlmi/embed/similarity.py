"""Nearest neighbours by cosine similarity, and analogies (lecture: "what embeddings capture").

Cosine similarity cos(a, b) = a.b / (|a| |b|) compares directions only, which is what word2vec
training shapes (vector lengths mostly grow with word frequency).

Analogies a : b :: c : ? are answered with 3CosAdd (Mikolov et al. 2013, "Linguistic Regularities in
Continuous Space Word Representations", and gensim's ``most_similar(positive=[b, c], negative=[a])``):
the word whose unit vector is closest to unit(b) - unit(a) + unit(c), never one of a, b, c themselves
(without that exclusion the answer is usually b or c).
"""
from __future__ import annotations

from typing import Iterable, Sequence

import torch

from .onehot import Vocab


def _as_matrix(x, name) -> torch.Tensor:
    x = torch.as_tensor(x)
    if not x.dtype.is_floating_point:
        raise TypeError(f"{name} must be a floating-point tensor, got {x.dtype}")
    if x.ndim == 1:
        x = x.unsqueeze(0)
    if x.ndim != 2:
        raise ValueError(f"{name} must have shape (n, dim) or (dim,), got {tuple(x.shape)}")
    return x


def normalize(vectors: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """Rows scaled to unit length (zero rows stay zero)."""
    return vectors / vectors.norm(dim=-1, keepdim=True).clamp(min=eps)


def cosine_similarity(a, b=None) -> torch.Tensor:
    """Pairwise cosine similarities between the rows of ``a`` (n, D) and ``b`` (m, D) -> (n, m).

    ``b=None`` compares ``a`` with itself."""
    a = _as_matrix(a, "a")
    b = a if b is None else _as_matrix(b, "b")
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"a and b must have the same dim, got {a.shape[1]} and {b.shape[1]}")
    return normalize(a) @ normalize(b).T


def nearest_neighbours(vectors, query, k: int = 10, exclude: Iterable[int] = ()):
    """The ``k`` rows of ``vectors`` (V, D) most cosine-similar to ``query`` (D,) or (Q, D).

    ``exclude``: row indices never returned (e.g. the query word itself).

    Returns:
        ``(similarities, indices)``, each (k,) for one query or (Q, k), best first.
    """
    vectors = _as_matrix(vectors, "vectors")
    single = torch.as_tensor(query).ndim == 1
    query = _as_matrix(query, "query").to(vectors.dtype)
    if query.shape[1] != vectors.shape[1]:
        raise ValueError(f"query must have dim {vectors.shape[1]} like the vectors, got {query.shape[1]}")
    exclude = sorted(set(int(i) for i in exclude))
    if not isinstance(k, int) or k < 1:
        raise ValueError(f"k must be a positive int, got {k!r}")
    k = min(k, vectors.shape[0] - len(exclude))
    if k < 1:
        raise ValueError("nothing left to return after excluding the given rows")
    sims = cosine_similarity(query, vectors)                             # (Q, V)
    if exclude:
        sims[:, exclude] = -float("inf")
    top = sims.topk(k, dim=1)
    if single:
        return top.values[0], top.indices[0]
    return top.values, top.indices


nearest_neighbors = nearest_neighbours  # US spelling


def analogy_vector(vectors, a: int, b: int, c: int) -> torch.Tensor:
    """unit(b) - unit(a) + unit(c): the point that answers a : b :: c : ? (3CosAdd)."""
    unit = normalize(_as_matrix(vectors, "vectors"))
    return unit[b] - unit[a] + unit[c]


class WordVectors:
    """Word vectors with their vocabulary: lookup, neighbours, similarity and analogies::

        wv = WordVectors(vocab, model.vectors)      # vectors: (V, D)
        wv.most_similar("effusion", topn=5)        # [(word, cosine), ...]
        wv.analogy("man", "king", "woman")          # man : king :: woman : ?  -> [("queen", 0.7...)]

    Asking for a word that is not in the vocabulary is a KeyError that says so.
    """

    def __init__(self, vocab: Vocab, vectors: torch.Tensor):
        if not isinstance(vocab, Vocab):
            raise TypeError(f"vocab must be a dlmi.embed.Vocab, got {type(vocab).__name__}")
        vectors = _as_matrix(vectors, "vectors").detach()
        if vectors.shape[0] != len(vocab):
            raise ValueError(f"vectors must have shape ({len(vocab)}, dim) for a vocabulary of "
                             f"{len(vocab)} words, got {tuple(vectors.shape)}")
        self.vocab = vocab
        self.vectors = vectors

    @property
    def words(self) -> list[str]:
        return self.vocab.itos

    def __len__(self) -> int:
        return len(self.vocab)

    def __contains__(self, word) -> bool:
        return word in self.vocab

    def __getitem__(self, word: str) -> torch.Tensor:
        return self.vectors[self.vocab[word]]

    def similarity(self, w1: str, w2: str) -> float:
        """Cosine similarity of two words."""
        return float(cosine_similarity(self[w1], self[w2])[0, 0])

    def most_similar(self, word, topn: int = 10, exclude: Sequence[str] = ()) -> list[tuple[str, float]]:
        """The ``topn`` nearest words to ``word`` (a word or a vector), excluding the word itself."""
        if isinstance(word, str):
            query, skip = self[word], [self.vocab[word]]
        else:
            query, skip = torch.as_tensor(word), []
        skip += [self.vocab[w] for w in exclude]
        sims, idx = nearest_neighbours(self.vectors, query, topn, exclude=skip)
        return [(self.vocab.itos[i], float(s)) for s, i in zip(sims.tolist(), idx.tolist())]

    def analogy(self, a: str, b: str, c: str, topn: int = 1) -> list[tuple[str, float]]:
        """a : b :: c : ?  ->  the ``topn`` words nearest unit(b) - unit(a) + unit(c), never a, b or c."""
        ia, ib, ic = self.vocab[a], self.vocab[b], self.vocab[c]
        sims, idx = nearest_neighbours(self.vectors, analogy_vector(self.vectors, ia, ib, ic), topn,
                                       exclude=(ia, ib, ic))
        return [(self.vocab.itos[i], float(s)) for s, i in zip(sims.tolist(), idx.tolist())]

    def __repr__(self) -> str:
        return f"WordVectors({len(self)} words x {self.vectors.shape[1]} dims)"
