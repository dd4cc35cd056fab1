"""One-to-many and sequence-to-sequence models (lecture unit 02): generating a variable-length output.

:class:`AutoregressiveDecoder` models ``P(y) = Π_t P(y_t | y_<t, context)`` (unit 01's chain rule)
with a ``dlmi.rnn`` GRU/LSTM whose initial state comes from an optional context vector (an image
feature, a set of findings, an encoder's summary):

- **teacher forcing** (Williams & Zipser 1989): in training, step t reads the *true* y_{t-1};
  :meth:`~AutoregressiveDecoder.forward` runs the whole sequence in one (fused) pass;
- **free running**: at test time it reads its *own* previous output (:meth:`~AutoregressiveDecoder.generate`,
  greedy or sampled, or :meth:`~AutoregressiveDecoder.beam_search`). A model that never saw its own
  mistakes in training drifts: *exposure bias* (Ranzato et al. 2016);
- **scheduled sampling** (Bengio et al. 2015): in training, each step reads the true token with
  probability ε and the model's own prediction otherwise, ε decaying with a schedule
  (:func:`teacher_forcing_schedule`).

:class:`Seq2Seq` puts a :class:`~dlmi.seq.SequenceClassifier`-style encoder in front (Cho et al. 2014;
Sutskever et al. 2014): its summary of the source is the decoder's context.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .classify import SequenceClassifier, make_rnn
from .masking import check_ids, check_lengths, masked_cross_entropy, sequence_log_prob, shift_targets

__all__ = ["AutoregressiveDecoder", "Seq2Seq", "teacher_forcing_schedule"]


def teacher_forcing_schedule(step: int, kind: str = "inverse_sigmoid", k: float = 10.0, c: float = 0.01,
                             minimum: float = 0.0) -> float:
    """Bengio et al. (2015, §3.1): the probability ε_i of feeding the true token at training step ``i``.

    ``"linear"``: ε = max(minimum, 1 - c·i); ``"exponential"``: ε = k^i (0 < k < 1);
    ``"inverse_sigmoid"``: ε = k / (k + exp(i / k)) (k >= 1). Returns a float in [0, 1].
    """
    if isinstance(step, bool) or not isinstance(step, int) or step < 0:
        raise ValueError(f"step must be an int >= 0, got {step!r}")
    if kind == "linear":
        eps = 1.0 - c * step
    elif kind == "exponential":
        if not 0 < k < 1:
            raise ValueError(f"the exponential schedule needs 0 < k < 1, got k={k}")
        eps = k ** step
    elif kind == "inverse_sigmoid":
        if k < 1:
            raise ValueError(f"the inverse-sigmoid schedule needs k >= 1, got k={k}")
        eps = k / (k + math.exp(min(step / k, 700.0)))
    else:
        raise ValueError(f"kind must be 'linear', 'exponential' or 'inverse_sigmoid', got {kind!r}")
    return float(min(1.0, max(minimum, eps)))


class AutoregressiveDecoder(nn.Module):
    """A recurrent language model over token ids, optionally conditioned on a context vector.

    ``vocab_size`` tokens with ``pad_id``/``bos_id``/``eos_id`` as in :class:`dlmi.text.Vocabulary`;
    ``cell`` ``"gru"``, ``"lstm"`` or ``"rnn"``; ``context_size`` > 0 maps a context ``(B, context_size)``
    to the initial state through ``tanh(Linear)``. Sequences are ``<bos> y_1 … y_n <eos>`` padded,
    with lengths that count ``<bos>`` and ``<eos>``.
    """

    def __init__(self, vocab_size: int, *, embed_dim: int = 64, units: int = 128, cell: str = "gru",
                 context_size: int = 0, pad_id: int = 0, bos_id: int = 1, eos_id: int = 2, dropout: float = 0.0,
                 fused: bool = True):
        super().__init__()
        if not isinstance(vocab_size, int) or vocab_size < 2:
            raise ValueError(f"vocab_size must be an int >= 2, got {vocab_size!r}")
        for name, value in (("pad_id", pad_id), ("bos_id", bos_id), ("eos_id", eos_id)):
            if not 0 <= value < vocab_size:
                raise ValueError(f"{name}={value} is outside the vocabulary [0, {vocab_size})")
        if context_size < 0:
            raise ValueError(f"context_size must be >= 0, got {context_size}")
        self.vocab_size, self.units, self.context_size = vocab_size, units, context_size
        self.pad_id, self.bos_id, self.eos_id = pad_id, bos_id, eos_id
        self.embedding = nn.Embedding(vocab_size, embed_dim, padding_idx=pad_id)
        self.rnn = make_rnn(cell, embed_dim, units, return_sequences=True, return_state=True, fused=fused)
        self.n_states = len(self.rnn.state_names)
        self.init = nn.Linear(context_size, units * self.n_states) if context_size else None
        self.dropout = nn.Dropout(dropout)
        self.out = nn.Linear(units, vocab_size)

    # -- states ---------------------------------------------------------------------------------
    def _device(self):
        return self.out.weight.device

    def initial_state(self, context=None, batch_size: int | None = None):
        """The initial state tuple (``(h,)`` or ``(h, c)``), each ``(B, units)``."""
        if self.context_size:
            if not isinstance(context, torch.Tensor) or context.ndim != 2 or context.shape[1] != self.context_size:
                raise ValueError(f"this decoder needs a context of shape (batch, {self.context_size}), got "
                                 f"{getattr(context, 'shape', type(context).__name__)}")
            if batch_size is not None and context.shape[0] != batch_size:
                raise ValueError(f"context has {context.shape[0]} rows for a batch of {batch_size}")
            init = torch.tanh(self.init(context.to(self.out.weight.dtype)))
            return tuple(init.chunk(self.n_states, dim=-1))
        if context is not None:
            raise ValueError("this decoder has context_size=0 and takes no context")
        if batch_size is None or batch_size < 1:
            raise ValueError("without a context, give batch_size (>= 1)")
        zeros = torch.zeros(batch_size, self.units, device=self._device(), dtype=self.out.weight.dtype)
        return tuple(zeros for _ in range(self.n_states))

    # -- teacher forcing --------------------------------------------------------------------------
    def forward(self, inputs: torch.Tensor, lengths=None, context=None, state=None) -> torch.Tensor:
        """Teacher forcing: logits ``(B, T, V)`` for the next token after each of ``inputs`` ``(B, T)``."""
        check_ids(inputs, self.vocab_size, lengths, "inputs")
        batch, time = inputs.shape
        lengths = (torch.full((batch,), time, dtype=torch.long) if lengths is None
                   else check_lengths(lengths, batch, time))
        if state is None:
            state = self.initial_state(context, batch)
        out, *_ = self.rnn(self.dropout(self.embedding(inputs)), list(state), lengths=lengths)
        return self.out(self.dropout(out))

    def step(self, tokens: torch.Tensor, state):
        """One free-running step: ``tokens`` ``(B,)`` -> (logits ``(B, V)``, new state)."""
        cell = self.rnn.cell
        new = cell.step(cell.project_inputs(self.dropout(self.embedding(tokens))), tuple(state))
        return self.out(self.dropout(new[0])), new

    def rollout_logits(self, inputs: torch.Tensor, context=None, teacher_forcing: float = 0.0,
                       sample: bool = True, generator: torch.Generator | None = None) -> torch.Tensor:
        """Logits ``(B, T, V)`` when step t reads the true ``inputs[:, t]`` with probability
        ``teacher_forcing`` and otherwise the model's own token from step t-1 (sampled from its
        softmax if ``sample``, else the argmax). Step 0 always reads ``inputs[:, 0]`` (``<bos>``).
        ``teacher_forcing=1`` equals :meth:`forward`; ``0`` is free running. Scheduled sampling
        (Bengio et al. 2015) trains on these logits.
        """
        check_ids(inputs, self.vocab_size, None, "inputs")
        if not 0.0 <= float(teacher_forcing) <= 1.0:
            raise ValueError(f"teacher_forcing must be a probability in [0, 1], got {teacher_forcing}")
        batch, time = inputs.shape
        state = self.initial_state(context, batch)
        token, logits = inputs[:, 0], []
        for t in range(time):
            if t > 0:
                with torch.no_grad():
                    prev = logits[-1].detach()
                    own = (torch.multinomial(prev.float().softmax(-1).cpu(), 1, generator=generator)
                           .squeeze(1).to(inputs.device) if sample else prev.argmax(-1))
                if teacher_forcing >= 1.0:
                    token = inputs[:, t]
                elif teacher_forcing <= 0.0:
                    token = own
                else:
                    coin = torch.rand(batch, generator=generator).to(inputs.device) < teacher_forcing
                    token = torch.where(coin, inputs[:, t], own)
            step_logits, state = self.step(token, state)
            logits.append(step_logits)
        return torch.stack(logits, dim=1)

    def loss(self, ids: torch.Tensor, lengths, context=None, teacher_forcing: float = 1.0,
             sample: bool = True, generator: torch.Generator | None = None) -> torch.Tensor:
        """Mean cross-entropy per real target token of ``<bos> y … <eos>`` sequences ``ids``.

        ``teacher_forcing`` < 1 trains with scheduled sampling (see :meth:`rollout_logits`).
        """
        inputs, targets, target_lengths = shift_targets(ids, lengths)
        if teacher_forcing >= 1.0:
            logits = self(inputs, target_lengths, context)
        else:
            logits = self.rollout_logits(inputs, context, teacher_forcing, sample, generator)
        return masked_cross_entropy(logits, targets, target_lengths)

    @torch.no_grad()
    def score(self, ids: torch.Tensor, lengths, context=None) -> torch.Tensor:
        """``log P(y | context) = Σ_t log P(y_t | y_<t, context)`` of each ``<bos> y … <eos>`` sequence ``(B,)``."""
        inputs, targets, target_lengths = shift_targets(ids, lengths)
        return sequence_log_prob(self(inputs, target_lengths, context), targets, target_lengths)

    # -- free running ------------------------------------------------------------------------------
    @torch.no_grad()
    def generate(self, context=None, batch_size: int | None = None, max_length: int = 50,
                 strategy: str = "greedy", temperature: float = 1.0, generator: torch.Generator | None = None,
                 stop_at_eos: bool = True):
        """Free running from ``<bos>``: returns ``(tokens, lengths)``.

        ``tokens`` ``(B, L)`` are the generated ids after ``<bos>`` (``<eos>`` included when produced,
        ``<pad>`` after it); ``lengths`` count them. ``strategy`` ``"greedy"`` (argmax) or
        ``"sample"`` (from the softmax at ``temperature``). ``stop_at_eos=False`` keeps going to
        ``max_length`` (useful to compare position by position with a reference).
        """
        if strategy not in ("greedy", "sample"):
            raise ValueError(f"strategy must be 'greedy' or 'sample', got {strategy!r}")
        if not isinstance(max_length, int) or max_length < 1:
            raise ValueError(f"max_length must be an int >= 1, got {max_length!r}")
        if context is not None and batch_size is None:
            batch_size = context.shape[0]
        state = self.initial_state(context, batch_size)
        batch = state[0].shape[0]
        token = torch.full((batch,), self.bos_id, dtype=torch.long, device=self._device())
        done = torch.zeros(batch, dtype=torch.bool, device=token.device)
        out, lengths = [], torch.zeros(batch, dtype=torch.long, device=token.device)
        for _ in range(max_length):
            logits, state = self.step(token, state)
            if strategy == "greedy":
                token = logits.argmax(-1)
            else:
                probs = (logits / temperature).softmax(-1)
                token = torch.multinomial(probs, 1, generator=generator).squeeze(1)
            if stop_at_eos:
                token = token.masked_fill(done, self.pad_id)
            out.append(token)
            lengths += (~done).long()
            if stop_at_eos:
                done = done | (token == self.eos_id)
                if bool(done.all()):
                    break
        return torch.stack(out, dim=1), lengths

    @torch.no_grad()
    def beam_search(self, context=None, batch_size: int | None = None, beam_size: int = 4,
                    max_length: int = 50) -> list:
        """Beam search for the most probable output; one ``(tokens, log_prob)`` per batch element.

        ``tokens`` is the list of ids after ``<bos>`` (ending with ``<eos>`` unless ``max_length``
        cut it), ``log_prob`` its ``Σ_t log P(y_t | y_<t)``. Stops when no live hypothesis can beat
        the best finished one (log-probabilities only decrease). ``beam_size=1`` is greedy search.
        """
        if not isinstance(beam_size, int) or beam_size < 1:
            raise ValueError(f"beam_size must be an int >= 1, got {beam_size!r}")
        if not isinstance(max_length, int) or max_length < 1:
            raise ValueError(f"max_length must be an int >= 1, got {max_length!r}")
        if context is not None and batch_size is None:
            batch_size = context.shape[0]
        start = self.initial_state(context, batch_size)
        results = []
        for b in range(start[0].shape[0]):
            state = tuple(s[b:b + 1] for s in start)
            seqs, scores = [[]], torch.zeros(1, device=self._device(), dtype=start[0].dtype)
            tokens = torch.full((1,), self.bos_id, dtype=torch.long, device=self._device())
            finished = []
            for _ in range(max_length):
                logits, state = self.step(tokens, state)
                total = (F.log_softmax(logits, -1) + scores[:, None]).view(-1)
                top = total.topk(min(beam_size, total.numel()))
                keep, new_seqs, new_scores, new_tokens = [], [], [], []
                for value, index in zip(top.values.tolist(), top.indices.tolist()):
                    k, tok = divmod(index, self.vocab_size)
                    if tok == self.eos_id:
                        finished.append((seqs[k] + [tok], value))
                    else:
                        keep.append(k)
                        new_seqs.append(seqs[k] + [tok])
                        new_scores.append(value)
                        new_tokens.append(tok)
                if not keep:
                    seqs = []
                    break
                best_done = max((s for _, s in finished), default=-math.inf)
                seqs = new_seqs
                scores = torch.tensor(new_scores, device=scores.device, dtype=scores.dtype)
                tokens = torch.tensor(new_tokens, device=tokens.device)
                state = tuple(s[keep] for s in state)
                if best_done >= max(new_scores):
                    seqs = []
                    break
            candidates = finished + list(zip(seqs, scores.tolist() if seqs else []))
            results.append(max(candidates, key=lambda c: c[1]))
        return results


class Seq2Seq(nn.Module):
    """Encoder–decoder: a (bidirectional) recurrent encoder summarises the source, the summary is
    the context of an :class:`AutoregressiveDecoder` over the target vocabulary."""

    def __init__(self, source_vocab_size: int, target_vocab_size: int, *, embed_dim: int = 64, units: int = 128,
                 cell: str = "gru", bidirectional: bool = True, encoder_head: str = "last", dropout: float = 0.0,
                 fused: bool = True, **decoder_kwargs):
        super().__init__()
        self.encoder = SequenceClassifier(source_vocab_size, units, embed_dim=embed_dim, units=units, cell=cell,
                                          head=encoder_head, bidirectional=bidirectional, dropout=dropout,
                                          fused=fused)
        self.decoder = AutoregressiveDecoder(target_vocab_size, embed_dim=embed_dim, units=units, cell=cell,
                                             context_size=units, dropout=dropout, fused=fused, **decoder_kwargs)

    def encode(self, source, source_lengths) -> torch.Tensor:
        return self.encoder(source, source_lengths)

    def forward(self, source, source_lengths, target_inputs, target_lengths=None) -> torch.Tensor:
        return self.decoder(target_inputs, target_lengths, self.encode(source, source_lengths))

    def loss(self, source, source_lengths, target, target_lengths, **kwargs) -> torch.Tensor:
        if target.shape[0] != source.shape[0]:
            raise ValueError(f"{source.shape[0]} sources but {target.shape[0]} targets")
        return self.decoder.loss(target, target_lengths, self.encode(source, source_lengths), **kwargs)

    @torch.no_grad()
    def generate(self, source, source_lengths, **kwargs):
        return self.decoder.generate(self.encode(source, source_lengths), **kwargs)

    @torch.no_grad()
    def beam_search(self, source, source_lengths, **kwargs):
        return self.decoder.beam_search(self.encode(source, source_lengths), **kwargs)
