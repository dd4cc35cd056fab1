"""A fast batched word2vec trainer: skip-gram or CBOW, negative sampling or full softmax.

What it does per epoch, as word2vec.c and gensim do (Mikolov 2013a/b):

1. drop each occurrence of word w with probability 1 - keep(w) (frequent-word subsampling,
   :func:`keep_probabilities`, word2vec.c formula by default — the one gensim uses);
2. give each remaining position a random effective window b in 1..window (the dynamic window);
3. make the (center, context) pairs of the window, never across sentences;
4. for each pair draw ``negative`` noise words from unigram^0.75 and take one SGD step on the
   negative-sampling loss, with a learning rate that decays linearly from ``alpha`` to ``min_alpha``.
   (The center's input vector predicts the context word, as in the paper; word2vec.c lets the
   context word's input vector predict the center. Over a symmetric window the pairs are the same.)

What it does differently, to be fast in PyTorch: step 4 runs for a batch of ``batch_words`` center
positions at once instead of one pair at a time. The batch's pairs and noise words are the non-zeros
of a sparse matrix, so the scores are one sampled dense-dense product (SDDMM) and the updates of W
and W' are sparse-dense products (SpMM) that read and write only the rows the batch touches
(:func:`sgns_sparse_update`). The update is the gradient of the summed loss of the batch
(:func:`negative_sampling_grads`, tested against autograd); a word that occurs several times in the
batch gets the sum of its updates, as in word2vec's lock-free multi-threaded ("Hogwild") training.

Summing is only safe while a row repeats a moderate number of times per batch: in a tiny vocabulary
every row repeats hundreds of times, the summed step overshoots and training diverges. ``row_cap``
(default 128) bounds that: a row that occurs n > row_cap times in one batch has its summed update
scaled by row_cap / n. On the IU radiology reports (1,133-word vocabulary, default batch) that
touches the output vectors of about 28 of the most frequent words per batch and leaves the
agreement with gensim where it was; on a 20-word toy corpus it is what keeps training finite.
``row_cap=None`` gives the plain summed step.

Threads: the work is many small memory-bound kernels, so on a 2-core or busy machine one torch
thread (``torch.set_num_threads(1)``) is usually fastest; extra OpenMP threads wait on each other.

Full softmax (``loss="softmax"``) uses autograd and touches all V rows of W' at every step: fine for
the lecture's small vocabularies, the reason negative sampling exists for real ones.
"""
from __future__ import annotations

import time
import warnings

import torch

from ..device import get_device
from .onehot import Vocab, check_corpus
from .similarity import WordVectors
from .windows import _check_window, _window_mask
from .word2vec import CBOW, NegativeSampler, SkipGram, _sgns_grads, keep_probabilities


def encode_corpus(sentences, vocab: Vocab):
    """Flatten a corpus into ``(ids, sentence_ids)``, two LongTensors (n,); words not in ``vocab``
    (dropped by min_count) are skipped, as in word2vec, so windows reach over them."""
    stoi, ids, sent = vocab.stoi, [], []
    for s_i, sentence in enumerate(sentences):
        kept = [stoi[w] for w in sentence if w in stoi]
        ids.extend(kept)
        sent.extend([s_i] * len(kept))
    if not ids:
        raise ValueError("no word of the corpus is in the vocabulary")
    return torch.tensor(ids, dtype=torch.long), torch.tensor(sent, dtype=torch.long)


def _check_positive(name, value, kind=int, minimum=1):
    if isinstance(value, bool) or not isinstance(value, kind) or value < minimum:
        raise ValueError(f"{name} must be {'an int' if kind is int else 'a number'} >= {minimum}, got {value!r}")


