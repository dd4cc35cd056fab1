"""METEOR (Banerjee & Lavie 2005, "METEOR: An Automatic Metric for MT Evaluation with Improved
Correlation with Human Judgments").

METEOR aligns hypothesis words to reference words in stages, each stage only looking at words
the earlier stages left unmatched: (1) exact match, (2) same Porter stem ("effusions" ~
"effusion"), (3) synonyms (WordNet in the paper; pluggable here). With m matched words::

    P = m / len(hypothesis),  R = m / len(reference)
    Fmean   = P R / (alpha P + (1 - alpha) R)        = 10 P R / (R + 9 P)  for alpha = 0.9
    Penalty = gamma * (chunks / m) ** beta           = 0.5 (chunks / m)^3
    METEOR  = Fmean * (1 - Penalty)

where a *chunk* is a run of matches adjacent in both the hypothesis and the reference. With
several references the best score is taken. These are the parameters of the 2005 paper (and of
nltk); the field's papers use this formula. (The Java METEOR 1.5 that ``pycocoevalcap`` runs has
tuned parameters and paraphrase tables, so its numbers differ.)

Alignment. Within a stage, the hypothesis is read from its *last* word to its first and each word
takes the *last* still-unmatched reference word it matches; this is the greedy alignment of
``nltk.translate.meteor_score`` (the paper instead picks, among maximal alignments, the one with
the fewest crossings), so the scores equal nltk's. On the lecture example (reference "the cat sat
on the mat", hypothesis "on the mat sat the cat") the greedy alignment gives 6 chunks and METEOR
0.5, where the fewest-crossings alignment would give 3 chunks.

The lecture slide writes METEOR as ``10PR/(R+9P) * (chunks/matches)^3``; that is
:func:`meteor_slide_formula`, kept so the notebook can show the difference: it *rewards*
fragmentation instead of penalising it. Use :func:`meteor` for numbers comparable with papers.

Tokens are whitespace-split strings unless ``tokenize`` is given, and lower-cased (as nltk does)
unless ``lowercase=False``.
"""
from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import NamedTuple

from .tokenize import as_corpus, as_references, as_tokens

__all__ = ["meteor", "meteor_details", "meteor_slide_formula", "corpus_meteor", "porter_stem", "MeteorDetails"]


class MeteorDetails(NamedTuple):
    """The parts of METEOR for one hypothesis/reference pair."""
    score: float
    precision: float
    recall: float
    fmean: float
    penalty: float
    chunks: int
    matches: int
    alignment: list      # (hypothesis index, reference index) pairs, sorted by hypothesis index


@functools.lru_cache(maxsize=1)
def _porter():
    try:
        from nltk.stem.porter import PorterStemmer
    except ImportError:  # pragma: no cover - depends on the environment
        raise ImportError("METEOR's stem stage uses nltk's Porter stemmer: `pip install nltk`, or pass "
                          "stemmer=None (exact and synonym matches only) or your own stemmer callable") from None
    return PorterStemmer()


@functools.lru_cache(maxsize=100_000)
def porter_stem(word: str) -> str:
    """Porter stem of a word (nltk's ``PorterStemmer``, cached: reports repeat the same words)."""
    return _porter().stem(word)


def _synonym_lookup(synonyms) -> Callable[[str], Iterable[str]] | None:
    if synonyms is None:
        return None
    if isinstance(synonyms, Mapping):
        # Synonymy is symmetric: {"effusion": ["fluid"]} also lets "fluid" match "effusion".
        table: dict[str, set] = {}
        for word, others in synonyms.items():
            if isinstance(others, str):
                others = [others]
            for other in others:
                table.setdefault(word, set()).add(other)
                table.setdefault(other, set()).add(word)
        return lambda word: table.get(word, ())
    if callable(synonyms):
        return synonyms
    raise TypeError(f"synonyms must be None, a mapping word -> synonyms or a callable, got {type(synonyms).__name__}")


