"""Image captioning with soft attention — "Show, Attend and Tell" (Xu et al. 2015), lecture unit 06.

A CNN turns the image into a grid of feature vectors ``a_1..a_L`` (one per location, L = h·w);
an LSTM writes the caption one word at a time. Before each word the decoder *looks* at the image:

    e_ti = w^T tanh(W_a a_i + W_h h_{t-1})         score of location i
    α_t  = softmax(e_t)                             attention map, sums to 1 over the grid
    z_t  = β_t · Σ_i α_ti a_i,  β_t = σ(W_β h_{t-1})   context vector (with Xu's gate β)
    h_t, c_t = LSTM([E y_{t-1}; z_t], (h_{t-1}, c_{t-1}))
    p(y_t | y_<t, image) = softmax(W_o [h_t; z_t])

Training uses teacher forcing (the true previous word is fed) and Xu's "doubly stochastic"
regulariser ``λ Σ_i (1 − Σ_t α_ti)^2``, which asks every location to be looked at about once over
the caption. Decoding is greedy or by beam search; both return the attention maps, which is what
makes the model inspectable: which part of the radiograph did it look at when it wrote "effusion"?

The recurrent cell is :class:`dlmi.rnn.LSTMCell` (Keras layout, unit 03).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..rnn import LSTMCell

__all__ = ["ConvEncoder", "SoftAttention", "CaptioningModel", "decode_ids"]


class ConvEncoder(nn.Module):
    """Small CNN: a stride-2 5×5 stem, then ``(conv 3×3 → BatchNorm → ReLU → max-pool 2)`` blocks.

    ``forward(images (B, C, H, W))`` -> ``(features (B, L, D), (h, w))`` with ``L = h·w`` locations
    (H / 2**len(channels) each way; 8×8 for a 64×64 image) and ``D = channels[-1]``.
    The stem keeps the CPU cost low: most of a small captioner's time is spent here.
    """

    def __init__(self, in_channels: int = 1, channels=(16, 32, 64)):
        super().__init__()
        channels = tuple(channels)
        if not channels:
            raise ValueError("channels must name at least one block")
        layers = [nn.Conv2d(in_channels, channels[0], 5, stride=2, padding=2, bias=False),
                  nn.BatchNorm2d(channels[0]), nn.ReLU(inplace=True)]
        c_in = channels[0]
        for c_out in channels[1:]:
            layers += [nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out),
                       nn.ReLU(inplace=True), nn.MaxPool2d(2)]
            c_in = c_out
        self.net = nn.Sequential(*layers)
        self.out_dim = c_in

    def forward(self, images):
        if images.ndim != 4:
            raise ValueError(f"images must be (batch, channels, height, width), got {tuple(images.shape)}")
        grid = self.net(images)
        b, d, h, w = grid.shape
        return grid.flatten(2).transpose(1, 2), (h, w)


class SoftAttention(nn.Module):
    """Additive (Bahdanau) attention over image locations: ``(context (B, D), alpha (B, L))``.

    Call :meth:`project` once per image (``W_a a_i`` does not change while decoding), then
    ``forward(features, projected, h)`` per step.
    """

    def __init__(self, feature_dim: int, hidden_dim: int, attention_dim: int):
        super().__init__()
        self.feature_proj = nn.Linear(feature_dim, attention_dim)
        self.hidden_proj = nn.Linear(hidden_dim, attention_dim, bias=False)
        self.score = nn.Linear(attention_dim, 1)

    def project(self, features):
        return self.feature_proj(features)

    def forward(self, features, projected, h):
        e = self.score(torch.tanh(projected + self.hidden_proj(h)[:, None])).squeeze(-1)
        alpha = e.softmax(dim=-1)
        return torch.einsum("bl,bld->bd", alpha, features), alpha


class CaptioningModel(nn.Module):
    """CNN encoder + LSTM decoder with soft attention (Xu et al. 2015).

    Parameters: ``vocab_size`` (ids from :class:`dlmi.text.Vocabulary`: pad 0, bos 1, eos 2),
    ``embed_dim``, ``hidden_dim``, ``attention_dim``, ``channels`` (encoder), ``dropout``,
    ``attention_reg`` (λ of the doubly stochastic regulariser; 0 turns it off).

    * ``model(images, tokens, lengths=None, tags=None)`` -> ``{"loss_words", "loss_attention"[,
      "loss_tags"]}`` — teacher forcing on ``tokens`` = ``<bos> w_1 .. w_n <eos> <pad>...``; what
      :func:`dlmi.train.fit` needs. With ``num_tags > 0`` and ``tags`` (B, num_tags) 0/1, an auxiliary
      multi-label head on the pooled image features is trained too (the tag classifier of Jing et
      al. 2018; the tags can come from running :mod:`dlmi.text.labeller` over the training reports,
      so no extra annotation is needed). It teaches the encoder what to look for much sooner than
      the word loss alone.
    * ``model.teacher_forced(images, tokens)`` -> ``(logits (B, T-1, V), alphas (B, T-1, L))``.
    * ``model.generate(images, max_len=60, beam_size=1)`` -> ``(ids, attention)``: a list of id
      lists (without bos/eos) and a list of ``(len, h, w)`` attention tensors.
    """

    def __init__(self, vocab_size: int, embed_dim: int = 64, hidden_dim: int = 128, attention_dim: int = 64,
                 channels=(16, 32, 64), in_channels: int = 1, dropout: float = 0.2, attention_reg: float = 1.0,
                 num_tags: int = 0, pad_id: int = 0, bos_id: int = 1, eos_id: int = 2):
        super().__init__()
        self.vocab_size, self.pad_id, self.bos_id, self.eos_id = vocab_size, pad_id, bos_id, eos_id
        self.attention_reg = attention_reg
        self.encoder = ConvEncoder(in_channels, channels)
        d = self.encoder.out_dim
        self.embed = nn.Embedding(vocab_size, embed_dim, padding_idx=pad_id)
        self.attention = SoftAttention(d, hidden_dim, attention_dim)
        self.gate = nn.Linear(hidden_dim, d)
        self.init_h = nn.Linear(2 * d, hidden_dim)
        self.init_c = nn.Linear(2 * d, hidden_dim)
        self.num_tags = num_tags
        self.tag_head = nn.Linear(2 * d, num_tags) if num_tags else None
        self.cell = LSTMCell(embed_dim + d, hidden_dim)
        self.drop = nn.Dropout(dropout)
        self.out = nn.Linear(hidden_dim + d, vocab_size)

    # -- pieces -----------------------------------------------------------------------------
    def encode(self, images):
        """``(features (B, L, D), projected (B, L, A), (h, w), initial state)``."""
        feats, hw = self.encoder(images)
        pooled = self.pool(feats)
        state = (torch.tanh(self.init_h(pooled)), torch.tanh(self.init_c(pooled)))
        return feats, self.attention.project(feats), hw, state

    @staticmethod
    def pool(feats):
        """Global summary of the grid: mean and max over locations, ``(B, 2D)``."""
        return torch.cat([feats.mean(1), feats.amax(1)], dim=-1)

    def predict_tags(self, images):
        """Finding probabilities ``(B, num_tags)`` from the auxiliary head (``num_tags > 0``)."""
        if self.tag_head is None:
            raise RuntimeError("this model has no tag head (num_tags=0)")
        return torch.sigmoid(self.tag_head(self.pool(self.encoder(images)[0])))

    def step(self, token_ids, state, feats, projected):
        """One decoding step: ``(logits (B, V), new state, alpha (B, L))``."""
        h, c = state
        context, alpha = self.attention(feats, projected, h)
        context = torch.sigmoid(self.gate(h)) * context
        h, c = self.cell(torch.cat([self.embed(token_ids), context], dim=-1), (h, c))
        logits = self.out(self.drop(torch.cat([h, context], dim=-1)))
        return logits, (h, c), alpha

    def teacher_forced(self, images, tokens):
        feats, projected, _, state = self.encode(images)
        logits, alphas = [], []
        for t in range(tokens.shape[1] - 1):
            out, state, alpha = self.step(tokens[:, t], state, feats, projected)
            logits.append(out)
            alphas.append(alpha)
        return torch.stack(logits, 1), torch.stack(alphas, 1)

    def forward(self, images, tokens, lengths=None, tags=None):
        if tokens.ndim != 2 or tokens.shape[1] < 2:
            raise ValueError(f"tokens must be (batch, time >= 2) with <bos> ... <eos>, got {tuple(tokens.shape)}")
        feats, projected, _, state = self.encode(images)
        logits, alphas = [], []
        for t in range(tokens.shape[1] - 1):
            out, state, alpha = self.step(tokens[:, t], state, feats, projected)
            logits.append(out)
            alphas.append(alpha)
        logits, alphas = torch.stack(logits, 1), torch.stack(alphas, 1)
        target = tokens[:, 1:]
        mask = target != self.pad_id
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), target.reshape(-1),
                               ignore_index=self.pad_id)
        out = {"loss_words": loss}
        if self.attention_reg:
            coverage = (alphas * mask[..., None]).sum(1)                     # (B, L): Σ_t α_ti
            # Xu et al. ask Σ_t α_ti ≈ 1 with T ≈ L; with T ≠ L the natural target is T / L
            goal = mask.sum(1, keepdim=True).float() / alphas.shape[-1]
            out["loss_attention"] = self.attention_reg * ((goal - coverage) ** 2).mean() / goal.mean().clamp_min(1e-6)
        if tags is not None:
            if self.tag_head is None:
                raise ValueError("tags were given but the model has no tag head (num_tags=0)")
            out["loss_tags"] = F.binary_cross_entropy_with_logits(self.tag_head(self.pool(feats)), tags.float())
        return out

    # -- decoding ---------------------------------------------------------------------------
    @torch.no_grad()
    def generate(self, images, max_len: int = 60, beam_size: int = 1, length_penalty: float = 0.0):
        """Decode captions: greedy (``beam_size=1``, batched) or beam search (per image).

        Returns ``(ids, attention)``: ``ids[b]`` is the list of generated token ids (no bos/eos),
        ``attention[b]`` a ``(len(ids[b]) + 1, h, w)`` tensor (the last map is the ``<eos>`` step).
        Beam hypotheses are ranked by ``log p / len**length_penalty``.
        """
        was_training = self.training
        self.eval()
        try:
            if beam_size <= 1:
                return self._greedy(images, max_len)
            ids, att = [], []
            for b in range(images.shape[0]):
                i, a = self._beam(images[b:b + 1], max_len, beam_size, length_penalty)
                ids.append(i)
                att.append(a)
            return ids, att
        finally:
            self.train(was_training)

    def _greedy(self, images, max_len):
        feats, projected, (gh, gw), state = self.encode(images)
        B = images.shape[0]
        token = torch.full((B,), self.bos_id, dtype=torch.long, device=images.device)
        done = torch.zeros(B, dtype=torch.bool, device=images.device)
        tokens, alphas = [], []
        for _ in range(max_len):
            logits, state, alpha = self.step(token, state, feats, projected)
            token = logits.argmax(-1)
            tokens.append(token)
            alphas.append(alpha)
            done |= token == self.eos_id
            if bool(done.all()):
                break
        tokens = torch.stack(tokens, 1).tolist()
        alphas = torch.stack(alphas, 1).reshape(B, -1, gh, gw).cpu()
        ids, att = [], []
        for b in range(B):
            row = tokens[b]
            n = row.index(self.eos_id) if self.eos_id in row else len(row)
            ids.append(row[:n])
            att.append(alphas[b, : n + 1])
        return ids, att

    def _beam(self, image, max_len, k, length_penalty):
        feats, projected, (gh, gw), (h, c) = self.encode(image)
        device = image.device
        beams = [([], 0.0, [], (h, c))]       # (ids, log p, alphas, state)
        finished = []
        for _ in range(max_len):
            n = len(beams)
            tok = torch.tensor([b[0][-1] if b[0] else self.bos_id for b in beams], device=device)
            hs = torch.cat([b[3][0] for b in beams]); cs = torch.cat([b[3][1] for b in beams])
            logits, (h2, c2), alpha = self.step(tok, (hs, cs), feats.expand(n, -1, -1), projected.expand(n, -1, -1))
            logp = logits.log_softmax(-1)
            scores = torch.tensor([b[1] for b in beams], device=device)[:, None] + logp
            top = scores.flatten().topk(min(k, scores.numel()))
            new = []
            for score, flat in zip(top.values.tolist(), top.indices.tolist()):
                i, w = divmod(flat, logp.shape[1])
                ids, _, al, _ = beams[i]
                entry = (ids + [w], score, al + [alpha[i]], (h2[i:i + 1], c2[i:i + 1]))
                if w == self.eos_id:
                    finished.append(entry)
                else:
                    new.append(entry)
            beams = new
            if not beams or (len(finished) >= k and max(_norm(f, length_penalty) for f in finished)
                             >= max(_norm(b, length_penalty) for b in beams)):
                break
        pool = finished or beams
        best = max(pool, key=lambda e: _norm(e, length_penalty))
        ids = best[0][:-1] if best[0] and best[0][-1] == self.eos_id else best[0]
        return ids, torch.stack(best[2]).reshape(-1, gh, gw).cpu()


def _norm(entry, length_penalty):
    return entry[1] / max(len(entry[0]), 1) ** length_penalty


def decode_ids(vocab, ids) -> list[str]:
    """Texts of a list of id lists (as returned by ``generate``) with a :class:`dlmi.text.Vocabulary`."""
    return [vocab.decode(row) for row in ids]