def train_word2vec(sentences, *, sg: bool = True, vector_size: int = 100, window: int = 5,
                   min_count: int = 5, negative: int = 5, loss: str = "negative", sample: float = 1e-3,
                   sample_formula: str = "word2vec", ns_exponent: float = 0.75, epochs: int = 5,
                   alpha: float = 0.025, min_alpha: float = 1e-4, batch_words: int = 1024,
                   vocab: Vocab | None = None, seed: int = 0, device=None, progress: bool = False,
                   compute_loss: bool = True, row_cap: float | None = 128) -> WordVectors:
    """Train word2vec on ``sentences`` (a list of token lists). Arguments follow gensim's ``Word2Vec``.

    Args:
        sg: True for skip-gram, False for CBOW (mean of the context vectors).
        vector_size: D. window: maximal context distance. min_count: rarer words are dropped.
        negative: noise words per positive pair (``loss="negative"``); ``loss="softmax"`` uses the
            full softmax over the vocabulary instead.
        sample: subsampling threshold t (0 = off); ``sample_formula`` "word2vec" (gensim, default)
            or "paper" (Mikolov 2013b eq. 5), see :func:`keep_probabilities`.
        epochs, alpha, min_alpha: passes over the corpus and the linearly decaying learning rate.
        batch_words: center positions per update: larger is faster per word but makes fewer, staler
            steps (on a corpus of ~100k words, stay around 1024).
        row_cap: bound on how many summed updates one row takes per batch (see the module notes).
        vocab: a ready :class:`Vocab` (else built with ``min_count``).
        device: where to train (default :func:`dlmi.get_device`).

    Returns:
        :class:`WordVectors` with ``.model`` (the trained :class:`SkipGram` / :class:`CBOW`) and
        ``.stats``: ``words`` (in-vocabulary corpus words x epochs), ``seconds``, ``words_per_second``,
        ``pairs`` and ``loss`` (mean loss per positive pair, per epoch).
    """
    t0 = time.perf_counter()
    sentences = check_corpus(sentences)
    for name, value in (("vector_size", vector_size), ("epochs", epochs), ("batch_words", batch_words)):
        _check_positive(name, value)
    window = _check_window(window)
    if loss not in ("negative", "softmax"):
        raise ValueError(f"loss must be 'negative' or 'softmax', got {loss!r}")
    if loss == "negative":
        _check_positive("negative", negative)
    if row_cap is not None and (isinstance(row_cap, bool) or not isinstance(row_cap, (int, float)) or row_cap < 1):
        raise ValueError(f"row_cap must be None or a number >= 1, got {row_cap!r}")
    if not 0 <= min_alpha <= alpha:
        raise ValueError(f"need 0 <= min_alpha <= alpha, got alpha={alpha}, min_alpha={min_alpha}")
    device = torch.device(device) if device is not None else get_device()

    if vocab is not None and not isinstance(vocab, Vocab):
        raise TypeError(f"vocab must be a dlmi.embed.Vocab, got {type(vocab).__name__}")
    vocab = vocab if vocab is not None else Vocab.from_corpus(sentences, min_count=min_count)
    ids, sent = encode_corpus(sentences, vocab)
    ids, sent = ids.to(device), sent.to(device)
    n_words = ids.numel()
    gen = torch.Generator(device=device).manual_seed(seed)
    torch_gen_cpu = torch.Generator().manual_seed(seed)

    model = (SkipGram if sg else CBOW)(len(vocab), vector_size)
    model.reset_parameters(generator=torch_gen_cpu)
    model.to(device)
    W, W_out = model.embed_in.weight, model.embed_out.weight
    keep = keep_probabilities(vocab.counts, sample, sample_formula).to(device=device, dtype=torch.float32)
    sampler = NegativeSampler(vocab.counts, ns_exponent, device=device) if loss == "negative" else None

    total_steps = epochs * n_words
    pairs_total, losses = 0, []
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=epochs, desc="word2vec", leave=False)
    for epoch in range(epochs):
        # 1. subsampling, fresh each epoch; 2. the dynamic window of each kept position
        kept = torch.rand(n_words, generator=gen, device=device) < keep[ids]
        e_ids, e_sent = ids[kept], sent[kept]
        n_kept = e_ids.numel()
        reduced = torch.randint(1, window + 1, (n_kept,), generator=gen, device=device)
        loss_sum = torch.zeros((), device=device, dtype=torch.float64)
        n_pos = 0
        for start in range(0, n_kept, batch_words):
            stop = min(start + batch_words, n_kept)
            lr = alpha - (alpha - min_alpha) * (epoch * n_words + start * n_words / max(n_kept, 1)) / total_steps
            lr = max(lr, min_alpha)
            ctx, valid = _window_mask(e_ids, window, e_sent, reduced, start, stop)   # (m, 2w)
            centers = e_ids[start:stop]
            if sg:
                o = ctx[valid]                                   # (P,) contexts, center by center
                if o.numel() == 0:
                    continue
                if loss == "negative":
                    # one hidden row per center, shared by its pairs
                    batch_loss = _sgns_step(W, W_out, W.index_select(0, centers), centers, o, sampler, negative,
                                            lr, gen, compute_loss, row_cap=row_cap, pairs_per_row=valid.sum(1))
                else:
                    c = centers[:, None].expand_as(ctx)[valid]   # (P,) the center of each pair
                    batch_loss = _softmax_step(model, (c, o), lr, c, o.numel(), row_cap)
                n_pos += o.numel()
            else:
                rows = valid.any(1)
                ctx, valid, centers = ctx[rows], valid[rows], centers[rows]
                if centers.numel() == 0:
                    continue
                if loss == "negative":
                    m = valid.to(W.dtype).unsqueeze(2)                               # (B, C, 1)
                    h = (W.index_select(0, ctx.reshape(-1)).view(*ctx.shape, -1) * m).sum(1) / m.sum(1)  # (B, D)
                    batch_loss = _sgns_step(W, W_out, h, ctx, centers, sampler, negative, lr, gen,
                                            compute_loss, ctx_mask=valid, row_cap=row_cap)
                else:
                    batch_loss = _softmax_step(model, (ctx, centers, valid), lr, ctx[valid], centers.numel(),
                                               row_cap)
                n_pos += centers.numel()
            if batch_loss is not None:
                loss_sum += batch_loss
        pairs_total += n_pos
        losses.append(float(loss_sum) / max(n_pos, 1) if compute_loss else float("nan"))
        if bar is not None:
            bar.set_postfix(loss=f"{losses[-1]:.4g}")
            bar.update(1)
    if bar is not None:
        bar.close()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    seconds = time.perf_counter() - t0
    wv = WordVectors(vocab, model.vectors.cpu())
    wv.model = model
    wv.stats = {"words": epochs * n_words, "seconds": seconds, "words_per_second": epochs * n_words / seconds,
                "pairs": pairs_total, "loss": losses}
    return wv


