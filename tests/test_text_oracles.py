"""dlmi.text BLEU / ROUGE-L / METEOR against the reference implementations the field uses:
sacrebleu (BLEU, tokenize="none"), Google's rouge-score (rougeL) and nltk's meteor_score
(with an empty WordNet, since WordNet cannot be downloaded here), on thousands of seeded,
report-like sentence pairs that contain inflected words for METEOR's stem stage."""
import logging
import random

import pytest

from dlmi.text import bleu, corpus_bleu, corpus_rouge_l, meteor, rouge_l, rouge_tokenize

sacrebleu = pytest.importorskip("sacrebleu")
rouge_scorer = pytest.importorskip("rouge_score.rouge_scorer")
nltk_meteor = pytest.importorskip("nltk.translate.meteor_score")

logging.getLogger("sacrebleu").setLevel(logging.ERROR)  # "use effective_order" advice on every sentence

# Report words, with inflected siblings so that exact and stem matches both occur.
WORDS = (
    "the heart size is normal no pleural effusion effusions opacity opacities opacification "
    "enlarged enlarging enlargement nodule nodules nodular consolidation consolidated atelectasis "
    "lung lungs are clear of focal airspace disease pneumothorax mild mildly left right base bases "
    "within limits stable unchanged there and with without XXXX . , cardiomediastinal silhouette "
    "Heart Lungs No"
).split()
INFLECT = {
    "effusion": "effusions", "effusions": "effusion", "opacity": "opacities", "opacities": "opacity",
    "enlarged": "enlarging", "enlarging": "enlarged", "nodule": "nodules", "nodules": "nodule",
    "lung": "lungs", "lungs": "lung", "base": "bases", "bases": "base", "mild": "mildly",
    "consolidation": "consolidated", "normal": "normally", "heart": "Heart", "no": "No",
}


def perturb(rng: random.Random, tokens: list) -> list:
    """A reference-like variant: inflect, drop, insert, swap and move words, so that overlaps
    of every n-gram order, reorderings (chunks) and stem-only matches all occur."""
    out = list(tokens)
    for _ in range(rng.randint(0, 4)):
        op = rng.random()
        if not out:
            out.append(rng.choice(WORDS))
        elif op < 0.3:
            k = rng.randrange(len(out))
            out[k] = INFLECT.get(out[k], out[k])
        elif op < 0.45:
            del out[rng.randrange(len(out))]
        elif op < 0.65:
            out.insert(rng.randint(0, len(out)), rng.choice(WORDS))
        elif op < 0.8:
            i, j = rng.randrange(len(out)), rng.randrange(len(out))
            out[i], out[j] = out[j], out[i]
        else:
            k = rng.randint(0, len(out))
            out = out[k:] + out[:k]  # "on the mat sat the cat"-style rotation
    return out


def sentence(rng: random.Random, low=0, high=20) -> list:
    return [rng.choice(WORDS) for _ in range(rng.randint(low, high))]


def make_pairs(seed: int, count: int, max_refs: int = 4):
    """(hypothesis, [references]) strings; a few empty hypotheses and references included."""
    rng = random.Random(seed)
    pairs = []
    for _ in range(count):
        base = sentence(rng, 0, 20)
        hyp = perturb(rng, base) if rng.random() < 0.8 else sentence(rng, 0, 20)
        refs = [perturb(rng, base) for _ in range(rng.randint(1, max_refs))]
        pairs.append((" ".join(hyp), [" ".join(r) for r in refs]))
    return pairs


PAIRS = make_pairs(seed=2024, count=2000)


def sacre(smoothing, max_n=4, effective_order=False, smooth_value=None):
    return sacrebleu.BLEU(tokenize="none", force=True, smooth_method=smoothing, smooth_value=smooth_value,
                          max_ngram_order=max_n, effective_order=effective_order)


# ---------------------------------------------------------------- BLEU

@pytest.mark.parametrize("smoothing", ["none", "exp", "floor", "add-k"])
def test_sentence_bleu_equals_sacrebleu(smoothing):
    oracle = sacre(smoothing)
    nonzero = 0
    for hyp, refs in PAIRS:
        expected = oracle.sentence_score(hyp, refs).score / 100
        assert bleu(hyp, refs, smoothing=smoothing) == pytest.approx(expected, abs=1e-6), (hyp, refs)
        nonzero += expected > 0
    assert nonzero > 300  # the pairs really exercise the non-trivial path


