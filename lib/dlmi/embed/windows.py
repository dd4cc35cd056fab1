"""Sliding-window training examples (lecture: "sliding window", skip-gram and CBOW).

A window of size ``window`` around position ``i`` covers the words at ``i-window .. i+window``, clipped
at the sentence ends. Skip-gram (Mikolov et al. 2013a, "Efficient Estimation of Word Representations
in Vector Space") turns it into one (center, context) pair per context word; CBOW turns it into one
(context words, center) example.

For the lecture's sentence and ``window=2``::

    >>> tokens = "natural language processing and machine learning is fun and exciting".split()
    >>> skipgram_pairs(tokens, 2)[:4]
    [('natural', 'language'), ('natural', 'processing'), ('language', 'natural'), ('language', 'processing')]

Order: centers left to right, and for each center its context words left to right — the rows of the
lecture's table. :func:`skipgram_pair_ids` and :func:`cbow_context_ids` are the same thing on index
tensors, vectorised for training (and used by :func:`dlmi.embed.train_word2vec`).
"""
from __future__ import annotations

import torch

from .onehot import check_tokens


def _check_window(window) -> int:
    if isinstance(window, bool) or not isinstance(window, int):
        raise TypeError(f"window must be an int >= 1, got {type(window).__name__} {window!r}")
    if window < 1:
        raise ValueError(f"window must be >= 1 (words on each side of the center), got {window}")
    return window


def skipgram_pairs(tokens, window: int) -> list[tuple[str, str]]:
    """(center, context) pairs of one tokenised sentence, in the lecture's table order.

    Args:
        tokens: list of word strings (e.g. ``sentence.split()``), non-empty.
        window: how many words on each side of the center count as context (>= 1).

    Returns:
        list of ``(center, context)`` tuples; a sentence of n words gives at most ``2*window*n`` pairs.
    """
    tokens = check_tokens(tokens)
    window = _check_window(window)
    pairs = []
    for i, center in enumerate(tokens):
        for j in range(max(0, i - window), min(len(tokens), i + window + 1)):
            if j != i:
                pairs.append((center, tokens[j]))
    return pairs


def cbow_examples(tokens, window: int) -> list[tuple[list[str], str]]:
    """(context words, center) examples of one tokenised sentence — CBOW's view of the same window.

    The context list holds the words around the center, left to right (shorter at the sentence ends):

        >>> cbow_examples("a b c d".split(), 1)
        [(['b'], 'a'), (['a', 'c'], 'b'), (['b', 'd'], 'c'), (['c'], 'd')]
    """
    tokens = check_tokens(tokens)
    window = _check_window(window)
    examples = []
    for i, center in enumerate(tokens):
        context = [tokens[j] for j in range(max(0, i - window), min(len(tokens), i + window + 1)) if j != i]
        examples.append((context, center))
    return examples


def _check_ids(ids, name="ids") -> torch.Tensor:
    ids = torch.as_tensor(ids)
    if ids.ndim != 1:
        raise ValueError(f"{name} must be 1-D (n_words,), got shape {tuple(ids.shape)}")
    if ids.dtype.is_floating_point or ids.dtype == torch.bool:
        raise TypeError(f"{name} must be an integer tensor, got {ids.dtype}")
    return ids


def _window_mask(ids, window, sentence_ids=None, reduced_window=None, start=0, stop=None):
    """Context ids at offsets -window..-1, 1..window of the centers ``start..stop`` and a validity mask.

    Returns ``(contexts, valid)``, both (stop - start, 2*window). Positions outside ``start..stop``
    still serve as context, so a long corpus can be cut into batches without losing pairs.
    """
    n = ids.shape[0]
    stop = n if stop is None else stop
    device = ids.device
    offsets = torch.cat([torch.arange(-window, 0, device=device), torch.arange(1, window + 1, device=device)])
    centers = torch.arange(start, stop, device=device)
    pos = centers[:, None] + offsets[None, :]                                 # (m, 2w)
    valid = (pos >= 0) & (pos < n)
    pos = pos.clamp(0, max(n - 1, 0))
    if sentence_ids is not None:
        valid &= sentence_ids[pos] == sentence_ids[centers][:, None]         # never cross a sentence end
    if reduced_window is not None:
        # word2vec's dynamic window: position i only looks reduced_window[i] (1..window) words away,
        # which weights near context words more (Mikolov 2013a, section 3.2).
        valid &= offsets.abs()[None, :] <= reduced_window[centers][:, None]
    return ids[pos], valid


def _check_aux(ids, sentence_ids, reduced_window):
    if sentence_ids is not None:
        sentence_ids = _check_ids(sentence_ids, "sentence_ids").to(ids.device)
        if sentence_ids.shape != ids.shape:
            raise ValueError(f"sentence_ids must have the shape of ids {tuple(ids.shape)}, "
                             f"got {tuple(sentence_ids.shape)}")
    if reduced_window is not None:
        reduced_window = _check_ids(reduced_window, "reduced_window").to(ids.device)
        if reduced_window.shape != ids.shape:
            raise ValueError(f"reduced_window must have the shape of ids {tuple(ids.shape)}, "
                             f"got {tuple(reduced_window.shape)}")
    return sentence_ids, reduced_window


def skipgram_pair_ids(ids, window: int, sentence_ids=None, reduced_window=None):
    """Vectorised :func:`skipgram_pairs` on word indices.

    Args:
        ids: LongTensor (n,) of word indices (a sentence, or several concatenated).
        window: maximum distance between center and context (>= 1).
        sentence_ids: optional (n,) sentence number of each position; pairs never cross sentences.
        reduced_window: optional (n,) effective window of each position, in 1..window.

    Returns:
        ``(centers, contexts)``: two LongTensors (n_pairs,), in the same order as
        :func:`skipgram_pairs` (centers left to right, each center's contexts left to right).
    """
    ids = _check_ids(ids)
    window = _check_window(window)
    if ids.numel() == 0:
        raise ValueError("ids is empty: expected at least one word index")
    contexts, valid = _window_mask(ids, window, *_check_aux(ids, sentence_ids, reduced_window))
    centers = ids[:, None].expand_as(contexts)
    return centers[valid], contexts[valid]  # boolean indexing reads row-major: table order


def cbow_context_ids(ids, window: int, sentence_ids=None, reduced_window=None, pad: int = 0):
    """Vectorised :func:`cbow_examples`: one row per center word.

    Returns:
        ``(contexts, mask, centers)``: contexts (n, 2*window) word indices, padded with ``pad`` where
        ``mask`` (n, 2*window, bool) is False; centers (n,). Rows whose window is empty (one-word
        sentences) are dropped.
    """
    ids = _check_ids(ids)
    window = _check_window(window)
    if ids.numel() == 0:
        raise ValueError("ids is empty: expected at least one word index")
    contexts, valid = _window_mask(ids, window, *_check_aux(ids, sentence_ids, reduced_window))
    contexts = contexts.masked_fill(~valid, pad)
    keep = valid.any(1)
    return contexts[keep], valid[keep], ids[keep]
