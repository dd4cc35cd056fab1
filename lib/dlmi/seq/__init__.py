"""Sequence models built on the ``dlmi.rnn`` layers (lecture units 02, 05, 06, 07).

Padded batches with ``lengths`` everywhere; nothing depends on a fixed length.

``masking``  — :func:`check_lengths`, :func:`lengths_to_mask`, mask-aware :func:`masked_mean`,
               :func:`masked_max`, :func:`last_step`; the teacher-forced loss :func:`masked_cross_entropy`
               and :func:`sequence_log_prob` (``Σ_t log P(y_t | y_<t)``).
``classify`` — many-to-one :class:`SequenceClassifier` (``last`` / ``mean`` / ``max`` / ``attention``
               heads, bidirectional) and many-to-many :class:`SequenceTagger` (unit 02).
``decode``   — one-to-many :class:`AutoregressiveDecoder` (teacher forcing, free running, scheduled
               sampling — Bengio et al. 2015 —, greedy and beam search) and :class:`Seq2Seq`
               (Cho et al. 2014; Sutskever et al. 2014) (unit 02).
``captioning`` — Show, Attend and Tell (Xu et al. 2015): :class:`ConvEncoder` grid features,
               :class:`SoftAttention`, :class:`CaptioningModel` with beam search (unit 06).
``report_generation`` — hierarchical report generator (Liu et al. 2019; Krause et al. 2017): a
               sentence LSTM emits a topic and a stop probability per sentence, a word LSTM with soft
               attention writes each sentence; :func:`encode_reports` pads reports into sentences (unit 06).
``slices``   — CNN per CT slice + RNN over slices, against slice pooling and a fixed-depth 3-D CNN (unit 05).
``ehr``      — visits of a patient through a time-aware LSTM (Pham et al. 2017, DeepCare) (unit 07).
"""
from .captioning import CaptioningModel, ConvEncoder, SoftAttention, decode_ids
from .classify import CELLS, HEADS, AttentionPooling, SequenceClassifier, SequenceTagger, make_rnn
from .decode import AutoregressiveDecoder, Seq2Seq, teacher_forcing_schedule
from .ehr import EHRModel, TimeAwareLSTM, collate_visits, next_visit_loss, next_visit_pairs, time_decay
from .masking import (
    POOLING_MODES, check_ids, check_lengths, last_step, lengths_to_mask, masked_cross_entropy, masked_max,
    masked_mean, masked_pool, sequence_log_prob, shift_targets,
)
from .slices import Fixed3DCNN, SliceEncoder, SliceSequenceClassifier

__all__ = [
    "CaptioningModel", "ConvEncoder", "SoftAttention", "decode_ids",
    "HierarchicalReportGenerator", "GeneratedReport", "encode_reports", "stop_targets",
    "check_lengths", "lengths_to_mask", "check_ids", "masked_mean", "masked_max", "masked_pool", "last_step",
    "shift_targets", "masked_cross_entropy", "sequence_log_prob", "POOLING_MODES",
    "make_rnn", "AttentionPooling", "SequenceClassifier", "SequenceTagger", "HEADS", "CELLS",
    "AutoregressiveDecoder", "Seq2Seq", "teacher_forcing_schedule",
    "SliceEncoder", "SliceSequenceClassifier", "Fixed3DCNN",
    "TimeAwareLSTM", "EHRModel", "collate_visits", "next_visit_loss", "next_visit_pairs", "time_decay",
]

# report_generation is also a script (python -m dlmi.seq.report_generation makes the lecture's
# checkpoints); imported eagerly here, runpy would warn that it ran a module already imported.
_REPORT_GENERATION = ("HierarchicalReportGenerator", "GeneratedReport", "encode_reports", "stop_targets")


def __getattr__(name):
    if name in _REPORT_GENERATION:
        from . import report_generation

        return getattr(report_generation, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
