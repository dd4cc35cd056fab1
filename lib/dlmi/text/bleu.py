"""BLEU (Papineni et al. 2002, "BLEU: a Method for Automatic Evaluation of Machine Translation").

BLEU is the geometric mean of the modified (clipped) n-gram precisions p_1..p_N times a
brevity penalty::

    BLEU = BP * exp( (1/N) * sum_n log p_n ),    BP = 1 if c >= r else exp(1 - r/c)

where p_n counts each hypothesis n-gram at most as often as it occurs in any single reference
("clipping"), c is the hypothesis length and r the reference length closest to c (the shorter
one on a tie). *Corpus* BLEU sums the clipped counts, totals, c and r over all sentences before
dividing; it is not the mean of sentence BLEUs.

The numbers are those of sacrebleu (Post 2018) with ``tokenize="none"``, divided by 100, for every
smoothing it offers (Chen & Cherry 2014): ``"none"``; ``"floor"`` (a zero count becomes
``smoothing_value``, default 0.1); ``"add-k"`` (k, default 1, added to the counts and totals of
n > 1); ``"exp"`` (the NIST/mteval rule: the k-th zero precision becomes 1/(2^k * total)). Like
sacrebleu, a hypothesis without a single matching unigram scores 0 whatever the smoothing.
Note that sacrebleu's *own* default is ``smooth_method="exp"``; here the default is ``"none"``,
the paper's definition.

Inputs are whitespace-tokenized strings unless ``tokenize`` is given; a list of strings is taken
as already tokenized. ``references`` is a list of references (one string is one reference).
"""
from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Sequence
from typing import NamedTuple

from .tokenize import as_corpus, as_references, as_tokens

__all__ = ["bleu", "corpus_bleu", "bleu_details", "BleuDetails", "SMOOTHING_METHODS"]

# Default smoothing values, as in sacrebleu / Chen & Cherry 2014.
SMOOTHING_METHODS = {"none": None, "floor": 0.1, "add-k": 1, "exp": None}


class BleuDetails(NamedTuple):
    """Everything BLEU is made of; ``score`` is in [0, 1]."""
    score: float
    precisions: list          # p_1..p_N after smoothing (0 where undefined)
    brevity_penalty: float
    hyp_len: int              # c, summed over the corpus
    ref_len: int              # r, summed over the corpus
    correct: list             # clipped n-gram matches per order (before smoothing)
    total: list               # hypothesis n-grams per order (before smoothing)


def _ngram_counts(tokens: list[str], max_n: int) -> list[Counter]:
    # Unigrams are keyed by the word itself, higher orders by tuples; hypothesis and reference use
    # the same keys, which is all clipping needs, and skipping 1-tuples saves time on long corpora.
    counts = [Counter(tokens)]
    for n in range(2, max_n + 1):
        counts.append(Counter(zip(*[tokens[i:] for i in range(n)])))
    return counts


def _max_ref_counts(refs: list[list[str]], max_n: int) -> list[Counter]:
    """Per n-gram, the largest count in any one reference (the clipping ceiling)."""
    merged = _ngram_counts(refs[0], max_n)
    for ref in refs[1:]:
        for target, counts in zip(merged, _ngram_counts(ref, max_n)):
            for gram, count in counts.items():
                if count > target.get(gram, 0):
                    target[gram] = count
    return merged


def _closest_ref_len(hyp_len: int, ref_lens: list[int]) -> int:
    # Closest to the hypothesis; on a tie the shorter reference (sacrebleu, mteval-v13a).
    return min(ref_lens, key=lambda n: (abs(n - hyp_len), n))


def _check_options(max_n, smoothing, smoothing_value):
    if isinstance(max_n, bool) or not isinstance(max_n, int) or max_n < 1:
        raise ValueError(f"max_n must be a positive integer, got {max_n!r}")
    if smoothing not in SMOOTHING_METHODS:
        raise ValueError(f"smoothing must be one of {sorted(SMOOTHING_METHODS)}, got {smoothing!r}")
    if smoothing_value is None:
        smoothing_value = SMOOTHING_METHODS[smoothing]
    elif smoothing_value < 0:
        raise ValueError(f"smoothing_value must be >= 0, got {smoothing_value!r}")
    return smoothing_value


def _score(correct, total, hyp_len, ref_len, max_n, smoothing, smoothing_value, effective_order) -> BleuDetails:
    if hyp_len < ref_len:
        bp = math.exp(1.0 - ref_len / hyp_len) if hyp_len > 0 else 0.0
    else:
        bp = 1.0
    precisions = [0.0] * max_n
    if not any(correct):
        # Nothing matched at all: 0 for every smoothing (sacrebleu issue #141).
        return BleuDetails(0.0, precisions, bp, hyp_len, ref_len, list(correct), list(total))
    order = max_n
    exp_divisor = 1.0
    for n in range(max_n):
        matched, count = correct[n], total[n]
        if smoothing == "add-k" and n > 0:
            matched, count = matched + smoothing_value, count + smoothing_value
        if count == 0:
            break  # the hypothesis has no n-grams this long; higher orders stay 0
        if effective_order:
            order = n + 1
        if matched == 0:
            if smoothing == "exp":
                exp_divisor *= 2.0
                precisions[n] = 1.0 / (exp_divisor * count)
            elif smoothing == "floor":
                precisions[n] = smoothing_value / count
        else:
            precisions[n] = matched / count
    used = precisions[:order]
    if min(used) <= 0.0:
        score = 0.0  # log 0: a zero precision zeroes the geometric mean
    else:
        score = bp * math.exp(sum(math.log(p) for p in used) / order)
    return BleuDetails(score, precisions, bp, hyp_len, ref_len, list(correct), list(total))