@pytest.mark.parametrize("max_n,effective_order,smoothing,value", [
    (1, False, "none", None), (2, False, "none", None), (3, True, "none", None),
    (4, True, "exp", None), (4, False, "floor", 0.3), (4, False, "add-k", 2), (2, True, "add-k", 0.5),
])
def test_sentence_bleu_orders_and_options(max_n, effective_order, smoothing, value):
    oracle = sacre(smoothing, max_n, effective_order, value)
    for hyp, refs in PAIRS[:400]:
        expected = oracle.sentence_score(hyp, refs).score / 100
        got = bleu(hyp, refs, max_n=max_n, smoothing=smoothing, smoothing_value=value, effective_order=effective_order)
        assert got == pytest.approx(expected, abs=1e-6), (hyp, refs)


def reference_streams(refs_per_hyp):
    """sacrebleu wants one stream per reference position; None marks a missing reference."""
    width = max(len(r) for r in refs_per_hyp)
    return [[refs[k] if k < len(refs) else None for refs in refs_per_hyp] for k in range(width)]


@pytest.mark.parametrize("smoothing", ["none", "exp", "floor", "add-k"])
def test_corpus_bleu_equals_sacrebleu(smoothing):
    for start in range(0, 2000, 400):  # five corpora of 400 sentences, 1-4 references each
        chunk = PAIRS[start:start + 400]
        hyps, refs = [h for h, _ in chunk], [r for _, r in chunk]
        expected = sacre(smoothing).corpus_score(hyps, reference_streams(refs)).score / 100
        assert corpus_bleu(hyps, refs, smoothing=smoothing) == pytest.approx(expected, abs=1e-6)
        assert expected > 0.05


def test_brevity_penalty_uses_closest_reference_shorter_on_tie():
    # hypothesis of 4 words, references of 3 and 5 words: tie, sacrebleu takes 3 (no penalty).
    hyp = "the heart is normal"
    refs = ["the heart normal", "the heart is quite normal"]
    assert bleu(hyp, refs, max_n=1) == pytest.approx(sacre("none", 1).sentence_score(hyp, refs).score / 100, abs=1e-12)
    assert bleu(hyp, refs, max_n=1) == pytest.approx(1.0)
    short = "the heart"
    import math
    assert bleu(short, ["the heart is normal"], max_n=1) == pytest.approx(math.exp(1 - 4 / 2))


def test_clipping_counts_a_word_at_most_as_often_as_in_one_reference():
    assert bleu("the the the the", ["the heart", "the lung"], max_n=1) == pytest.approx(0.25)


def test_tokenize_callable_and_token_lists():
    refs = ["Heart size is normal."]
    assert bleu("heart size is normal .", refs) == 0.0  # whitespace tokens: "normal." != "normal", case counts
    assert bleu("heart size is normal .", refs, tokenize=lambda s: rouge_tokenize(s)) == pytest.approx(1.0)
    assert bleu(["heart", "size", "is", "normal"], [["heart", "size", "is", "normal"]]) == pytest.approx(1.0)


# ---------------------------------------------------------------- ROUGE-L

class WhitespaceTokenizer:
    """rouge-score accepts any object with tokenize(text); this one makes it see our tokens."""
    def tokenize(self, text):
        return text.split()


def test_rouge_l_equals_rouge_score_on_whitespace_tokens():
    scorer = rouge_scorer.RougeScorer(["rougeL"], tokenizer=WhitespaceTokenizer())
    for hyp, refs in PAIRS:
        expected = scorer.score(refs[0], hyp)["rougeL"]  # rouge-score: target (reference) first
        got = rouge_l(hyp, refs[0])
        assert got == pytest.approx((expected.precision, expected.recall, expected.fmeasure), abs=1e-12), (hyp, refs[0])


def test_rouge_l_with_rouge_tokenize_equals_rouge_score_default():
    scorer = rouge_scorer.RougeScorer(["rougeL"])  # lower-cases, strips non-alphanumerics
    rng = random.Random(7)
    texts = ["Heart size is normal. XXXX XXXX are within normal limits.", "No pneumothorax; lungs clear!",
             "T12 compression (mild), 8mm nodule.", "  ", "..."]
    for hyp, refs in PAIRS[:600]:
        hyp = hyp + " " + rng.choice(texts)
        ref = rng.choice(texts) + " " + refs[0]
        expected = scorer.score(ref, hyp)["rougeL"]
        got = rouge_l(hyp, ref, tokenize=rouge_tokenize)
        assert got == pytest.approx((expected.precision, expected.recall, expected.fmeasure), abs=1e-12)


def test_lcs_matches_dynamic_programming_on_long_sequences():
    from dlmi.text import lcs_length
    rng = random.Random(3)
    for _ in range(200):
        a = [rng.choice("abcde") for _ in range(rng.randint(0, 150))]
        b = [rng.choice("abcde") for _ in range(rng.randint(0, 150))]
        table = [[0] * (len(b) + 1) for _ in range(len(a) + 1)]
        for i in range(1, len(a) + 1):
            for j in range(1, len(b) + 1):
                table[i][j] = table[i - 1][j - 1] + 1 if a[i - 1] == b[j - 1] else max(table[i - 1][j], table[i][j - 1])
        assert lcs_length(a, b) == table[-1][-1]


