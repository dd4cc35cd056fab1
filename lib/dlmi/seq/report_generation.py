"""Hierarchical radiology report generation — Liu et al. 2019, lecture unit 06.

A radiology report is not one long caption but a *paragraph*: a few sentences, each about one
topic (heart, lungs, pleura, impression). Krause et al. (2017) wrote paragraphs with two RNNs, and
Jing et al. (2018) and Liu et al. (2019, "Clinically Accurate Chest X-Ray Report Generation")
generate radiology reports the same way:

    feats a_1..a_L = CNN(image)                                  (the 2-D image embedding, L = h·w)

    sentence LSTM, one step per sentence s = 1..S:
        z_s, α_s  = attend(a, h_{s-1})                            where the sentence looks
        h_s       = LSTM(z_s, h_{s-1})
        τ_s       = W_τ h_s                                        topic vector of sentence s
        p_s       = σ(w^T tanh(W_p h_{s-1} + W_c h_s))              P(STOP after sentence s)

    word LSTM, for each sentence from its topic (state initialised from τ_s):
        z_t, α_t  = β_t · attend(a, g_{t-1})                       soft attention (Xu et al. 2015)
        g_t       = LSTM([E y_{t-1}; z_t; τ_s], g_{t-1})
        p(y_t | y_<t, τ_s, image) = softmax(W_o [g_t; z_t])

Training is teacher forcing on the true sentences: the word cross-entropy over the real tokens of
the real sentences (padding masked) plus λ times the binary cross-entropy of the stop
probabilities against CONTINUE (0) for every sentence but the last and STOP (1) for the last
(Krause 2017, eq. 2). Decoding writes a sentence, then stops when ``p_s > 0.5`` or after
``max_sentences``. Liu et al. fine-tune further with reinforcement learning on CIDEr and a
clinical-accuracy reward; that stage is not part of this module.

The encoder (:class:`~dlmi.seq.captioning.ConvEncoder`), both attention modules
(:class:`~dlmi.seq.captioning.SoftAttention`) and the beam search are the captioning model's;
the cells are :class:`dlmi.rnn.LSTMCell`. Like Krause's model, the sentence LSTM does not read the
words it wrote: the topics depend on the image only, so every sentence of a batch is decoded in
parallel during training (``S + T`` sequential steps instead of ``S·T``).

Reports go in as a ``(batch, max_sentences, max_words)`` id tensor (``<bos> w_1 .. w_n <eos>``
per sentence, anything after the first ``<eos>`` and every sentence past ``num_sentences[b]`` is
padding) plus ``num_sentences`` — :func:`encode_reports` builds both from report texts with a
:class:`dlmi.text.Vocabulary`.

The lecture's checkpoints (this model and the captioning model on the chest phantoms) are made by
``python -m dlmi.seq.report_generation --out DIR``; :func:`load_pretrained` reads them.
"""
from __future__ import annotations

import argparse
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ..rnn import LSTMCell
from .captioning import CaptioningModel, ConvEncoder, SoftAttention

__all__ = ["HierarchicalReportGenerator", "GeneratedReport", "encode_reports", "stop_targets",
           "CONFIG", "MODELS", "CHECKPOINTS", "lecture_data", "finding_tags", "build", "make_loader",
           "train_model", "evaluate_model", "load_pretrained"]


# ----------------------------------------------------------------------------------------------
# Reports as sentences
# ----------------------------------------------------------------------------------------------

