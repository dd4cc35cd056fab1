"""The lecture's example with every metric (values from the oracles and by hand), and bad input:
empty texts give the oracles' defined results, miscounted or mistyped input a clear error."""
import logging
import math

import pytest

from dlmi.text import (bleu, bleu_details, cider_d, corpus_bleu, corpus_meteor, corpus_rouge_l, meteor,
                       meteor_details, meteor_slide_formula, rouge_l)

REFERENCE = "the cat sat on the mat"
PREDICTION = "on the mat sat the cat"

logging.getLogger("sacrebleu").setLevel(logging.ERROR)


def test_lecture_example_bleu():
    # p1 = 6/6, p2 = 3/5 ("on the", "the mat", "the cat"), p3 = 1/4 ("on the mat"), p4 = 0/3, BP = 1.
    expected = {1: 1.0, 2: math.sqrt(0.6), 3: (0.6 * 0.25) ** (1 / 3), 4: 0.0}
    for n, value in expected.items():
        assert bleu(PREDICTION, [REFERENCE], max_n=n) == pytest.approx(value, abs=1e-12)
    # NIST/exp smoothing replaces the zero p4 by 1/(2 * 3).
    assert bleu(PREDICTION, [REFERENCE], smoothing="exp") == pytest.approx((0.6 * 0.25 / 6) ** 0.25, abs=1e-12)
    details = bleu_details([PREDICTION], [[REFERENCE]])
    assert details.precisions == pytest.approx([1.0, 0.6, 0.25, 0.0]) and details.brevity_penalty == 1.0

    sacrebleu = pytest.importorskip("sacrebleu")
    for n in (1, 2, 3, 4):
        for smoothing in ("none", "exp", "floor", "add-k"):
            oracle = sacrebleu.BLEU(tokenize="none", force=True, smooth_method=smoothing, max_ngram_order=n)
            assert bleu(PREDICTION, [REFERENCE], max_n=n, smoothing=smoothing) == pytest.approx(
                oracle.sentence_score(PREDICTION, [REFERENCE]).score / 100, abs=1e-6)


def test_lecture_example_rouge_l():
    # LCS = 3 ("on the mat", or "the sat the"): P = R = F = 3/6.
    assert rouge_l(PREDICTION, REFERENCE) == pytest.approx((0.5, 0.5, 0.5), abs=1e-12)
    rouge_scorer = pytest.importorskip("rouge_score.rouge_scorer")
    score = rouge_scorer.RougeScorer(["rougeL"]).score(REFERENCE, PREDICTION)["rougeL"]
    assert rouge_l(PREDICTION, REFERENCE) == pytest.approx((score.precision, score.recall, score.fmeasure), abs=1e-12)


def test_lecture_example_meteor_and_slide_formula():
    details = meteor_details(PREDICTION, [REFERENCE])
    # All 6 words match (P = R = Fmean = 1). nltk's greedy alignment (last hypothesis word first,
    # to the last free reference word) pairs the two "the"s crosswise: 6 chunks, penalty 0.5 * 1^3.
    assert (details.matches, details.chunks) == (6, 6)
    assert details.fmean == pytest.approx(1.0) and details.penalty == pytest.approx(0.5)
    assert meteor(PREDICTION, [REFERENCE]) == pytest.approx(0.5, abs=1e-12)
    # The slide's 10PR/(R+9P) * (chunks/matches)^3 gives 1.0: it rewards the scrambled order.
    assert meteor_slide_formula(PREDICTION, [REFERENCE]) == pytest.approx(1.0, abs=1e-12)
    assert meteor_slide_formula(REFERENCE, [REFERENCE]) == pytest.approx((1 / 6) ** 3, abs=1e-12)
    assert meteor(REFERENCE, [REFERENCE]) == pytest.approx(1 - 0.5 / 6 ** 3, abs=1e-12)

    nltk_meteor = pytest.importorskip("nltk.translate.meteor_score")

    class EmptyWordNet:
        def synsets(self, word):
            return []

    assert meteor(PREDICTION, [REFERENCE]) == pytest.approx(
        nltk_meteor.meteor_score([REFERENCE.split()], PREDICTION.split(), wordnet=EmptyWordNet()), abs=1e-6)


