"""dlmi.embed: vocabulary, one-hot, and the lecture's sliding-window tables."""
import random

import pytest
import torch

from dlmi.embed import (Vocab, cbow_context_ids, cbow_examples, one_hot, one_hot_words, skipgram_pair_ids,
                        skipgram_pairs)

SENTENCE = "natural language processing and machine learning is fun and exciting".split()

# The lecture's table for window 2: each center word left to right, its context words left to right.
LECTURE_PAIRS = [
    ("natural", "language"), ("natural", "processing"),
    ("language", "natural"), ("language", "processing"), ("language", "and"),
    ("processing", "natural"), ("processing", "language"), ("processing", "and"), ("processing", "machine"),
    ("and", "language"), ("and", "processing"), ("and", "machine"), ("and", "learning"),
    ("machine", "processing"), ("machine", "and"), ("machine", "learning"), ("machine", "is"),
    ("learning", "and"), ("learning", "machine"), ("learning", "is"), ("learning", "fun"),
    ("is", "machine"), ("is", "learning"), ("is", "fun"), ("is", "and"),
    ("fun", "learning"), ("fun", "is"), ("fun", "and"), ("fun", "exciting"),
    ("and", "is"), ("and", "fun"), ("and", "exciting"),
    ("exciting", "fun"), ("exciting", "and"),
]

LECTURE_CBOW = [
    (["language", "processing"], "natural"),
    (["natural", "processing", "and"], "language"),
    (["natural", "language", "and", "machine"], "processing"),
    (["language", "processing", "machine", "learning"], "and"),
    (["processing", "and", "learning", "is"], "machine"),
    (["and", "machine", "is", "fun"], "learning"),
    (["machine", "learning", "fun", "and"], "is"),
    (["learning", "is", "and", "exciting"], "fun"),
    (["is", "fun", "exciting"], "and"),
    (["fun", "and"], "exciting"),
]


def test_skipgram_pairs_reproduce_the_lecture_table_exactly():
    assert skipgram_pairs(SENTENCE, 2) == LECTURE_PAIRS


def test_cbow_examples_reproduce_the_lecture_table_exactly():
    assert cbow_examples(SENTENCE, 2) == LECTURE_CBOW


def test_window_one_and_a_window_wider_than_the_sentence():
    assert skipgram_pairs(["a", "b", "c"], 1) == [("a", "b"), ("b", "a"), ("b", "c"), ("c", "b")]
    # every ordered pair of distinct positions once
    assert skipgram_pairs(["a", "b", "c"], 10) == [("a", "b"), ("a", "c"), ("b", "a"), ("b", "c"),
                                                   ("c", "a"), ("c", "b")]
    assert skipgram_pairs(["solo"], 3) == []
    assert cbow_examples(["solo"], 3) == [([], "solo")]


@pytest.mark.parametrize("seed", range(5))
def test_vectorised_pairs_equal_the_readable_ones(seed):
    rng = random.Random(seed)
    tokens = [rng.choice("abcdefg") for _ in range(rng.randint(1, 30))]
    window = rng.randint(1, 6)
    vocab = Vocab.from_corpus(tokens)
    ids = vocab.encode(tokens)
    c, o = skipgram_pair_ids(ids, window)
    assert list(zip(vocab.decode(c), vocab.decode(o))) == skipgram_pairs(tokens, window)
    ctx, mask, centers = cbow_context_ids(ids, window)
    got = [(vocab.decode(row[m]), vocab.itos[int(ce)]) for row, m, ce in zip(ctx, mask, centers)]
    assert got == [ex for ex in cbow_examples(tokens, window) if ex[0]]


def test_pairs_never_cross_sentences_and_respect_the_reduced_window():
    ids = torch.tensor([0, 1, 2, 3, 4, 5])
    sent = torch.tensor([0, 0, 0, 1, 1, 1])
    c, o = skipgram_pair_ids(ids, 5, sentence_ids=sent)
    assert all((int(a) < 3) == (int(b) < 3) for a, b in zip(c, o))
    assert len(c) == 2 * 6  # 3 words per sentence: 3*2 ordered pairs each
    c, o = skipgram_pair_ids(ids, 3, reduced_window=torch.tensor([1, 1, 1, 1, 1, 1]))
    assert (c - o).abs().max() == 1


def test_vocab_is_sorted_by_frequency_with_first_appearance_breaking_ties():
    v = Vocab.from_corpus([["b", "a", "c", "a"], ["c", "d"]])
    assert v.itos == ["a", "c", "b", "d"] and v.counts.tolist() == [2, 2, 1, 1]
    v2 = Vocab.from_corpus([["b", "a", "c", "a"], ["c", "d"]], min_count=2)
    assert v2.itos == ["a", "c"]
    assert v2.encode(["a", "x", "c"], unknown="skip").tolist() == [0, 1]


def test_one_hot_rows_are_unit_vectors_and_mutually_orthogonal():
    oh = one_hot(torch.tensor([2, 0, 3]), 4)
    assert oh.tolist() == [[0, 0, 1, 0], [1, 0, 0, 0], [0, 0, 0, 1]]
    v = Vocab(["man", "woman", "king", "queen"])
    m = one_hot_words(["man", "woman", "king", "queen"], v)
    assert torch.equal(m @ m.T, torch.eye(4))  # every pair equally far apart: no notion of similarity


# ---- bad input -----------------------------------------------------------------------------------


@pytest.mark.parametrize("fn", [skipgram_pairs, cbow_examples])
def test_bad_windows_and_tokens_raise_clear_errors(fn):
    with pytest.raises(ValueError, match="window must be >= 1"):
        fn(SENTENCE, 0)
    with pytest.raises(ValueError, match="window must be >= 1"):
        fn(SENTENCE, -2)
    with pytest.raises(TypeError, match="window must be an int"):
        fn(SENTENCE, 1.5)
    with pytest.raises(ValueError, match="empty"):
        fn([], 2)
    with pytest.raises(TypeError, match="only str tokens.*int"):
        fn(["a", 3, "b"], 2)
    with pytest.raises(TypeError, match=r"split it first"):
        fn("natural language processing", 2)


def test_bad_ids_and_vocab_lookups_raise_clear_errors():
    with pytest.raises(ValueError, match=r"1-D \(n_words,\)"):
        skipgram_pair_ids(torch.zeros(2, 3, dtype=torch.long), 2)
    with pytest.raises(TypeError, match="integer"):
        skipgram_pair_ids(torch.zeros(4), 2)
    with pytest.raises(ValueError, match="empty"):
        skipgram_pair_ids(torch.zeros(0, dtype=torch.long), 2)
    with pytest.raises(ValueError, match="window must be >= 1"):
        cbow_context_ids(torch.arange(3), 0)
    v = Vocab.from_corpus(SENTENCE)
    with pytest.raises(KeyError, match="'pneumothorax' is not in the vocabulary"):
        v.encode(["natural", "pneumothorax"])
    with pytest.raises(ValueError, match="empty"):
        Vocab.from_corpus([])
    with pytest.raises(ValueError, match="min_count"):
        Vocab.from_corpus(SENTENCE, min_count=5)
    with pytest.raises(ValueError, match=r"\[0, 4\)"):
        one_hot(torch.tensor([4]), 4)