@torch.no_grad()
def _sgns_step(W, W_out, h, inputs, targets, sampler, negative, lr, gen, compute_loss, ctx_mask=None,
               row_cap=None, pairs_per_row=None):
    """One SGD step of the negative-sampling loss on a batch, updating W and W' in place.

    h: (R, D) hidden vectors (skip-gram: W[center]; CBOW: mean of W[context]).
    inputs: the W rows h came from — (R,) centers, or (R, C) contexts with ``ctx_mask``.
    targets: (P,) words to predict (skip-gram: contexts; CBOW: centers).
    pairs_per_row: (R,) how many consecutive targets belong to each row of h (default: one each).
    row_cap: see :func:`sgns_sparse_update`; applied to the rows of W too.
    Returns the summed loss of the batch (before the step), or None.
    """
    noise = sampler.sample((targets.shape[0], negative), generator=gen)       # (P, K)
    out_rows = torch.cat([targets[:, None], noise], 1)                        # (P, 1+K)
    # -lr folded into the per-term weight; word2vec.c skips a noise word equal to the target
    weight = torch.full(out_rows.shape, -lr, device=h.device, dtype=h.dtype)
    weight[:, 1:].masked_fill_(noise == targets[:, None], 0.0)
    # sparse kernels where torch has them (CPU, CUDA); the plain gather/scatter elsewhere (e.g. MPS)
    update = sgns_sparse_update if h.device.type in ("cpu", "cuda") else sgns_dense_update
    d_h, score = update(h, W_out, out_rows, weight, row_cap, pairs_per_row)
    rows = inputs if ctx_mask is None else inputs[ctx_mask]
    if ctx_mask is not None:
        # CBOW: like word2vec.c (cbow_mean=1) every context word gets the full hidden-layer update
        d_h = d_h[:, None, :].expand(-1, inputs.shape[1], -1)[ctx_mask]
    if row_cap is not None:
        updates = None if pairs_per_row is None else pairs_per_row.to(d_h.dtype)
        d_h = d_h * _row_scale(rows, W.shape[0], row_cap, d_h.dtype, updates)[:, None]
    W.index_add_(0, rows, d_h)
    if not compute_loss:
        return None
    # the loss of the batch read off the scores: softplus(-s) = -log sigma(s)
    score[:, 0].neg_()
    return (torch.nn.functional.softplus(score) * (weight != 0)).sum().double()


def _row_scale(rows, n_rows, cap, dtype, updates=None):
    """min(1, cap / n) for each entry of ``rows``, n = how many updates its row gets in the batch
    (one per occurrence, or ``updates[i]`` for occurrence i)."""
    counts = torch.bincount(rows, weights=updates, minlength=n_rows).to(dtype)
    return (cap / counts[rows]).clamp_(max=1.0)