def _match_stage(hyp_keys, ref_keys, hyp_left, ref_left, alignment):
    """Greedy matching of equal keys: last hypothesis word first, each to the last free reference word."""
    free: dict = {}
    for j in ref_left:
        free.setdefault(ref_keys[j], []).append(j)  # ascending, so pop() gives the last one
    unmatched_hyp = []
    used = set()
    for i in reversed(hyp_left):
        stack = free.get(hyp_keys[i])
        if stack:
            j = stack.pop()
            alignment.append((i, j))
            used.add(j)
        else:
            unmatched_hyp.append(i)
    unmatched_hyp.reverse()
    return unmatched_hyp, [j for j in ref_left if j not in used]


def _synonym_stage(hyp, ref, hyp_left, ref_left, lookup, alignment):
    """A hypothesis word matches the last free reference word that is one of its synonyms."""
    free: dict = {}
    for j in ref_left:
        free.setdefault(ref[j], []).append(j)
    unmatched_hyp = []
    used = set()
    for i in reversed(hyp_left):
        best_j, best_word = -1, None
        for candidate in set(lookup(hyp[i])) | {hyp[i]}:
            stack = free.get(candidate)
            if stack and stack[-1] > best_j:
                best_j, best_word = stack[-1], candidate
        if best_word is None:
            unmatched_hyp.append(i)
        else:
            free[best_word].pop()
            alignment.append((i, best_j))
            used.add(best_j)
    unmatched_hyp.reverse()
    return unmatched_hyp, [j for j in ref_left if j not in used]


def _align(hyp: list[str], ref: list[str], stemmer, lookup) -> list[tuple[int, int]]:
    alignment: list[tuple[int, int]] = []
    hyp_left, ref_left = list(range(len(hyp))), list(range(len(ref)))
    hyp_left, ref_left = _match_stage(hyp, ref, hyp_left, ref_left, alignment)
    if stemmer is not None and hyp_left and ref_left:
        hyp_stems = {i: stemmer(hyp[i]) for i in hyp_left}
        ref_stems = {j: stemmer(ref[j]) for j in ref_left}
        hyp_left, ref_left = _match_stage(hyp_stems, ref_stems, hyp_left, ref_left, alignment)
    if lookup is not None and hyp_left and ref_left:
        _synonym_stage(hyp, ref, hyp_left, ref_left, lookup, alignment)
    alignment.sort()
    return alignment


def _count_chunks(alignment: list[tuple[int, int]]) -> int:
    if not alignment:
        return 0
    chunks = 1
    for (i0, j0), (i1, j1) in zip(alignment, alignment[1:]):
        if i1 != i0 + 1 or j1 != j0 + 1:
            chunks += 1
    return chunks


def _resolve_stemmer(stemmer):
    if stemmer == "porter":
        return porter_stem
    if stemmer is None or callable(stemmer):
        return stemmer
    raise TypeError(f"stemmer must be 'porter', None or a callable word -> stem, got {stemmer!r}")


def _pair_details(hyp, ref, stemmer, lookup, alpha, beta, gamma) -> MeteorDetails:
    alignment = _align(hyp, ref, stemmer, lookup)
    m = len(alignment)
    if m == 0:  # also covers an empty hypothesis or reference: nothing to score, 0 as nltk returns
        return MeteorDetails(0.0, 0.0, 0.0, 0.0, 0.0, 0, 0, alignment)
    precision = m / len(hyp)
    recall = m / len(ref)
    fmean = precision * recall / (alpha * precision + (1 - alpha) * recall)
    chunks = _count_chunks(alignment)
    penalty = gamma * (chunks / m) ** beta
    return MeteorDetails((1 - penalty) * fmean, precision, recall, fmean, penalty, chunks, m, alignment)


def _prepare(hypothesis, references, lowercase, tokenize):
    hyp = as_tokens(hypothesis, tokenize, "hypothesis")
    refs = as_references(references, tokenize, "references")
    if lowercase:
        hyp = [t.lower() for t in hyp]
        refs = [[t.lower() for t in ref] for ref in refs]
    return hyp, refs


def _check_params(alpha, beta, gamma):
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha!r}")
    if beta < 0 or not 0.0 <= gamma <= 1.0:
        raise ValueError(f"need beta >= 0 and 0 <= gamma <= 1, got beta={beta!r}, gamma={gamma!r}")