def encode_reports(reports, vocab, max_sentences: int | None = None, max_words: int | None = None,
                   device=None):
    """Pad reports into the hierarchical model's input.

    ``reports`` is a list whose entries are either a report string (split into sentences after
    ``.``/``?``/``!`` by ``vocab.tokenizer.sentences``) or a list of sentences (each a string or a
    list of tokens). Each sentence becomes ``<bos> w_1 .. w_n <eos>`` (the sentence end ``.`` is a
    word, so the decoded text keeps its full stops).

    Returns ``(tokens, num_sentences)``: a ``torch.long`` tensor ``(batch, S, T)`` padded with
    ``<pad>`` (``S = max_sentences`` or the most sentences of a report; ``T = max_words + 2`` or the
    longest sentence + 2) and a ``torch.long`` tensor ``(batch,)`` of sentence counts.
    An empty report, more than ``max_sentences`` sentences or a sentence of more than ``max_words``
    words is a ValueError (cutting a report would silently teach the model to stop too early).
    """
    if isinstance(reports, str):
        raise TypeError("encode_reports takes a list of reports, not one string")
    reports = list(reports)
    if not reports:
        raise ValueError("encode_reports got no reports")
    for name, value in (("max_sentences", max_sentences), ("max_words", max_words)):
        if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
            raise ValueError(f"{name} must be a positive integer or None, got {value!r}")
    encoded = []
    for i, report in enumerate(reports):
        if isinstance(report, str):
            sentences = vocab.tokenizer.sentences(report)
        elif isinstance(report, (list, tuple)):
            sentences = [vocab.tokenizer(s) if isinstance(s, str) else list(s) for s in report]
            sentences = [s for s in sentences if s]
        else:
            raise TypeError(f"report {i} must be a string or a list of sentences, got {type(report).__name__}")
        if not sentences:
            raise ValueError(f"report {i} is empty: a report needs at least one sentence")
        if max_sentences is not None and len(sentences) > max_sentences:
            raise ValueError(f"report {i} has {len(sentences)} sentences, more than max_sentences={max_sentences}")
        rows = [vocab.encode(s) for s in sentences]
        longest = max(len(r) - 2 for r in rows)
        if max_words is not None and longest > max_words:
            raise ValueError(f"report {i} has a sentence of {longest} words, more than max_words={max_words}")
        encoded.append(rows)
    S = max_sentences or max(len(rows) for rows in encoded)
    T = max_words + 2 if max_words is not None else max(len(r) for rows in encoded for r in rows)
    tokens = torch.full((len(encoded), S, T), vocab.pad_id, dtype=torch.long)
    for b, rows in enumerate(encoded):
        for s, row in enumerate(rows):
            tokens[b, s, :len(row)] = torch.tensor(row, dtype=torch.long)
    num_sentences = torch.tensor([len(rows) for rows in encoded], dtype=torch.long)
    if device is not None:
        tokens, num_sentences = tokens.to(device), num_sentences.to(device)
    return tokens, num_sentences


def stop_targets(num_sentences, max_sentences: int):
    """``(targets (B, S) float, valid (B, S) bool)``: 1 = STOP after sentence s (the last one),
    0 = CONTINUE; ``valid`` marks the sentences that exist (Krause et al. 2017)."""
    steps = torch.arange(max_sentences, device=num_sentences.device)
    n = num_sentences[:, None]
    return (steps == n - 1).float(), steps < n


# ----------------------------------------------------------------------------------------------
# The model
# ----------------------------------------------------------------------------------------------

@dataclass
class GeneratedReport:
    """One decoded report.

    ``sentences``: token ids of each sentence (without ``<bos>``/``<eos>``);
    ``stop_probs``: P(STOP) after each sentence; ``sentence_attention``: ``(S, h, w)``, where each
    sentence step looked; ``word_attention``: per sentence a ``(len + 1, h, w)`` tensor (the last
    map is the ``<eos>`` step); ``text``: the report (when ``generate`` was given a vocabulary).
    """

    sentences: list
    stop_probs: list
    sentence_attention: torch.Tensor
    word_attention: list = field(default_factory=list)
    text: str | None = None

    @property
    def ids(self) -> list[int]:
        """All token ids, sentence after sentence."""
        return [i for sentence in self.sentences for i in sentence]

    def __len__(self) -> int:
        return len(self.sentences)