def test_corpus_rouge_l_is_the_mean_of_pairs():
    hyps, refs = [h for h, _ in PAIRS[:300]], [r[0] for _, r in PAIRS[:300]]
    pairs = [rouge_l(h, r) for h, r in zip(hyps, refs)]
    mean = tuple(sum(p[k] for p in pairs) / len(pairs) for k in range(3))
    assert corpus_rouge_l(hyps, refs) == pytest.approx(mean, abs=1e-12)


# ---------------------------------------------------------------- METEOR

class EmptyWordNet:
    """Stands in for nltk's WordNet (not downloadable here): no synonyms for any word."""
    def synsets(self, word):
        return []


class FakeLemma:
    def __init__(self, name):
        self._name = name

    def name(self):
        return self._name


class FakeSynset:
    def __init__(self, names):
        self._names = names

    def lemmas(self):
        return [FakeLemma(n) for n in self._names]


class TableWordNet:
    """A tiny WordNet: synsets(word) from a table, for nltk's synonym stage."""
    def __init__(self, table):
        self.table = table

    def synsets(self, word):
        return [FakeSynset(self.table[word])] if word in self.table else []


def test_meteor_equals_nltk_without_synonyms():
    wordnet = EmptyWordNet()
    stem_only = 0
    for hyp, refs in PAIRS:
        expected = nltk_meteor.meteor_score([r.split() for r in refs], hyp.split(), wordnet=wordnet)
        got = meteor(hyp, refs)
        assert got == pytest.approx(expected, abs=1e-6), (hyp, refs)
        exact_only = meteor(hyp, refs, stemmer=None)
        stem_only += exact_only != got
    assert stem_only > 100  # the stem stage mattered for many pairs


@pytest.mark.parametrize("alpha,beta,gamma", [(0.5, 1.0, 0.3), (0.85, 2.0, 0.6), (1.0, 3.0, 0.5), (0.0, 3.0, 0.5)])
def test_meteor_parameters_equal_nltk(alpha, beta, gamma):
    wordnet = EmptyWordNet()
    for hyp, refs in PAIRS[:300]:
        expected = nltk_meteor.meteor_score([r.split() for r in refs], hyp.split(), wordnet=wordnet,
                                            alpha=alpha, beta=beta, gamma=gamma)
        assert meteor(hyp, refs, alpha=alpha, beta=beta, gamma=gamma) == pytest.approx(expected, abs=1e-6)


def test_meteor_synonyms_equal_nltk_with_the_same_synonym_table():
    # Words whose Porter stem is the word itself, so that nltk (which looks up synonyms of the
    # stems the stem stage leaves) and dlmi (which looks up the words) see the same thing.
    table = {"heart": ["cardiac"], "cardiac": ["heart"], "mass": ["lesion"], "lesion": ["mass"],
             "fluid": ["liquid"], "liquid": ["fluid"]}
    words = "heart cardiac mass lesion fluid liquid the is no left right lung seen small".split()
    rng = random.Random(11)
    wordnet = TableWordNet(table)
    used = 0
    for _ in range(1000):
        hyp = [rng.choice(words) for _ in range(rng.randint(0, 12))]
        refs = [[rng.choice(words) for _ in range(rng.randint(0, 12))] for _ in range(rng.randint(1, 3))]
        expected = nltk_meteor.meteor_score(refs, hyp, wordnet=wordnet)
        got = meteor(hyp, refs, synonyms=table)
        assert got == pytest.approx(expected, abs=1e-6), (hyp, refs)
        used += got != meteor(hyp, refs)
    assert used > 60
    # A callable gives the same as the mapping.
    assert meteor("cardiac size", ["heart size"], synonyms=lambda w: table.get(w, ())) == \
        meteor("cardiac size", ["heart size"], synonyms=table) == meteor("heart size", ["heart size"])


def test_meteor_mapping_synonyms_work_both_ways():
    assert meteor("fluid", ["effusion"], synonyms={"effusion": ["fluid"]}) > 0
    assert meteor("effusion", ["fluid"], synonyms={"effusion": ["fluid"]}) > 0
    assert meteor("effusion", ["fluid"]) == 0.0


def test_meteor_stem_stage_matches_inflections():
    assert meteor("small effusions", ["small effusion"]) == pytest.approx(meteor("small effusion", ["small effusion"]))
    assert meteor("small effusions", ["small effusion"], stemmer=None) < meteor("small effusions", ["small effusion"])
    assert meteor("opacities", ["opacity"]) > 0 and meteor("enlarging", ["enlarged"]) > 0
