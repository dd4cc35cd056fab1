"""CIDEr-D (Vedantam, Zitnick & Parikh 2015, "CIDEr: Consensus-based Image Description Evaluation").

CIDEr weighs each n-gram by TF-IDF, where the "documents" are the examples (images) of the
evaluated corpus: an n-gram that the references of every image use ("the", "no acute") carries
no information, one that few images' references use ("pneumothorax") carries a lot. For each
n = 1..4 it takes the cosine similarity between the hypothesis's and each reference's TF-IDF
vectors; CIDEr-D (the "defended" variant used everywhere) adds two guards against gaming:

* clipping: the hypothesis weight of an n-gram counts at most up to the reference weight,
  so repeating a good n-gram does not help;
* a Gaussian length penalty ``exp(-(l_hyp - l_ref)^2 / (2 sigma^2))`` with sigma = 6.

Per example: ``10 * mean_n [ (1/M) sum_refs clipped_cos_n * penalty ]``; the corpus score is the
mean over examples. The factor 10 makes the range [0, 10], unlike the other metrics here.

The numbers are those of ``pycocoevalcap``'s ``Cider`` (which is CIDEr-D), fed the same tokens;
its conventions are kept: the term frequency is the raw count, the IDF is
``log(#examples) - log(max(1, document frequency))`` with document frequencies counted over the
references only, and the "length" in the penalty is the number of *bigrams* (``len - 1``; 0 for a
one-word or empty sentence; always 0 when ``n < 2``), which equals the word-length difference
whenever both sentences have two words or more. A consequence of the corpus IDF: on a corpus of a
single example every weight is 0, and so is CIDEr.
"""
from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Sequence

from .tokenize import as_corpus, as_references, as_tokens

__all__ = ["cider_d"]


def _all_ngrams(tokens: list[str], n: int) -> Counter:
    counts: Counter = Counter()
    for k in range(1, n + 1):
        counts.update(zip(*[tokens[i:] for i in range(k)]))
    return counts


def cider_d(hypotheses: Sequence, references_per_hypothesis: Sequence, n: int = 4, sigma: float = 6.0,
            tokenize: Callable[[str], Sequence[str]] | None = None, per_hypothesis: bool = False):
    """Corpus CIDEr-D (Vedantam et al. 2015) in [0, 10], equal to pycocoevalcap's ``Cider``.

    Parameters
    ----------
    hypotheses:
        One generated text per example (string or token list).
    references_per_hypothesis:
        For each hypothesis its references (a list of strings/token lists, or one string). The
        IDF is computed from these references, so scores depend on the whole corpus.
    n, sigma:
        Highest n-gram order and the width of the length penalty (4 and 6 in the paper).
    tokenize:
        Callable ``str -> list[str]`` for string inputs; default whitespace split (pycocoevalcap
        runs the PTB tokenizer first; tokenize the same way to compare numbers).
    per_hypothesis:
        Also return the list of per-example scores: ``(mean, scores)``.

    Raises ValueError on a count mismatch, an example without references or an empty corpus.
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be a positive integer, got {n!r}")
    if not sigma > 0:
        raise ValueError(f"sigma must be > 0, got {sigma!r}")
    hypotheses = as_corpus(hypotheses, "hypotheses", "a one-element list")
    references_per_hypothesis = as_corpus(references_per_hypothesis, "references_per_hypothesis", "a one-element list")
    if len(hypotheses) != len(references_per_hypothesis):
        raise ValueError(f"{len(hypotheses)} hypotheses but references for {len(references_per_hypothesis)}")
    if not hypotheses:
        raise ValueError("cider_d got an empty corpus")

    hyp_tokens = [as_tokens(h, tokenize, f"hypothesis {k}") for k, h in enumerate(hypotheses)]
    ref_tokens = [as_references(r, tokenize, f"references of hypothesis {k}")
                  for k, r in enumerate(references_per_hypothesis)]

    hyp_counts = [_all_ngrams(h, n) for h in hyp_tokens]
    ref_counts = [[_all_ngrams(r, n) for r in refs] for refs in ref_tokens]

    # Document frequency: in how many examples' reference sets an n-gram occurs.
    document_frequency: Counter = Counter()
    for refs in ref_counts:
        document_frequency.update(set().union(*refs))
    log_examples = math.log(len(hypotheses))

    def length(tokens):  # pycocoevalcap's "length": the number of bigrams
        return max(len(tokens) - 1, 0) if n >= 2 else 0

    def weights(counts: Counter):
        """TF-IDF weight of every n-gram, and the norm of each order's vector."""
        vec = {}
        squares = [0.0] * n
        for gram, tf in counts.items():
            w = tf * (log_examples - math.log(max(1.0, document_frequency.get(gram, 0))))
            vec[gram] = w
            squares[len(gram) - 1] += w * w
        return vec, [math.sqrt(s) for s in squares]

    two_sigma_sq = 2.0 * sigma * sigma
    scores = []
    for hyp, h_counts, refs, r_counts_list in zip(hyp_tokens, hyp_counts, ref_tokens, ref_counts):
        h_vec, h_norm = weights(h_counts)
        total = [0.0] * n
        for ref, r_counts in zip(refs, r_counts_list):
            r_vec, r_norm = weights(r_counts)
            dot = [0.0] * n
            for gram, wh in h_vec.items():
                wr = r_vec.get(gram)
                if wr:
                    dot[len(gram) - 1] += (wh if wh < wr else wr) * wr  # clipped: min(h, r) * r
            delta = length(hyp) - length(ref)
            penalty = math.exp(-(delta * delta) / two_sigma_sq)
            for k in range(n):
                # A zero-norm vector (e.g. no bigrams in a one-word sentence) leaves the 0 dot product as is.
                cosine = dot[k] / (h_norm[k] * r_norm[k]) if h_norm[k] != 0 and r_norm[k] != 0 else dot[k]
                total[k] += cosine * penalty
        scores.append(10.0 * (sum(total) / n) / len(refs))
    mean = sum(scores) / len(scores)
    return (mean, scores) if per_hypothesis else mean