class HierarchicalReportGenerator(nn.Module):
    """CNN encoder + sentence LSTM (topic, stop) + word LSTM with soft attention (Liu et al. 2019).

    Parameters: ``vocab_size`` (ids of :class:`dlmi.text.Vocabulary`: pad 0, bos 1, eos 2);
    ``embed_dim``, ``hidden_dim`` (word LSTM), ``sentence_dim`` (sentence LSTM), ``topic_dim``,
    ``attention_dim``, ``channels`` and ``in_channels`` (the :class:`ConvEncoder`), ``dropout``
    (before the word classifier), ``stop_weight`` (λ of the stop loss), ``num_tags`` (optional
    multi-label finding head on the pooled image features, Jing et al. 2018 — as in
    :class:`~dlmi.seq.captioning.CaptioningModel`).

    * ``model(images (B, C, H, W), tokens (B, S, T), num_sentences (B,), tags=None)`` ->
      ``{"loss_words", "loss_stop"[, "loss_tags"]}`` (``loss_stop`` already times λ; the sum is the
      training loss, what :func:`dlmi.train.fit` minimises).
    * ``model.teacher_forced(images, tokens, num_sentences)`` -> dict of ``word_logits``
      (B, S, T-1, V), ``stop_logits`` (B, S), ``topics`` (B, S, topic_dim), ``sentence_alpha``
      (B, S, L), ``word_alpha`` (B, S, T-1, L) — zeros where a sentence does not exist — and the
      encoder's ``features`` (B, L, D).
    * ``model.generate(images, vocab=None, max_sentences=6, max_words=20, beam_size=1)`` -> a list
      of :class:`GeneratedReport`.
    * Pieces for step-by-step use: :meth:`encode`, :meth:`sentence_step`, :meth:`word_state`,
      :meth:`word_step`.
    """

    def __init__(self, vocab_size: int, embed_dim: int = 64, hidden_dim: int = 128, sentence_dim: int = 128,
                 topic_dim: int = 64, attention_dim: int = 64, channels=(16, 32, 64), in_channels: int = 1,
                 dropout: float = 0.2, stop_weight: float = 1.0, num_tags: int = 0,
                 pad_id: int = 0, bos_id: int = 1, eos_id: int = 2):
        super().__init__()
        if not isinstance(vocab_size, int) or vocab_size <= max(pad_id, bos_id, eos_id):
            raise ValueError(f"vocab_size must be an int > the special ids, got {vocab_size!r}")
        self.vocab_size, self.pad_id, self.bos_id, self.eos_id = vocab_size, pad_id, bos_id, eos_id
        self.stop_weight = float(stop_weight)
        self.encoder = ConvEncoder(in_channels, channels)
        d = self.encoder.out_dim
        # sentence level: where to look for the next sentence, its topic and whether to stop
        self.sentence_attention = SoftAttention(d, sentence_dim, attention_dim)
        self.sentence_init = nn.Linear(2 * d, 2 * sentence_dim)
        self.sentence_cell = LSTMCell(d, sentence_dim)
        self.topic = nn.Linear(sentence_dim, topic_dim)
        self.stop_prev = nn.Linear(sentence_dim, attention_dim, bias=False)
        self.stop_cur = nn.Linear(sentence_dim, attention_dim)
        self.stop_out = nn.Linear(attention_dim, 1)
        # word level: Show-Attend-Tell conditioned on the topic
        self.embed = nn.Embedding(vocab_size, embed_dim, padding_idx=pad_id)
        self.word_attention = SoftAttention(d, hidden_dim, attention_dim)
        self.gate = nn.Linear(hidden_dim, d)
        self.word_init = nn.Linear(topic_dim, 2 * hidden_dim)
        # the topic is fed at every step, not only as the initial state: a 10-word sentence
        # should not forget what it is about
        self.word_cell = LSTMCell(embed_dim + d + topic_dim, hidden_dim)
        self.drop = nn.Dropout(dropout)
        self.out = nn.Linear(hidden_dim + d, vocab_size)
        self.num_tags = num_tags
        self.tag_head = nn.Linear(2 * d, num_tags) if num_tags else None

    # -- pieces -----------------------------------------------------------------------------
    def encode(self, images):
        """``(features (B, L, D), (h, w), sentence-attention projection (B, L, A),
        word-attention projection (B, L, A), initial sentence state ((B, sentence_dim) × 2))``."""
        feats, hw = self.encoder(images)
        h, c = torch.tanh(self.sentence_init(CaptioningModel.pool(feats))).chunk(2, dim=-1)
        return feats, hw, self.sentence_attention.project(feats), self.word_attention.project(feats), (h, c)

    def sentence_step(self, state, feats, projected):
        """One sentence step: ``(topic (B, topic_dim), stop logit (B,), new state, alpha (B, L))``."""
        h_prev, c = state
        context, alpha = self.sentence_attention(feats, projected, h_prev)
        h, c = self.sentence_cell(context, (h_prev, c))
        stop = self.stop_out(torch.tanh(self.stop_prev(h_prev) + self.stop_cur(h))).squeeze(-1)
        return self.topic(h), stop, (h, c), alpha

    def word_state(self, topic):
        """Initial word-LSTM state ``(h, c)`` of a sentence from its topic."""
        h, c = torch.tanh(self.word_init(topic)).chunk(2, dim=-1)
        return h, c

    def word_step(self, token_ids, state, topic, feats, projected):
        """One word step: ``(logits (N, V), new state, alpha (N, L))``."""
        h, c = state
        context, alpha = self.word_attention(feats, projected, h)
        context = torch.sigmoid(self.gate(h)) * context            # Xu's gate β_t
        h, c = self.word_cell(torch.cat([self.embed(token_ids), context, topic], dim=-1), (h, c))
        logits = self.out(self.drop(torch.cat([h, context], dim=-1)))
        return logits, (h, c), alpha

    def predict_tags(self, images):
        """Finding probabilities ``(B, num_tags)`` from the auxiliary head (``num_tags > 0``)."""
        if self.tag_head is None:
            raise RuntimeError("this model has no tag head (num_tags=0)")
        return torch.sigmoid(self.tag_head(CaptioningModel.pool(self.encoder(images)[0])))

    # -- training ---------------------------------------------------------------------------
    def _check(self, images, tokens, num_sentences):
        if not isinstance(images, torch.Tensor) or images.ndim != 4:
            shape = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
            raise ValueError(f"images must be a (batch, channels, height, width) tensor, got {shape}")
        if not isinstance(tokens, torch.Tensor) or tokens.ndim != 3:
            shape = tuple(tokens.shape) if isinstance(tokens, torch.Tensor) else type(tokens).__name__
            raise ValueError("tokens must be a (batch, max_sentences, max_words) id tensor "
                             f"(see encode_reports), got {shape}")
        if tokens.dtype != torch.long:
            raise TypeError(f"tokens must be torch.long ids, got {tokens.dtype}")
        B, S, T = tokens.shape
        if T < 2:
            raise ValueError(f"each sentence needs <bos> ... <eos>: max_words must be >= 2, got {T}")
        if not isinstance(num_sentences, torch.Tensor) or num_sentences.shape != (B,) \
                or num_sentences.dtype.is_floating_point or num_sentences.dtype == torch.bool:
            shape = tuple(num_sentences.shape) if isinstance(num_sentences, torch.Tensor) else type(num_sentences).__name__
            raise ValueError(f"num_sentences must be an integer tensor of shape ({B},), got {shape}")
        if images.shape[0] != B:
            raise ValueError(f"{images.shape[0]} images but {B} reports")
        n = num_sentences.to(tokens.device).long()
        if bool((n < 1).any()):
            raise ValueError(f"empty report: num_sentences must be >= 1, got {n.tolist()}")
        if bool((n > S).any()):
            raise ValueError(f"num_sentences {n.tolist()} exceeds the {S} sentence slots of tokens")
        if bool(((tokens < 0) | (tokens >= self.vocab_size)).any()):
            raise ValueError(f"token ids must lie in [0, {self.vocab_size})")
        return n

    def _word_mask(self, tokens, valid):
        """Targets that count: up to and including the first ``<eos>`` of each real sentence."""
        target = tokens[..., 1:]
        is_eos = target == self.eos_id
        has_eos = is_eos.any(-1)
        missing = valid & ~has_eos
        if bool(missing.any()):
            b, s = missing.nonzero()[0].tolist()
            raise ValueError(f"sentence {s} of report {b} has no <eos>: every sentence must be <bos> ... <eos>")
        first_eos = is_eos.float().argmax(-1)                                   # (B, S)
        steps = torch.arange(target.shape[-1], device=tokens.device)
        return (steps <= first_eos[..., None]) & valid[..., None]              # (B, S, T-1)

    def teacher_forced(self, images, tokens, num_sentences):
        """Every sentence and word step with the true previous words (see the class docstring)."""
        n = self._check(images, tokens, num_sentences)
        return self._teacher_forced(images, tokens, n)

    def _teacher_forced(self, images, tokens, n):
        B, S, T = tokens.shape
        feats, _, proj_s, proj_w, state = self.encode(images)
        topics, stops, s_alphas = [], [], []
        for _ in range(S):
            topic, stop, state, alpha = self.sentence_step(state, feats, proj_s)
            topics.append(topic)
            stops.append(stop)
            s_alphas.append(alpha)
        topics, stops, s_alphas = torch.stack(topics, 1), torch.stack(stops, 1), torch.stack(s_alphas, 1)
        _, valid = stop_targets(n, S)
        # every real sentence of the batch is one row of the word decoder
        b_idx, s_idx = valid.nonzero(as_tuple=True)
        words = tokens[b_idx, s_idx]                                             # (N, T)
        topic = topics[b_idx, s_idx]
        w_feats, w_proj = feats[b_idx], proj_w[b_idx]
        w_state = self.word_state(topic)
        logits, w_alphas = [], []
        for t in range(T - 1):
            out, w_state, alpha = self.word_step(words[:, t], w_state, topic, w_feats, w_proj)
            logits.append(out)
            w_alphas.append(alpha)
        L = feats.shape[1]
        word_logits = feats.new_zeros(B, S, T - 1, self.vocab_size)
        word_alpha = feats.new_zeros(B, S, T - 1, L)
        word_logits[b_idx, s_idx] = torch.stack(logits, 1)
        word_alpha[b_idx, s_idx] = torch.stack(w_alphas, 1)
        valid_f = valid.to(feats.dtype)
        return {"word_logits": word_logits, "stop_logits": stops * valid_f,
                "topics": topics * valid_f[..., None], "sentence_alpha": s_alphas * valid_f[..., None],
                "word_alpha": word_alpha, "features": feats}

    def forward(self, images, tokens, num_sentences, tags=None):
        n = self._check(images, tokens, num_sentences)
        out = self._teacher_forced(images, tokens, n)
        stop_target, valid = stop_targets(n, tokens.shape[1])
        mask = self._word_mask(tokens, valid)
        logits = out["word_logits"][mask]                                       # (tokens, V)
        target = tokens[..., 1:][mask]
        losses = {"loss_words": F.cross_entropy(logits, target),
                  "loss_stop": self.stop_weight * F.binary_cross_entropy_with_logits(
                      out["stop_logits"][valid], stop_target[valid])}
        if tags is not None:
            if self.tag_head is None:
                raise ValueError("tags were given but the model has no tag head (num_tags=0)")
            if tags.shape != (tokens.shape[0], self.num_tags):
                raise ValueError(f"tags must be (batch, {self.num_tags}) 0/1, got {tuple(tags.shape)}")
            losses["loss_tags"] = F.binary_cross_entropy_with_logits(
                self.tag_head(CaptioningModel.pool(out["features"])), tags.float())
        return losses

    # -- decoding ---------------------------------------------------------------------------
    @torch.no_grad()
    def generate(self, images, vocab=None, max_sentences: int = 6, max_words: int = 20, beam_size: int = 1,
                 stop_threshold: float = 0.5, length_penalty: float = 0.0) -> list[GeneratedReport]:
        """Write a report per image: sentence after sentence until ``P(STOP) > stop_threshold``
        or ``max_sentences``; each sentence greedy (``beam_size=1``, batched) or by beam search
        (per image and sentence, :meth:`CaptioningModel.generate`'s beam with its
        ``length_penalty``). ``max_words`` counts the words of a sentence, ``<eos>`` included.

        Returns one :class:`GeneratedReport` per image (``text`` filled in when ``vocab`` is given).
        """
        if not isinstance(images, torch.Tensor) or images.ndim != 4:
            raise ValueError("images must be a (batch, channels, height, width) tensor")
        for name, value in (("max_sentences", max_sentences), ("max_words", max_words), ("beam_size", beam_size)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        was_training = self.training
        self.eval()
        try:
            feats, (gh, gw), proj_s, proj_w, state = self.encode(images)
            B = images.shape[0]
            reports = [GeneratedReport([], [], []) for _ in range(B)]
            active = torch.arange(B, device=images.device)       # reports still being written
            for _ in range(max_sentences):
                f, ps, pw = feats[active], proj_s[active], proj_w[active]
                topic, stop, state, s_alpha = self.sentence_step(state, f, ps)
                if beam_size == 1:
                    ids, w_alpha = self._greedy_words(topic, f, pw, max_words)
                else:
                    ids, w_alpha = [], []
                    for k in range(len(active)):
                        view = _SentenceView(self, topic[k:k + 1], f[k:k + 1], pw[k:k + 1], (gh, gw))
                        i, a = CaptioningModel._beam(view, images[:1], max_words, beam_size, length_penalty)
                        ids.append(i)
                        w_alpha.append(a.reshape(-1, gh * gw))
                p_stop = torch.sigmoid(stop).tolist()
                for k, b in enumerate(active.tolist()):
                    r = reports[b]
                    r.sentences.append(ids[k])
                    r.stop_probs.append(p_stop[k])
                    r.sentence_attention.append(s_alpha[k].reshape(gh, gw).cpu())
                    r.word_attention.append(w_alpha[k].reshape(-1, gh, gw).cpu())
                keep = torch.tensor([p <= stop_threshold for p in p_stop], device=images.device)
                active = active[keep]
                state = (state[0][keep], state[1][keep])
                if len(active) == 0:
                    break
            for r in reports:
                r.sentence_attention = torch.stack(r.sentence_attention)
                if vocab is not None:
                    r.text = vocab.decode(r.ids)
            return reports
        finally:
            self.train(was_training)

    def _greedy_words(self, topic, feats, projected, max_words):
        N = topic.shape[0]
        token = torch.full((N,), self.bos_id, dtype=torch.long, device=topic.device)
        state = self.word_state(topic)
        done = torch.zeros(N, dtype=torch.bool, device=topic.device)
        tokens, alphas = [], []
        for _ in range(max_words):
            logits, state, alpha = self.word_step(token, state, topic, feats, projected)
            token = logits.argmax(-1)
            tokens.append(token)
            alphas.append(alpha)
            done |= token == self.eos_id
            if bool(done.all()):
                break
        tokens, alphas = torch.stack(tokens, 1).tolist(), torch.stack(alphas, 1)
        ids, att = [], []
        for k, row in enumerate(tokens):
            n = row.index(self.eos_id) if self.eos_id in row else len(row)
            ids.append(row[:n])
            att.append(alphas[k, : n + 1])
        return ids, att


class _SentenceView:
    """One sentence's word decoder seen through :class:`CaptioningModel`'s ``encode``/``step``
    interface, so that the captioning model's beam search (one implementation) decodes it."""

    def __init__(self, model, topic, feats, projected, hw):
        self.model, self.topic, self.feats, self.projected, self.hw = model, topic, feats, projected, hw
        self.bos_id, self.eos_id = model.bos_id, model.eos_id

    def encode(self, _):
        return self.feats, self.projected, self.hw, self.model.word_state(self.topic)

    def step(self, token_ids, state, feats, projected):
        return self.model.word_step(token_ids, state, self.topic.expand(len(token_ids), -1), feats, projected)


# ----------------------------------------------------------------------------------------------
# The lecture's checkpoints
# ----------------------------------------------------------------------------------------------

CHECKPOINTS = Path(__file__).with_name("checkpoints")

#: Everything the lecture checkpoints depend on: data, model sizes, optimiser, epochs, seeds.
#: The captioning settings are the lecture's (unit 06, section 4), trained for more epochs.
CONFIG = {
    "data": {"n_train": 1200, "n_test": 200, "size": 64, "train_seed": 0, "test_seed": 1},
    "captioning": {
        "model": {"embed_dim": 48, "hidden_dim": 128, "attention_dim": 48},
        "train": {"epochs": 24, "batch_size": 32, "lr": 3e-3, "clip_grad_norm": 5.0, "seed": 0},
    },
    "hierarchical": {
        "model": {"embed_dim": 48, "hidden_dim": 128, "sentence_dim": 96, "topic_dim": 48, "attention_dim": 48},
        "train": {"epochs": 24, "batch_size": 32, "lr": 3e-3, "clip_grad_norm": 5.0, "seed": 0},
    },
}
MODELS = ("captioning", "hierarchical")


def lecture_data():
    """The lecture's phantom corpus: ``(train_set, test_set)`` :class:`~dlmi.data.cxr.CXRReportDataset`
    (the test set uses the training set's sentence bank)."""
    from ..data.cxr import CXRReportDataset

    d = CONFIG["data"]
    train = CXRReportDataset(d["n_train"], size=d["size"], seed=d["train_seed"])
    test = CXRReportDataset(d["n_test"], size=d["size"], seed=d["test_seed"], bank=train.bank)
    return train, test


def finding_tags(reports):
    """``(N, 5)`` float 0/1 tags over :data:`~dlmi.data.cxr.CXR_FINDINGS` read from report texts by
    :func:`dlmi.text.findings_of` — the auxiliary targets of both models (no extra annotation)."""
    from ..data.cxr import CXR_FINDINGS
    from ..text import findings_of

    return torch.tensor([[float(f in findings_of(r)) for f in CXR_FINDINGS] for r in reports])


def build(name: str, vocab_size: int, seed: int = 0) -> nn.Module:
    """A fresh lecture model: ``"captioning"`` (:class:`CaptioningModel`) or ``"hierarchical"``
    (:class:`HierarchicalReportGenerator`), both with the 5-finding tag head."""
    if name not in MODELS:
        raise ValueError(f"name must be one of {MODELS}, got {name!r}")
    from ..data.cxr import CXR_FINDINGS

    torch.manual_seed(seed)
    cls = CaptioningModel if name == "captioning" else HierarchicalReportGenerator
    return cls(vocab_size, num_tags=len(CXR_FINDINGS), **CONFIG[name]["model"])


def make_loader(name: str, dataset, vocab, batch_size: int = 32, seed: int = 0):
    """Shuffled mini-batches for :func:`dlmi.train.fit`: ``(images, ids, lengths, tags)`` for the
    captioning model, ``(images, tokens, num_sentences, tags)`` for the hierarchical one."""
    if name == "captioning":
        words = vocab.encode_batch(dataset.reports)
    else:
        words = encode_reports(dataset.reports, vocab)
    data = torch.utils.data.TensorDataset(dataset.images, *words, finding_tags(dataset.reports))
    return torch.utils.data.DataLoader(data, batch_size=batch_size, shuffle=True,
                                       generator=torch.Generator().manual_seed(seed))


def train_model(name: str, dataset, vocab, epochs: int | None = None, device=None, log=None, progress=False,
                eval_set=None):
    """Train a fresh lecture model on ``dataset`` with :data:`CONFIG`'s settings (``epochs`` overrides);
    returns ``(model, history)``.

    With ``eval_set``, the clinical scores of greedy reports on it are recorded after every epoch in
    ``history.val`` (``"clinical_f1"`` and ``"f1_<finding>"``); they are only watched, never used to
    choose anything (the result is the model after the last epoch).
    """
    from ..train import History, fit

    cfg = CONFIG[name]["train"]
    model = build(name, len(vocab), seed=cfg["seed"])
    loader = make_loader(name, dataset, vocab, cfg["batch_size"], cfg["seed"])
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg["lr"])
    history, start = History(), time.perf_counter()
    for epoch in range(epochs or cfg["epochs"]):
        history = fit(model, loader, epochs=1, optimizer=optimizer, clip_grad_norm=cfg["clip_grad_norm"],
                      device=device, progress=progress, history=history)
        message = f"{name} epoch {epoch + 1}: loss {history.last():.4f}"
        if eval_set is not None:
            scores = evaluate_model(name, model, vocab, eval_set)
            history._append("val", {"clinical_f1": scores["f1"],
                                    **{f"f1_{k}": v["f1"] for k, v in scores["per_label"].items()}})
            message += f", clinical F1 {scores['f1']:.3f}"
        if log:
            log(f"{message} ({time.perf_counter() - start:.0f} s)")
    return model.eval(), history