def meteor_details(hypothesis, references, alpha: float = 0.9, beta: float = 3.0, gamma: float = 0.5,
                   synonyms=None, stemmer="porter", lowercase: bool = True,
                   tokenize: Callable[[str], Sequence[str]] | None = None) -> MeteorDetails:
    """METEOR with its parts (P, R, Fmean, penalty, chunks, alignment) against the best reference."""
    _check_params(alpha, beta, gamma)
    hyp, refs = _prepare(hypothesis, references, lowercase, tokenize)
    stemmer, lookup = _resolve_stemmer(stemmer), _synonym_lookup(synonyms)
    best = None
    for ref in refs:
        details = _pair_details(hyp, ref, stemmer, lookup, alpha, beta, gamma)
        if best is None or details.score > best.score:
            best = details
    return best


def meteor(hypothesis, references, alpha: float = 0.9, beta: float = 3.0, gamma: float = 0.5,
           synonyms=None, stemmer="porter", lowercase: bool = True,
           tokenize: Callable[[str], Sequence[str]] | None = None) -> float:
    """Sentence METEOR in [0, 1] (Banerjee & Lavie 2005): exact, Porter-stem and synonym stages.

    Parameters
    ----------
    hypothesis:
        Generated text: a string (whitespace tokens, or ``tokenize``) or a list of tokens.
    references:
        A list of references (strings or token lists) or one string; the best score is returned.
    alpha, beta, gamma:
        Fmean weight, fragmentation exponent and maximum penalty (the paper: 0.9, 3, 0.5).
    synonyms:
        ``None`` (no synonym stage), a mapping ``word -> iterable of synonyms`` (used in both
        directions) or a callable ``word -> iterable of synonyms`` (e.g. built on WordNet).
        The synonym stage compares the lower-cased words as written (nltk compares the stems
        the previous stage left behind).
    stemmer:
        ``"porter"`` (nltk's Porter stemmer), a callable ``word -> stem``, or ``None`` to skip the stage.

    Equal to ``nltk.translate.meteor_score.meteor_score`` when it has no synonyms (an empty
    WordNet), including the 0 it returns when nothing matches or a side is empty.

    >>> meteor("on the mat sat the cat", ["the cat sat on the mat"])
    0.5
    """
    return meteor_details(hypothesis, references, alpha, beta, gamma, synonyms, stemmer, lowercase, tokenize).score


def meteor_slide_formula(hypothesis, references, synonyms=None, stemmer="porter", lowercase: bool = True,
                         tokenize: Callable[[str], Sequence[str]] | None = None) -> float:
    """The lecture slide's METEOR, ``10PR/(R+9P) * (chunks/matches)^3``, on the same alignment.

    Not the published metric: the factor (chunks/matches)^3 grows with fragmentation, so a
    word-salad hypothesis is not penalised. Banerjee & Lavie (2005) multiply Fmean by
    ``1 - 0.5 (chunks/matches)^3`` instead (:func:`meteor`), and that is what papers report.
    Best over the references; 0 when nothing matches.
    """
    hyp, refs = _prepare(hypothesis, references, lowercase, tokenize)
    stemmer, lookup = _resolve_stemmer(stemmer), _synonym_lookup(synonyms)
    best = 0.0
    for ref in refs:
        alignment = _align(hyp, ref, stemmer, lookup)
        m = len(alignment)
        if m == 0:
            continue
        precision, recall = m / len(hyp), m / len(ref)
        fmean = 10 * precision * recall / (recall + 9 * precision)
        best = max(best, fmean * (_count_chunks(alignment) / m) ** 3)
    return best


def corpus_meteor(hypotheses: Sequence, references_per_hypothesis: Sequence, **options) -> float:
    """Mean sentence METEOR over a corpus (how captioning and report-generation papers aggregate it).

    ``options`` are those of :func:`meteor`. Raises ValueError on a count mismatch or an empty corpus.
    """
    hypotheses = as_corpus(hypotheses, "hypotheses", "meteor()")
    references_per_hypothesis = as_corpus(references_per_hypothesis, "references_per_hypothesis", "meteor()")
    if len(hypotheses) != len(references_per_hypothesis):
        raise ValueError(f"{len(hypotheses)} hypotheses but references for {len(references_per_hypothesis)}")
    if not hypotheses:
        raise ValueError("corpus_meteor got an empty corpus")
    return sum(meteor(h, r, **options) for h, r in zip(hypotheses, references_per_hypothesis)) / len(hypotheses)
