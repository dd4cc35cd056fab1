"""Word embeddings learned from context: one-hot, sliding windows, skip-gram, CBOW (unit 08).

Mikolov et al. (2013a) "Efficient Estimation of Word Representations in Vector Space" and
Mikolov et al. (2013b) "Distributed Representations of Words and Phrases and their Compositionality".

- :mod:`.onehot`      ``Vocab``, ``one_hot`` — the starting point, and why it is not enough
- :mod:`.windows`     ``skipgram_pairs``, ``cbow_examples`` (the lecture's table) and their tensor versions
- :mod:`.word2vec`    ``SkipGram``, ``CBOW``, full-softmax and negative-sampling losses, noise
                      distribution, subsampling
- :mod:`.trainer`     ``train_word2vec`` — the fast batched trainer
- :mod:`.similarity`  cosine neighbours, analogies, ``WordVectors``
"""
from .onehot import Vocab, one_hot, one_hot_words
from .similarity import WordVectors, analogy_vector, cosine_similarity, nearest_neighbors, nearest_neighbours
from .trainer import encode_corpus, train_word2vec
from .windows import cbow_context_ids, cbow_examples, skipgram_pair_ids, skipgram_pairs
from .word2vec import (CBOW, NegativeSampler, SkipGram, full_softmax_loss, keep_probabilities,
                       negative_sampling_grads, negative_sampling_loss, noise_distribution)

__all__ = [
    "Vocab", "one_hot", "one_hot_words",
    "skipgram_pairs", "cbow_examples", "skipgram_pair_ids", "cbow_context_ids",
    "SkipGram", "CBOW", "full_softmax_loss", "negative_sampling_loss", "negative_sampling_grads",
    "noise_distribution", "keep_probabilities", "NegativeSampler",
    "train_word2vec", "encode_corpus",
    "WordVectors", "cosine_similarity", "nearest_neighbours", "nearest_neighbors", "analogy_vector",
]