def bleu_details(hypotheses: Sequence, references_per_hypothesis: Sequence, max_n: int = 4,
                 smoothing: str = "none", smoothing_value: float | None = None,
                 effective_order: bool = False,
                 tokenize: Callable[[str], Sequence[str]] | None = None) -> BleuDetails:
    """Corpus BLEU with its parts (precisions, brevity penalty, lengths, counts); see :func:`corpus_bleu`."""
    smoothing_value = _check_options(max_n, smoothing, smoothing_value)
    hypotheses = as_corpus(hypotheses, "hypotheses", "bleu()")
    references_per_hypothesis = as_corpus(references_per_hypothesis, "references_per_hypothesis", "bleu()")
    if len(hypotheses) != len(references_per_hypothesis):
        raise ValueError(f"{len(hypotheses)} hypotheses but references for {len(references_per_hypothesis)}: "
                         "give one list of references per hypothesis")
    correct = [0] * max_n
    total = [0] * max_n
    hyp_len_sum = ref_len_sum = 0
    for k, (hypothesis, references) in enumerate(zip(hypotheses, references_per_hypothesis)):
        hyp = as_tokens(hypothesis, tokenize, f"hypothesis {k}")
        refs = as_references(references, tokenize, f"references of hypothesis {k}")
        hyp_counts = _ngram_counts(hyp, max_n)
        ref_counts = _max_ref_counts(refs, max_n)
        hyp_len_sum += len(hyp)
        ref_len_sum += _closest_ref_len(len(hyp), [len(r) for r in refs])
        for n in range(max_n):
            hyp_n, ceiling = hyp_counts[n], ref_counts[n]
            # Clipped matches: only n-grams present on both sides can count; the set intersection
            # and the map() calls keep this loop in C, which is where corpus BLEU spends its time.
            common = hyp_n.keys() & ceiling.keys()
            if common:
                correct[n] += sum(map(min, map(hyp_n.__getitem__, common), map(ceiling.__getitem__, common)))
            total[n] += max(len(hyp) - n, 0)
    return _score(correct, total, hyp_len_sum, ref_len_sum, max_n, smoothing, smoothing_value, effective_order)


def corpus_bleu(hypotheses: Sequence, references_per_hypothesis: Sequence, max_n: int = 4,
                smoothing: str = "none", smoothing_value: float | None = None,
                effective_order: bool = False,
                tokenize: Callable[[str], Sequence[str]] | None = None) -> float:
    """Corpus-level BLEU in [0, 1] (Papineni et al. 2002), equal to sacrebleu's ``corpus_score / 100``.

    Parameters
    ----------
    hypotheses:
        One generated text per example (string, or list of tokens).
    references_per_hypothesis:
        For each hypothesis, its references: a list of strings/token lists, or one string.
        (sacrebleu takes reference *streams* instead: ``list(zip(*references_per_hypothesis))``.)
    max_n:
        Highest n-gram order (4 = BLEU-4; BLEU-1..3 are ``max_n=1..3``).
    smoothing, smoothing_value:
        ``"none"`` (default), ``"floor"``, ``"add-k"`` or ``"exp"``; see the module docstring.
    effective_order:
        Average only over the orders the hypotheses are long enough to have (sacrebleu's option).
    tokenize:
        Callable ``str -> list[str]`` applied to string inputs; default whitespace split.

    Raises ValueError when the number of reference lists differs from the number of hypotheses
    or a hypothesis has no reference, TypeError on non-string tokens.
    """
    return bleu_details(hypotheses, references_per_hypothesis, max_n, smoothing, smoothing_value,
                        effective_order, tokenize).score


def bleu(hypothesis, references, max_n: int = 4, smoothing: str = "none",
         smoothing_value: float | None = None, effective_order: bool = False,
         tokenize: Callable[[str], Sequence[str]] | None = None) -> float:
    """Sentence BLEU in [0, 1] of one hypothesis against its references (Papineni et al. 2002).

    Equal to sacrebleu's ``sentence_score(hypothesis, references).score / 100`` with
    ``tokenize="none"`` and the same smoothing. Without smoothing a sentence with no matching
    4-gram scores 0, which is why sentence-level BLEU is usually smoothed (``smoothing="exp"``
    or ``"add-k"``) or computed with ``effective_order=True``.

    >>> round(bleu("the cat sat on the mat", ["the cat sat on the mat"]), 6)
    1.0
    """
    return bleu_details([hypothesis], [references], max_n, smoothing, smoothing_value,
                        effective_order, tokenize).score
