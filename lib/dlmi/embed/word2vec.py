"""Skip-gram and CBOW (word2vec) with full-softmax and negative-sampling losses.

References:
    Mikolov, Chen, Corrado, Dean (2013a). Efficient Estimation of Word Representations in Vector
    Space. arXiv:1301.3781 — the skip-gram and CBOW architectures.
    Mikolov, Sutskever, Chen, Corrado, Dean (2013b). Distributed Representations of Words and
    Phrases and their Compositionality. NeurIPS — negative sampling, the unigram^(3/4) noise
    distribution and subsampling of frequent words.

The lecture's picture: a word enters as a one-hot vector x (V,), a linear layer W (V, D) without bias
or activation makes the hidden vector h = x @ W (D,) — which is just row W[i] of the word's index i —
and a second linear layer W' (V, D) scores every word of the vocabulary, softmax(W' h). The rows of
W are the word embeddings. ``nn.Embedding`` is that first linear layer done efficiently: a row lookup
instead of a (V,)-by-(V, D) product that is all zeros but one row (``one_hot_forward`` shows it).

Shapes: B = batch, V = vocabulary size, D = embedding size, K = negatives per positive pair,
C = context slots per CBOW example (2 * window).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

# ----------------------------------------------------------------------------------------------
# The losses, as functions of the vectors involved


def _check_vectors(center, context, negatives=None):
    if center.ndim != 2:
        raise ValueError(f"center vectors must have shape (batch, dim), got {tuple(center.shape)}")
    if context.shape != center.shape:
        raise ValueError(f"context vectors must have shape {tuple(center.shape)} like the center vectors, "
                         f"got {tuple(context.shape)}")
    if negatives is not None and (negatives.ndim != 3 or negatives.shape[0] != center.shape[0]
                                  or negatives.shape[2] != center.shape[1]):
        raise ValueError(f"negative vectors must have shape (batch, K, dim) = ({center.shape[0]}, K, "
                         f"{center.shape[1]}), got {tuple(negatives.shape)}")


def negative_sampling_loss(v_center, u_context, u_negatives, reduction: str = "mean"):
    """Skip-gram negative-sampling loss (Mikolov 2013b, eq. 4), negated for minimisation.

    For one pair with center vector v_c, true context vector u_o and K noise vectors u_k::

        loss = -log sigma(u_o . v_c) - sum_k log sigma(-u_k . v_c)

    Args:
        v_center: (B, D) input ("center") embeddings.
        u_context: (B, D) output embeddings of the true context words.
        u_negatives: (B, K, D) output embeddings of the K noise words of each pair.
        reduction: "mean" (over pairs), "sum" or "none" (-> (B,)).
    """
    _check_vectors(v_center, u_context, u_negatives)
    pos = (v_center * u_context).sum(-1)                                # (B,)
    neg = torch.bmm(u_negatives, v_center.unsqueeze(2)).squeeze(2)      # (B, K)
    # logsigmoid is the numerically stable log(sigma(x)); log(torch.sigmoid(x)) underflows to -inf
    loss = -F.logsigmoid(pos) - F.logsigmoid(-neg).sum(1)              # (B,)
    return _reduce(loss, reduction)


def negative_sampling_grads(v_center, u_context, u_negatives):
    """Closed-form gradients of the *summed* negative-sampling loss; what the fast trainer applies.

    With s_o = u_o . v_c and s_k = u_k . v_c (sigma(s) - 1 = -sigma(-s))::

        dL/dv_c = (sigma(s_o) - 1) u_o + sum_k sigma(s_k) u_k
        dL/du_o = (sigma(s_o) - 1) v_c
        dL/du_k = sigma(s_k) v_c

    Returns:
        ``(d_center (B, D), d_context (B, D), d_negatives (B, K, D))``.
    """
    _check_vectors(v_center, u_context, u_negatives)
    u = torch.cat([u_context.unsqueeze(1), u_negatives], 1)            # (B, 1+K, D)
    d_center, d_u, _ = _sgns_grads(v_center, u)
    return d_center, d_u[:, 0], d_u[:, 1:]


def _sgns_grads(v, u, weight=None):
    """Gradient of the summed SGNS loss; column 0 of ``u`` (B, 1+K, D) is the true context.

    ``weight`` (B, 1+K) scales each term (the trainer zeroes a noise word that equals the context
    word, as word2vec.c does, and folds in minus the learning rate). Also returns the scores
    (B, 1+K), from which the trainer reads the loss without recomputing it."""
    # (u * v).sum(-1) rather than bmm: a batch of matrix-vector products is memory-bound, and the
    # broadcast multiply streams through u once (several times faster than bmm on CPU)
    score = (u * v.unsqueeze(1)).sum(-1)                                # (B, 1+K)
    g = torch.sigmoid(score)                                            # dL/dscore for the negatives
    g[:, 0] -= 1.0                                                      # ... and sigma(s)-1 for the positive
    if weight is not None:
        g = g * weight
    d_v = torch.bmm(g.unsqueeze(1), u).squeeze(1)                       # (B, D)
    d_u = g.unsqueeze(2) * v.unsqueeze(1)                               # (B, 1+K, D)
    return d_v, d_u, score


def full_softmax_loss(hidden, output_weight, target, reduction: str = "mean"):
    """Cross-entropy of softmax over the whole vocabulary: -log p(target | hidden).

    ``p(o | c) = exp(u_o . h) / sum_w exp(u_w . h)`` (Mikolov 2013b, eq. 2) costs O(V) per example,
    which is why negative sampling exists.

    Args:
        hidden: (B, D) hidden vectors (center embedding for skip-gram, mean context for CBOW).
        output_weight: (V, D) output embeddings W'.
        target: (B,) indices of the words to predict.
    """
    logits = hidden @ output_weight.T                                   # (B, V)
    return F.cross_entropy(logits, target, reduction=reduction)


def _reduce(loss, reduction):
    if reduction == "mean":
        return loss.mean()
    if reduction == "sum":
        return loss.sum()
    if reduction == "none":
        return loss
    raise ValueError(f"reduction must be 'mean', 'sum' or 'none', got {reduction!r}")


# ----------------------------------------------------------------------------------------------
# Noise distribution and subsampling (Mikolov 2013b, sections 2.2 and 2.3)


def _check_counts(counts) -> torch.Tensor:
    counts = torch.as_tensor(counts, dtype=torch.float64)
    if counts.ndim != 1 or counts.numel() == 0:
        raise ValueError(f"counts must be a non-empty 1-D tensor (V,), got shape {tuple(counts.shape)}")
    if (counts <= 0).any():
        raise ValueError("counts must be positive (every vocabulary word occurs at least once)")
    return counts


def noise_distribution(counts, power: float = 0.75) -> torch.Tensor:
    """P_n(w) = count(w)^power / sum_w' count(w')^power — the unigram distribution raised to 3/4.

    Raising to 3/4 flattens the unigram distribution: rare words are drawn as negatives more often
    than their frequency, frequent ones less (Mikolov 2013b found 3/4 beat both unigram and uniform).
    Returns float64 probabilities of shape (V,).
    """
    weights = _check_counts(counts) ** power
    return weights / weights.sum()


def keep_probabilities(counts, sample: float = 1e-5, formula: str = "paper") -> torch.Tensor:
    """Probability that each occurrence of a word is *kept* by frequent-word subsampling, shape (V,).

    With f(w) = count(w) / total and threshold t = ``sample``:

    * ``formula="paper"`` (Mikolov 2013b, eq. 5): discard with probability 1 - sqrt(t / f), i.e.
      keep with ``min(1, sqrt(t / f))``. The paper uses t = 1e-5 on billions of words.
    * ``formula="word2vec"`` (also ``"gensim"``): the formula of the released word2vec.c and of gensim
      (``Word2Vec.prepare_vocab``): keep with ``min(1, (sqrt(f / t) + 1) * t / f)``, which keeps a bit
      more than the paper's (``sqrt(t/f) + t/f``); gensim's default is t = 1e-3.

    ``sample=0`` keeps everything. Words rarer than about t are always kept in both formulas.
    """
    counts = _check_counts(counts)
    if not isinstance(sample, (int, float)) or sample < 0 or sample >= 1:
        raise ValueError(f"sample must be a frequency threshold in [0, 1), got {sample!r}")
    if sample == 0:
        return torch.ones_like(counts)
    f = counts / counts.sum()
    if formula == "paper":
        keep = torch.sqrt(sample / f)
    elif formula in ("word2vec", "gensim"):
        keep = (torch.sqrt(f / sample) + 1) * sample / f
    else:
        raise ValueError(f"formula must be 'paper' or 'word2vec' (= 'gensim'), got {formula!r}")
    return keep.clamp(max=1.0)


class NegativeSampler:
    """Draws noise words from :func:`noise_distribution` in O(1) per draw (Walker's alias method).

    word2vec.c fills a 1e8-entry table with word indices in proportion to P_n and indexes it with
    random integers, which rounds every probability to a multiple of 1e-8; gensim binary-searches a
    cumulative table. The alias table (Walker 1977, Vose 1991) is exact and as fast as word2vec's:
    draw a word i uniformly, keep it with probability ``accept[i]``, else take ``alias[i]``.
    """

    def __init__(self, counts, power: float = 0.75, device=None):
        self.probs = noise_distribution(counts, power)                   # (V,) float64
        accept, alias = _alias_table(self.probs)
        self.accept = accept.to(device=device, dtype=torch.float32)
        self.alias = alias.to(device=device)

    @property
    def device(self) -> torch.device:
        return self.accept.device

    def to(self, device) -> "NegativeSampler":
        self.accept, self.alias = self.accept.to(device), self.alias.to(device)
        return self

    def sample(self, shape, generator: torch.Generator | None = None) -> torch.Tensor:
        """LongTensor of noise-word indices of the given shape, on the sampler's device."""
        shape = (shape,) if isinstance(shape, int) else tuple(shape)
        V = self.accept.numel()
        i = torch.randint(0, V, shape, generator=generator, device=self.device)
        r = torch.rand(shape, generator=generator, device=self.device)
        return torch.where(r < self.accept[i], i, self.alias[i])


def _alias_table(probs: torch.Tensor):
    """Vose's alias method: ``accept`` (V,) and ``alias`` (V,) with
    P(w) = (accept[w] + sum over j with alias[j] = w of (1 - accept[j])) / V."""
    V = probs.numel()
    scaled = (probs * V).tolist()
    accept, alias = [1.0] * V, list(range(V))
    small = [i for i, x in enumerate(scaled) if x < 1.0]
    large = [i for i, x in enumerate(scaled) if x >= 1.0]
    while small and large:
        s, l = small.pop(), large.pop()
        accept[s], alias[s] = scaled[s], l          # column s: s with prob scaled[s], else l
        scaled[l] -= 1.0 - scaled[s]                # l gave away what s lacked
        (small if scaled[l] < 1.0 else large).append(l)
    # leftovers are 1 up to rounding: keep accept = 1
    return torch.tensor(accept, dtype=torch.float64), torch.tensor(alias, dtype=torch.long)


# ----------------------------------------------------------------------------------------------
# The models


class _Word2Vec(nn.Module):
    """Shared parts: W (input embeddings, "the" word vectors) and W' (output embeddings)."""

    def __init__(self, vocab_size: int, dim: int = 100):
        super().__init__()
        for name, value in (("vocab_size", vocab_size), ("dim", dim)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        self.vocab_size, self.dim = vocab_size, dim
        self.embed_in = nn.Embedding(vocab_size, dim)    # W  (V, D): one-hot -> hidden
        self.embed_out = nn.Embedding(vocab_size, dim)   # W' (V, D): hidden -> scores
        self.reset_parameters()

    def reset_parameters(self, generator: torch.Generator | None = None) -> None:
        # word2vec.c's initialisation: W uniform in [-0.5/D, 0.5/D), W' zero. Small W keeps the first
        # scores near 0 (sigma = 1/2) so early updates are gentle; zero W' is fine because W' gets
        # gradient from W even when W' is zero (not the other way round).
        with torch.no_grad():
            w = torch.rand(self.embed_in.weight.shape, generator=generator)
            self.embed_in.weight.copy_((w - 0.5) / self.dim)
            self.embed_out.weight.zero_()

    @property
    def vectors(self) -> torch.Tensor:
        """The learned word vectors, rows of W: (V, D), detached."""
        return self.embed_in.weight.detach()

    def one_hot_forward(self, one_hot_x: torch.Tensor) -> torch.Tensor:
        """The lecture's linear layer on one-hot input: (B, V) @ W (V, D) -> (B, D).

        Equal to ``self.embed_in(indices)``, which skips multiplying by V-1 zeros per row."""
        if one_hot_x.ndim != 2 or one_hot_x.shape[1] != self.vocab_size:
            raise ValueError(f"one-hot input must have shape (batch, {self.vocab_size}), got {tuple(one_hot_x.shape)}")
        return one_hot_x.to(self.embed_in.weight.dtype) @ self.embed_in.weight

    def _check_ids(self, ids, name):
        if not isinstance(ids, torch.Tensor) or ids.dtype not in (torch.int64, torch.int32):
            raise TypeError(f"{name} must be an integer (long) tensor of word indices, got "
                            f"{ids.dtype if isinstance(ids, torch.Tensor) else type(ids).__name__}")
        if ids.numel() and (int(ids.min()) < 0 or int(ids.max()) >= self.vocab_size):
            raise ValueError(f"{name} must lie in [0, {self.vocab_size}), "
                             f"got range [{int(ids.min())}, {int(ids.max())}]")
        return ids


class SkipGram(_Word2Vec):
    """Skip-gram: the center word predicts each of its context words (Mikolov 2013a, Fig. 1 right).

    ``model(center)`` -> hidden vectors (B, D) = rows of W. Losses:
    ``model.softmax_loss(center (B,), context (B,))`` and
    ``model.negative_sampling_loss(center (B,), context (B,), negatives (B, K))``.
    """

    def forward(self, center: torch.Tensor) -> torch.Tensor:
        return self.embed_in(self._check_ids(center, "center"))

    def logits(self, center: torch.Tensor) -> torch.Tensor:
        """Scores of every vocabulary word as the context of ``center``: (B, V)."""
        return self(center) @ self.embed_out.weight.T

    def softmax_loss(self, center, context, reduction: str = "mean"):
        return full_softmax_loss(self(center), self.embed_out.weight, self._check_ids(context, "context"), reduction)

    def negative_sampling_loss(self, center, context, negatives, reduction: str = "mean"):
        if negatives.ndim != 2 or negatives.shape[0] != center.shape[0]:
            raise ValueError(f"negatives must have shape (batch, K) = ({center.shape[0]}, K), "
                             f"got {tuple(negatives.shape)}")
        return negative_sampling_loss(self(center), self.embed_out(self._check_ids(context, "context")),
                                      self.embed_out(self._check_ids(negatives, "negatives")), reduction)


class CBOW(_Word2Vec):
    """Continuous bag of words: the mean of the context vectors predicts the center word
    (Mikolov 2013a, Fig. 1 left; word2vec.c's default ``cbow_mean``).

    ``model(context (B, C), mask (B, C) or None)`` -> hidden vectors (B, D). ``mask`` marks real
    context slots (windows are shorter at sentence ends; see :func:`dlmi.embed.cbow_context_ids`).
    """

    def forward(self, context: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        context = self._check_ids(context, "context")
        if context.ndim != 2:
            raise ValueError(f"context must have shape (batch, context_slots), got {tuple(context.shape)}")
        vecs = self.embed_in(context)                                   # (B, C, D)
        if mask is None:
            return vecs.mean(1)
        if mask.shape != context.shape:
            raise ValueError(f"mask must have the context's shape {tuple(context.shape)}, got {tuple(mask.shape)}")
        m = mask.to(vecs.dtype).unsqueeze(2)                            # (B, C, 1)
        return (vecs * m).sum(1) / m.sum(1).clamp(min=1.0)

    def logits(self, context, mask=None):
        return self(context, mask) @ self.embed_out.weight.T            # (B, V)

    def softmax_loss(self, context, center, mask=None, reduction: str = "mean"):
        return full_softmax_loss(self(context, mask), self.embed_out.weight, self._check_ids(center, "center"),
                                 reduction)

    def negative_sampling_loss(self, context, center, negatives, mask=None, reduction: str = "mean"):
        if negatives.ndim != 2 or negatives.shape[0] != context.shape[0]:
            raise ValueError(f"negatives must have shape (batch, K) = ({context.shape[0]}, K), "
                             f"got {tuple(negatives.shape)}")
        return negative_sampling_loss(self(context, mask), self.embed_out(self._check_ids(center, "center")),
                                      self.embed_out(self._check_ids(negatives, "negatives")), reduction)


__all__ = ["SkipGram", "CBOW", "negative_sampling_loss", "negative_sampling_grads", "full_softmax_loss",
           "noise_distribution", "keep_probabilities", "NegativeSampler"]