def test_lecture_example_cider_d():
    # A one-example corpus has IDF 0 everywhere (pycocoevalcap gives 0 too) ...
    assert cider_d([PREDICTION], [[REFERENCE]]) == 0.0
    # ... so add a second example. Every n-gram then has the same IDF (log 2), the cosines are the
    # plain n-gram overlaps 1, 3/5, 1/4, 0, equal lengths mean no penalty: 10 * 1.85 / 4 = 4.625.
    mean, scores = cider_d([PREDICTION, "the heart is normal"], [[REFERENCE], ["heart size is normal"]],
                           per_hypothesis=True)
    assert scores[0] == pytest.approx(4.625, abs=1e-12)
    assert mean == pytest.approx((4.625 + scores[1]) / 2)


# ---------------------------------------------------------------- empty texts: defined results

@pytest.mark.parametrize("hyp,ref", [("", "the cat"), ("the cat", ""), ("", ""), ([], ["the"]), ("   ", "the cat")])
def test_empty_texts_score_zero(hyp, ref):
    refs = [ref] if isinstance(ref, str) else [ref]
    assert bleu(hyp, refs) == 0.0
    for smoothing in ("exp", "floor", "add-k"):
        assert bleu(hyp, refs, smoothing=smoothing) == 0.0
    assert rouge_l(hyp, ref) == (0.0, 0.0, 0.0)
    assert meteor(hyp, refs) == 0.0
    assert meteor_slide_formula(hyp, refs) == 0.0


def test_empty_texts_agree_with_the_oracles():
    sacrebleu = pytest.importorskip("sacrebleu")
    rouge_scorer = pytest.importorskip("rouge_score.rouge_scorer")
    nltk_meteor = pytest.importorskip("nltk.translate.meteor_score")

    class EmptyWordNet:
        def synsets(self, word):
            return []

    scorer = rouge_scorer.RougeScorer(["rougeL"])
    for hyp, ref in [("", "the cat"), ("the cat", ""), ("", "")]:
        assert bleu(hyp, [ref], smoothing="exp") == sacrebleu.BLEU(tokenize="none", force=True).sentence_score(hyp, [ref]).score / 100
        assert rouge_l(hyp, ref)[2] == scorer.score(ref, hyp)["rougeL"].fmeasure
        assert meteor(hyp, [ref]) == nltk_meteor.meteor_score([ref.split()], hyp.split(), wordnet=EmptyWordNet())


def test_empty_hypothesis_in_a_corpus_counts_as_zero_length():
    # It adds its reference length to r (so the brevity penalty bites) but no n-grams.
    with_empty = corpus_bleu(["the cat sat on the mat", ""], [["the cat sat on the mat"], ["a dog"]], max_n=1)
    assert with_empty == pytest.approx(math.exp(1 - 8 / 6))
    assert cider_d(["", "no effusion"], [["no effusion"], ["no effusion"]], per_hypothesis=True)[1][0] == 0.0


# ---------------------------------------------------------------- bad input: clear errors

def test_reference_count_must_match_hypotheses():
    hyps = ["no effusion", "normal heart"]
    with pytest.raises(ValueError, match="2 hypotheses"):
        corpus_bleu(hyps, [["no effusion"]])
    with pytest.raises(ValueError, match="2 hypotheses"):
        corpus_rouge_l(hyps, ["no effusion"])
    with pytest.raises(ValueError, match="2 hypotheses"):
        corpus_meteor(hyps, [["no effusion"]])
    with pytest.raises(ValueError, match="2 hypotheses"):
        cider_d(hyps, [["no effusion"], ["a"], ["b"]])
    with pytest.raises(ValueError, match="at least one reference"):
        bleu("no effusion", [])
    with pytest.raises(ValueError, match="at least one reference"):
        meteor("no effusion", [])
    with pytest.raises(ValueError, match="at least one reference"):
        cider_d(hyps, [["no effusion"], []])
    with pytest.raises(ValueError, match="empty corpus"):
        cider_d([], [])