def sgns_sparse_update(h, W_out, out_rows, weight, row_cap=None, pairs_per_row=None):
    """The negative-sampling step as sparse matrix products; updates ``W_out`` in place.

    Args:
        h: (R, D) hidden vectors. W_out: (V, D) output embeddings.
        out_rows: (P, 1+K) word indices, column 0 the true target, then the noise words.
        weight: (P, 1+K) factor on each term's gradient (minus the learning rate; 0 to skip a term).
        row_cap: if set, a row of W_out that occurs n > row_cap times in the batch gets its summed
            update scaled by row_cap / n (see :mod:`dlmi.embed.trainer`).
        pairs_per_row: (R,) number of consecutive rows of ``out_rows`` that use each row of ``h``
            (skip-gram: a center's context words); default one each (R = P).

    Returns:
        ``(d_h, score)``: the update for h (R, D) — the caller adds it to the rows h came from —
        and the scores u . h (P, 1+K) before the step.

    Same numbers as gathering u = W_out[out_rows] (P, 1+K, D) and using
    :func:`negative_sampling_grads` (tested), without ever materialising that (P, 1+K, D) tensor
    or its gradient: the terms are the non-zeros of a sparse (R, V) matrix S, the scores are the
    S-sampled entries of h @ W_out^T (SDDMM), the update of h is S_g @ W_out and the update of
    W_out is S_g^T @ h, both sparse-times-dense products (SpMM). That is several times less memory
    traffic than gather-multiply-scatter on CPU, and it maps to cuSPARSE on a GPU.
    """
    P, C1 = out_rows.shape
    R, V = h.shape[0], W_out.shape[0]
    flat = out_rows.reshape(-1)
    if pairs_per_row is None:
        if R != P:
            raise ValueError(f"h has {R} rows but out_rows {P}: pass pairs_per_row")
        crow = torch.arange(0, P * C1 + 1, C1, device=h.device)              # C1 non-zeros per row
        term_row = torch.arange(P, device=h.device).repeat_interleave(C1)
    else:
        crow = torch.zeros(R + 1, dtype=torch.long, device=h.device)
        crow[1:] = torch.cumsum(pairs_per_row * C1, 0)
        term_row = torch.repeat_interleave(torch.arange(R, device=h.device), pairs_per_row * C1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)                         # "sparse CSR is beta"
        S = torch.sparse_csr_tensor(crow, flat, weight.reshape(-1), (R, V))
        score = torch.sparse.sampled_addmm(S, h, W_out.T, beta=0.0).values().view(P, C1)
        g = torch.sigmoid(score)
        g[:, 0] -= 1.0                                                         # dL/dscore
        g = (g * weight).reshape(-1)
        d_h = torch.sparse_csr_tensor(crow, flat, g, (R, V)) @ W_out           # (R, D), old W_out
        if row_cap is not None:
            g = g * _row_scale(flat, V, row_cap, g.dtype)
        # S_g^T @ h over the distinct output words only: sort the non-zeros by word
        words, perm = flat.sort()
        uniq, counts = torch.unique_consecutive(words, return_counts=True)
        crow_t = torch.zeros(uniq.numel() + 1, dtype=torch.long, device=h.device)
        crow_t[1:] = counts.cumsum(0)
        St = torch.sparse_csr_tensor(crow_t, term_row[perm], g[perm], (uniq.numel(), R))
        W_out.index_add_(0, uniq, St @ h)
    return d_h, score


def sgns_dense_update(h, W_out, out_rows, weight, row_cap=None, pairs_per_row=None):
    """:func:`sgns_sparse_update` the direct way: gather u = W_out[out_rows] (P, 1+K, D), apply
    :func:`negative_sampling_grads`' formulas, scatter-add. Same arguments, same results; used on
    devices without sparse kernels, and as the reference the sparse version is tested against."""
    P, C1 = out_rows.shape
    flat = out_rows.reshape(-1)
    if pairs_per_row is None:
        owner, hp = None, h
    else:
        owner = torch.repeat_interleave(torch.arange(h.shape[0], device=h.device), pairs_per_row)
        hp = h.index_select(0, owner)                                          # (P, D)
    u = W_out.index_select(0, flat).view(P, C1, -1)                            # (P, 1+K, D)
    d_hp, d_u, score = _sgns_grads(hp, u, weight)
    d_u = d_u.reshape(-1, d_u.shape[-1])
    if row_cap is not None:
        d_u = d_u * _row_scale(flat, W_out.shape[0], row_cap, d_u.dtype)[:, None]
    W_out.index_add_(0, flat, d_u)
    d_h = d_hp if owner is None else torch.zeros_like(h).index_add_(0, owner, d_hp)
    return d_h, score


def _softmax_step(model, inputs, lr, in_rows, n_examples, row_cap):
    """One SGD step of the full-softmax loss (summed over the batch) via autograd.

    ``inputs`` are the arguments of ``model.softmax_loss``. ``row_cap`` as for negative sampling:
    every row of W' takes one update per example, and a row of W one per occurrence in ``in_rows``."""
    model.zero_grad(set_to_none=True)
    with torch.enable_grad():
        loss = model.softmax_loss(*inputs, reduction="sum")
        loss.backward()
    with torch.no_grad():
        W, W_out = model.embed_in.weight, model.embed_out.weight
        if row_cap is not None:
            W_out.grad.mul_(min(1.0, row_cap / n_examples))
            counts = torch.bincount(in_rows, minlength=W.shape[0]).to(W.dtype).clamp_(min=1)
            W.grad.mul_((row_cap / counts).clamp_(max=1.0)[:, None])
        W.add_(W.grad, alpha=-lr)
        W_out.add_(W_out.grad, alpha=-lr)
    return loss.detach().double()
