"""CIDEr-D (Vedantam et al. 2015) against (1) an independent dense implementation written from the
paper's equations, with the three conventions pycocoevalcap's ``Cider`` uses (raw-count TF,
document frequency floored at 1, length = number of bigrams), and (2) a value pycocoevalcap's
scorer published in SummEval's test suite (Fabbri et al. 2021, evaluation/tests/test_cider.py)."""
import math
import random

import numpy as np
import pytest

from dlmi.text import cider_d

WORDS = ("the heart size is normal no pleural effusion effusions focal opacity opacities lungs are "
         "clear pneumothorax mild cardiomegaly stable left right base xxxx .").split()


def dense_cider_d(hyps, refs_per_hyp, n=4, sigma=6.0):
    """CIDEr-D from the paper's formulas with vectors over the corpus's n-gram vocabulary.

    CIDEr-D_n(c, S) = 10/m sum_j exp(-(l(c)-l(s_j))^2 / 2 sigma^2) * min(g(c), g(s_j)) . g(s_j) / (|g(c)| |g(s_j)|)
    g_k(s) = tf_k(s) * log(|I| / max(1, df_k)),   CIDEr-D = mean_n CIDEr-D_n
    """
    def grams(tokens, k):
        return [tuple(tokens[i:i + k]) for i in range(len(tokens) - k + 1)]

    hyps = [h.split() for h in hyps]
    refs_per_hyp = [[r.split() for r in refs] for refs in refs_per_hyp]
    scores = np.zeros(len(hyps))
    for k in range(1, n + 1):
        vocab = sorted({g for s in hyps + [r for refs in refs_per_hyp for r in refs] for g in grams(s, k)})
        index = {g: i for i, g in enumerate(vocab)}

        def tf(tokens):
            v = np.zeros(len(vocab))
            for g in grams(tokens, k):
                v[index[g]] += 1
            return v

        df = np.zeros(len(vocab))
        for refs in refs_per_hyp:
            df += np.clip(sum(tf(r) for r in refs), 0, 1)
        idf = np.log(len(hyps)) - np.log(np.maximum(df, 1.0))
        for e, (hyp, refs) in enumerate(zip(hyps, refs_per_hyp)):
            gc = tf(hyp) * idf
            total = 0.0
            for ref in refs:
                gs = tf(ref) * idf
                dot = float(np.minimum(gc, gs) @ gs)
                norms = np.linalg.norm(gc) * np.linalg.norm(gs)
                cos = dot / norms if norms > 0 else dot
                l_c = max(len(hyp) - 1, 0) if n >= 2 else 0
                l_s = max(len(ref) - 1, 0) if n >= 2 else 0
                total += math.exp(-((l_c - l_s) ** 2) / (2 * sigma ** 2)) * cos
            scores[e] += 10.0 * total / len(refs) / n
    return float(scores.mean()), scores


def random_corpus(rng, size):
    hyps, refs = [], []
    for _ in range(size):
        base = [rng.choice(WORDS) for _ in range(rng.randint(0, 14))]
        hyp = list(base)
        for _ in range(rng.randint(0, 3)):
            if hyp and rng.random() < 0.5:
                del hyp[rng.randrange(len(hyp))]
            else:
                hyp.insert(rng.randint(0, len(hyp)), rng.choice(WORDS))
        hyps.append(" ".join(hyp))
        refs.append([" ".join(base[: rng.randint(0, len(base))] + [rng.choice(WORDS) for _ in range(rng.randint(0, 6))])
                     for _ in range(rng.randint(1, 5))])
    return hyps, refs


def test_cider_d_equals_dense_paper_implementation():
    rng = random.Random(5)
    for trial in range(60):
        hyps, refs = random_corpus(rng, rng.randint(2, 30))
        expected_mean, expected_scores = dense_cider_d(hyps, refs)
        mean, scores = cider_d(hyps, refs, per_hypothesis=True)
        assert mean == pytest.approx(expected_mean, abs=1e-9)
        assert scores == pytest.approx(list(expected_scores), abs=1e-9)


@pytest.mark.parametrize("n,sigma", [(1, 6.0), (2, 6.0), (3, 2.0), (4, 1.0)])
def test_cider_d_orders_and_sigma(n, sigma):
    rng = random.Random(17 + n)
    for _ in range(15):
        hyps, refs = random_corpus(rng, rng.randint(2, 20))
        assert cider_d(hyps, refs, n=n, sigma=sigma) == pytest.approx(dense_cider_d(hyps, refs, n, sigma)[0], abs=1e-9)


def test_cider_d_published_pycocoevalcap_value():
    # SummEval's test runs pycocoevalcap's CiderScorer (n=4, sigma=6) on these whitespace-tokenized
    # sentences, one reference each, and pins 2.5759014911864084.
    cands = [
        "28-year-old chef found dead in San Francisco mall",
        "A 28-year-old chef who recently moved to San Francisco was found dead in the staircase of a local shopping center.",
        "The victim's brother said he cannot imagine anyone who would want to harm him,\"Finally, it went uphill again at him.\"",
    ]
    refs = [
        "28-Year-Old Chef Found Dead at San Francisco Mall",
        "A 28-year-old chef who had recently moved to San Francisco was found dead in the stairwell of a local mall this week.",
        "But the victim's brother says he can't think of anyone who would want to hurt him, saying, \"Things were finally going well for him.\"",
    ]
    assert cider_d(cands, refs) == pytest.approx(2.5759014911864084, abs=1e-9)
    assert cider_d(cands, [[r] for r in refs]) == pytest.approx(2.5759014911864084, abs=1e-9)


def test_cider_d_properties():
    refs = [["no pleural effusion", "no effusion"], ["mild cardiomegaly", "the heart is enlarged"],
            ["small left pneumothorax", "left pneumothorax"]]
    perfect = ["no pleural effusion", "mild cardiomegaly", "small left pneumothorax"]
    mean, scores = cider_d(perfect, refs, per_hypothesis=True)
    assert all(s > 0 for s in scores) and 0 < mean <= 10
    # Clipping: repeating a matching n-gram does not raise the score.
    repeated = ["no pleural effusion no pleural effusion no pleural effusion"] + perfect[1:]
    assert cider_d(repeated, refs, per_hypothesis=True)[1][0] < scores[0]
    # The corpus IDF of a one-example corpus is 0 everywhere, so CIDEr is 0 (as in pycocoevalcap).
    assert cider_d(["the cat sat on the mat"], [["the cat sat on the mat"]]) == 0.0
    # An empty hypothesis scores 0 but leaves the others alone.
    _, with_empty = cider_d(["", perfect[1], perfect[2]], refs, per_hypothesis=True)
    assert with_empty[0] == 0.0 and with_empty[1] == pytest.approx(scores[1])


def test_cider_d_length_penalty():
    refs = [["no acute disease", "no acute cardiopulmonary disease"], ["heart size is normal", "normal heart size"]]
    short = cider_d(["no acute disease", "heart size is normal"], refs, per_hypothesis=True)[1][0]
    padded = cider_d(["no acute disease " + "seen " * 8, "heart size is normal"], refs, per_hypothesis=True)[1][0]
    assert padded < short
