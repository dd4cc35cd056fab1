"""One-hot encoding and the word <-> index vocabulary (lecture: "one-hot vs learned embeddings").

A one-hot vector of a word in a vocabulary of size V is the V-dimensional vector with a single 1 at
the word's index. Every pair of one-hot vectors is orthogonal, so one-hot encodings say nothing about
which words are alike ("man" is as far from "woman" as from "pneumothorax"); a learned embedding
(:mod:`dlmi.embed.word2vec`) maps the same index to a dense D-dimensional vector instead.

The vocabulary is ordered by descending frequency (ties: first appearance), as word2vec does, so the
most frequent words get the smallest indices.
"""
from __future__ import annotations

from collections import Counter
from typing import Iterable, Sequence

import torch


def check_tokens(tokens, name: str = "tokens") -> list[str]:
    """Validate one tokenised sentence: a non-empty list/tuple of strings. Returns it as a list."""
    if isinstance(tokens, str):
        raise TypeError(f"{name} must be a list of word strings, got one str; split it first, "
                        f"e.g. {name}={tokens[:30]!r}.split()")
    if not isinstance(tokens, Sequence):
        raise TypeError(f"{name} must be a list of word strings, got {type(tokens).__name__}")
    tokens = list(tokens)
    if not tokens:
        raise ValueError(f"{name} is empty: expected a non-empty list of word strings")
    bad = next((t for t in tokens if not isinstance(t, str)), None)
    if bad is not None:
        raise TypeError(f"{name} must contain only str tokens, found {type(bad).__name__} {bad!r}")
    return tokens


def check_corpus(sentences, name: str = "sentences") -> list[list[str]]:
    """Validate a corpus: a non-empty iterable of tokenised sentences (lists of strings).

    A flat list of strings is accepted as one sentence. Empty sentences are dropped; a corpus with no
    tokens at all is an error.
    """
    if isinstance(sentences, str):
        raise TypeError(f"{name} must be a list of tokenised sentences (lists of str), got one str")
    if not isinstance(sentences, Iterable):
        raise TypeError(f"{name} must be a list of tokenised sentences, got {type(sentences).__name__}")
    sentences = list(sentences)
    if sentences and all(isinstance(s, str) for s in sentences):
        sentences = [sentences]  # one flat sentence
    out = []
    for i, s in enumerate(sentences):
        if isinstance(s, str) or not isinstance(s, Sequence):
            raise TypeError(f"{name}[{i}] must be a list of str tokens, got {type(s).__name__}")
        if len(s):
            out.append(check_tokens(s, f"{name}[{i}]"))
    if not out:
        raise ValueError(f"{name} is empty: the corpus has no tokens")
    return out


class Vocab:
    """Words <-> indices, with counts. Index 0 is the most frequent word.

    >>> v = Vocab.from_corpus([["a", "b", "a"]])
    >>> v.itos, v["a"], v.counts.tolist()
    (['a', 'b'], 0, [2, 1])
    """

    def __init__(self, words: Sequence[str], counts: Sequence[int] | None = None):
        words = list(words)
        if not words:
            raise ValueError("a Vocab needs at least one word")
        if len(set(words)) != len(words):
            raise ValueError("Vocab words must be unique")
        self.itos: list[str] = words
        self.stoi: dict[str, int] = {w: i for i, w in enumerate(words)}
        counts = [1] * len(words) if counts is None else list(counts)
        if len(counts) != len(words):
            raise ValueError(f"got {len(counts)} counts for {len(words)} words")
        self.counts = torch.tensor(counts, dtype=torch.long)  # (V,)

    @classmethod
    def from_corpus(cls, sentences, min_count: int = 1, max_size: int | None = None) -> "Vocab":
        """Count the words of ``sentences`` (list of token lists, or one token list); keep those seen
        at least ``min_count`` times, most frequent first (at most ``max_size``)."""
        if not isinstance(min_count, int) or min_count < 1:
            raise ValueError(f"min_count must be an int >= 1, got {min_count!r}")
        sentences = check_corpus(sentences)
        counter: Counter = Counter()
        for s in sentences:
            counter.update(s)
        # Counter.most_common is stable: equal counts keep first-appearance order.
        items = [(w, c) for w, c in counter.most_common(max_size) if c >= min_count]
        if not items:
            raise ValueError(f"no word occurs min_count={min_count} times; lower min_count")
        words, counts = zip(*items)
        return cls(words, counts)

    def __len__(self) -> int:
        return len(self.itos)

    def __contains__(self, word) -> bool:
        return word in self.stoi

    def __getitem__(self, word: str) -> int:
        try:
            return self.stoi[word]
        except KeyError:
            raise KeyError(f"word {word!r} is not in the vocabulary ({len(self)} words, e.g. "
                           f"{self.itos[:5]}); rare words are dropped by min_count") from None

    def encode(self, tokens: Sequence[str], unknown: str = "error") -> torch.Tensor:
        """Token list -> LongTensor of indices, shape (len(tokens),).

        ``unknown="error"`` raises KeyError for a word not in the vocabulary; ``"skip"`` drops it.
        """
        tokens = check_tokens(tokens)
        if unknown not in ("error", "skip"):
            raise ValueError(f"unknown must be 'error' or 'skip', got {unknown!r}")
        if unknown == "skip":
            ids = [self.stoi[t] for t in tokens if t in self.stoi]
        else:
            ids = [self[t] for t in tokens]
        return torch.tensor(ids, dtype=torch.long)

    def decode(self, ids) -> list[str]:
        """Indices (iterable of int or a tensor) -> words."""
        if isinstance(ids, torch.Tensor):
            ids = ids.tolist()
        return [self.itos[i] for i in ids]

    def __repr__(self) -> str:
        return f"Vocab({len(self)} words: {self.itos[:8]}{'...' if len(self) > 8 else ''})"


def one_hot(indices, num_classes: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """One-hot vectors: ``indices`` of shape (...) -> tensor of shape (..., num_classes).

    Float by default because a one-hot vector is meant to be multiplied by a weight matrix:
    ``one_hot(i, V) @ W`` is row ``W[i]`` (see :meth:`dlmi.embed.SkipGram.one_hot_forward`).
    """
    if not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"num_classes must be a positive int, got {num_classes!r}")
    indices = torch.as_tensor(indices)
    if indices.dtype.is_floating_point or indices.dtype == torch.bool:
        raise TypeError(f"indices must be integers, got {indices.dtype}")
    if indices.numel() and (int(indices.min()) < 0 or int(indices.max()) >= num_classes):
        raise ValueError(f"indices must lie in [0, {num_classes}), got range "
                         f"[{int(indices.min())}, {int(indices.max())}]")
    return torch.nn.functional.one_hot(indices.long(), num_classes).to(dtype)


def one_hot_words(words: Sequence[str], vocab: Vocab, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Words -> one-hot matrix of shape (len(words), len(vocab)); unknown words are a KeyError."""
    return one_hot(vocab.encode(words), len(vocab), dtype)