def load_pretrained(name: str, map_location="cpu", with_history: bool = False):
    """The lecture's trained model ``name`` and its vocabulary: ``(model in eval mode, Vocabulary)``,
    plus the checkpoint's training :class:`~dlmi.train.History` with ``with_history=True``."""
    from ..text import Vocabulary
    from ..train import History

    path = CHECKPOINTS / f"{name}.pt"
    if name not in MODELS:
        raise ValueError(f"name must be one of {MODELS}, got {name!r}")
    if not path.exists():
        raise FileNotFoundError(f"no checkpoint {path}; make it with python -m dlmi.seq.report_generation")
    saved = torch.load(path, map_location=map_location, weights_only=True)
    vocab = Vocabulary.from_dict(saved["vocab"])
    model = build(name, len(vocab))
    model.load_state_dict(saved["state_dict"])
    model = model.to(map_location).eval()
    if with_history:
        saved_history = saved.get("history", {})
        return model, vocab, History(train={k: list(v) for k, v in saved_history.get("train", {}).items()},
                                     val={k: list(v) for k, v in saved_history.get("val", {}).items()})
    return model, vocab


def evaluate_model(name: str, model, vocab, test_set) -> dict:
    """Greedy reports on ``test_set`` and their clinical scores (:func:`dlmi.text.clinical_scores`)."""
    from ..data.cxr import CXR_FINDINGS
    from ..text import clinical_scores

    images = test_set.images.to(next(model.parameters()).device)
    if name == "captioning":
        texts = [vocab.decode(ids) for ids in model.generate(images, max_len=45)[0]]
    else:
        texts = [r.text for r in model.generate(images, vocab)]
    return clinical_scores(texts, test_set.reports, findings=CXR_FINDINGS)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description="train the unit 06 report generators and save checkpoints")
    parser.add_argument("--out", type=Path, default=CHECKPOINTS)
    parser.add_argument("--only", default=",".join(MODELS))
    parser.add_argument("--epochs", type=int, default=None, help="override CONFIG's epochs")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)  # tiny models: one thread is faster than several on a shared CPU
    from ..text import Vocabulary

    train, test = lecture_data()
    vocab = Vocabulary.build(train.reports)
    args.out.mkdir(parents=True, exist_ok=True)
    for name in args.only.split(","):
        model, history = train_model(name, train, vocab, epochs=args.epochs, device="cpu",
                                     log=lambda m: print(m, flush=True), eval_set=test)
        torch.save({"config": CONFIG[name], "vocab": vocab.to_dict(),
                    "history": {"train": history.train, "val": history.val},
                    "state_dict": {k: v.detach().clone() for k, v in model.state_dict().items()}},
                   args.out / f"{name}.pt")
        scores = evaluate_model(name, model, vocab, test)
        per = ", ".join(f"{k} {v['f1']:.2f}" for k, v in scores["per_label"].items())
        print(f"{name}: clinical F1 {scores['f1']:.3f} (macro {scores['macro_f1']:.3f}; {per})", flush=True)


if __name__ == "__main__":
    main()