@pytest.mark.parametrize("call", [
    lambda: bleu(["no", 3], ["no effusion"]),
    lambda: bleu("no effusion", [["no", None]]),
    lambda: bleu(None, ["no effusion"]),
    lambda: bleu("no effusion", 42),
    lambda: bleu(b"no effusion", ["no effusion"]),
    lambda: corpus_bleu("no effusion", ["no effusion"]),
    lambda: rouge_l(["no", 1.5], "no effusion"),
    lambda: rouge_l("no effusion", None),
    lambda: meteor(123, ["no effusion"]),
    lambda: meteor("no effusion", [["no", ("effusion",)]]),
    lambda: meteor("no effusion", ["no effusion"], synonyms=42),
    lambda: meteor("no effusion", ["no effusion"], stemmer="snowball"),
    lambda: cider_d(["no effusion"], [[["no", 7]]]),
    lambda: bleu("no effusion", ["no effusion"], tokenize=lambda s: s),  # tokenize must return a list
])
def test_non_string_tokens_are_type_errors(call):
    with pytest.raises(TypeError):
        call()


@pytest.mark.parametrize("call", [
    lambda: bleu("a", ["a"], smoothing="laplace"),
    lambda: bleu("a", ["a"], max_n=0),
    lambda: bleu("a", ["a"], smoothing="floor", smoothing_value=-1),
    lambda: meteor("a", ["a"], alpha=1.5),
    lambda: cider_d(["a"], [["a"]], n=0),
    lambda: cider_d(["a"], [["a"]], sigma=0),
])
def test_bad_options_are_value_errors(call):
    with pytest.raises(ValueError):
        call()


def test_corpora_may_be_any_iterable_but_a_string():
    hyps, refs = ["no effusion", "normal heart"], [["no effusion"], ["normal heart size"]]
    expected = corpus_bleu(hyps, refs, max_n=2)
    assert corpus_bleu(tuple(hyps), (r for r in refs), max_n=2) == expected
    assert corpus_rouge_l(iter(hyps), [r[0] for r in refs]) == corpus_rouge_l(hyps, [r[0] for r in refs])
    with pytest.raises(TypeError, match="single string"):
        corpus_rouge_l("no effusion", ["no effusion"])
    with pytest.raises(TypeError):
        cider_d(42, [["a"]])


def test_scores_stay_in_range():
    hyps = ["no pleural effusion", "heart heart heart", "", "the lungs are clear"]
    refs = [["no effusion"], ["heart size is normal"], ["clear"], ["the lungs are clear", "lungs clear"]]
    for h, r in zip(hyps, refs):
        for smoothing in ("none", "exp", "floor", "add-k"):
            assert 0.0 <= bleu(h, r, smoothing=smoothing) <= 1.0
        assert all(0.0 <= v <= 1.0 for v in rouge_l(h, r[0]))
        assert 0.0 <= meteor(h, r) <= 1.0
    assert 0.0 <= cider_d(hyps, refs) <= 10.0
    assert corpus_meteor(hyps, refs) == pytest.approx(sum(meteor(h, r) for h, r in zip(hyps, refs)) / 4)


def test_docstring_examples_run():
    import doctest
    import sys

    for name in ("bleu", "rouge", "meteor", "tokenize", "cider"):
        # dlmi.text.bleu / dlmi.text.meteor are the functions; the modules live in sys.modules.
        result = doctest.testmod(sys.modules[f"dlmi.text.{name}"])
        assert result.failed == 0, name
