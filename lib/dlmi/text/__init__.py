"""Text for report generation (lecture unit 06): tokenizer/vocabulary and the n-gram metrics.

Metrics (hypothesis first, then reference(s); whitespace tokens unless ``tokenize`` is given;
scores in [0, 1] except CIDEr-D in [0, 10]):

- :func:`bleu`, :func:`corpus_bleu`, :func:`bleu_details` — Papineni et al. 2002 (= sacrebleu)
- :func:`rouge_l`, :func:`corpus_rouge_l` — Lin 2004 (= Google's rouge-score ``rougeL``)
- :func:`meteor`, :func:`meteor_details`, :func:`corpus_meteor` — Banerjee & Lavie 2005 (= nltk),
  and :func:`meteor_slide_formula`, the lecture slide's variant, for comparison only
- :func:`cider_d` — Vedantam et al. 2015 (= pycocoevalcap ``Cider``)

Tokenizer: :class:`ReportTokenizer` (IU X-ray report text, "XXXX" gaps -> one token),
:mod:`.labeller`: :func:`label_report`, :func:`findings_of`, :func:`clinical_scores` — NegEx-style
finding extraction (Chapman 2001) and the clinical precision / recall / F1 of generated reports.

:class:`Vocabulary` (``<pad>``, ``<bos>``, ``<eos>``, ``<unk>``; padded batches with lengths).
"""
from .bleu import SMOOTHING_METHODS, BleuDetails, bleu, bleu_details, corpus_bleu
from .cider import cider_d
from .labeller import (
    FINDINGS, LABEL_NAMES, clinical_scores, find_mentions, findings_of, label_matrix, label_report,
)
from .meteor import MeteorDetails, corpus_meteor, meteor, meteor_details, meteor_slide_formula, porter_stem
from .rouge import corpus_rouge_l, lcs_length, rouge_l, rouge_tokenize
from .tokenize import (
    BOS, EOS, PAD, SPECIAL_TOKENS, UNK,
    ReportTokenizer, Vocabulary, detokenize, split_sentences, tokenize_report,
)

__all__ = [
    "bleu", "corpus_bleu", "bleu_details", "BleuDetails", "SMOOTHING_METHODS",
    "rouge_l", "corpus_rouge_l", "rouge_tokenize", "lcs_length",
    "meteor", "meteor_details", "meteor_slide_formula", "corpus_meteor", "porter_stem", "MeteorDetails",
    "cider_d",
    "label_report", "findings_of", "find_mentions", "label_matrix", "clinical_scores", "FINDINGS", "LABEL_NAMES",
    "ReportTokenizer", "Vocabulary", "tokenize_report", "split_sentences", "detokenize",
    "PAD", "BOS", "EOS", "UNK", "SPECIAL_TOKENS",
]
