"""dlmi.embed: skip-gram / CBOW models, losses, noise distribution, subsampling, training, similarity."""
import math
import random

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from dlmi.embed import (CBOW, NegativeSampler, SkipGram, Vocab, WordVectors, cosine_similarity,
                        keep_probabilities, negative_sampling_grads, negative_sampling_loss, nearest_neighbours,
                        noise_distribution, one_hot, train_word2vec)
from dlmi.embed.trainer import sgns_dense_update, sgns_sparse_update
from dlmi.embed.word2vec import _alias_table


@pytest.fixture(autouse=True)
def _one_thread():
    """One intra-op thread: the CI box has 2 shared cores, where a second thread only adds contention."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)

# ---- the embedding is a linear layer on one-hot input -----------------------------------------------


def test_embedding_lookup_equals_one_hot_matmul_in_value_and_gradient():
    torch.manual_seed(0)
    model = SkipGram(vocab_size=11, dim=4)
    with torch.no_grad():
        model.embed_in.weight.normal_()
    ids = torch.tensor([3, 0, 10, 3])
    looked_up = model(ids)
    via_matmul = model.one_hot_forward(one_hot(ids, 11))
    assert torch.equal(looked_up, via_matmul)  # 1*w + 0*rest is exact in floating point
    # and the same as an nn.Linear without bias whose weight is W^T
    linear = torch.nn.Linear(11, 4, bias=False)
    linear.weight.data = model.embed_in.weight.data.T.clone()
    assert torch.allclose(linear(one_hot(ids, 11)), looked_up)
    # gradients: only the looked-up rows receive any, and they agree
    g = torch.randn(4, 4)
    (looked_up * g).sum().backward()
    grad_lookup = model.embed_in.weight.grad.clone()
    model.zero_grad()
    (model.one_hot_forward(one_hot(ids, 11)) * g).sum().backward()
    assert torch.allclose(grad_lookup, model.embed_in.weight.grad)
    assert grad_lookup[[1, 2, 4, 5, 6, 7, 8, 9]].abs().sum() == 0


# ---- negative sampling: value, gradient ------------------------------------------------------------


def test_negative_sampling_loss_matches_a_hand_computed_value():
    v = torch.tensor([[1.0, 0.0]])
    u_o = torch.tensor([[0.5, 1.0]])                        # s_o = 0.5
    u_neg = torch.tensor([[[1.0, 1.0], [-2.0, 0.5]]])       # s_1 = 1, s_2 = -2
    # -log sigma(0.5) - log sigma(-1) - log sigma(2), with -log sigma(x) = log(1 + e^-x)
    by_hand = math.log(1 + math.exp(-0.5)) + math.log(1 + math.exp(1.0)) + math.log(1 + math.exp(-2.0))
    assert by_hand == pytest.approx(1.9142668, abs=1e-6)
    assert negative_sampling_loss(v, u_o, u_neg).item() == pytest.approx(by_hand, abs=1e-6)


def test_negative_sampling_gradients_equal_autograd():
    torch.manual_seed(1)
    B, K, D = 7, 4, 5
    v = torch.randn(B, D, dtype=torch.float64, requires_grad=True)
    u_o = torch.randn(B, D, dtype=torch.float64, requires_grad=True)
    u_n = torch.randn(B, K, D, dtype=torch.float64, requires_grad=True)
    negative_sampling_loss(v, u_o, u_n, reduction="sum").backward()
    d_v, d_o, d_n = negative_sampling_grads(v.detach(), u_o.detach(), u_n.detach())
    torch.testing.assert_close(d_v, v.grad)
    torch.testing.assert_close(d_o, u_o.grad)
    torch.testing.assert_close(d_n, u_n.grad)


def test_the_trainers_sparse_update_equals_the_dense_gradient_step():
    """sgns_sparse_update (SDDMM + SpMM) must do exactly what gather + negative_sampling_grads +
    scatter-add does, repeated rows included."""
    torch.manual_seed(2)
    V, D, B, K, lr = 6, 3, 9, 3, 0.1
    W_out = torch.randn(V, D, dtype=torch.float64)
    h = torch.randn(B, D, dtype=torch.float64)
    rows = torch.randint(0, V, (B, 1 + K))
    weight = torch.full((B, 1 + K), -lr, dtype=torch.float64)
    weight[0, 2] = 0.0                                      # a skipped noise word
    u = W_out[rows]
    # dense reference with the per-term weights
    score = (u * h[:, None]).sum(-1)
    g = torch.sigmoid(score)
    g[:, 0] -= 1
    g = g * weight
    ref_dh = (g[..., None] * u).sum(1)
    ref_W = W_out.clone().index_add_(0, rows.reshape(-1), (g[..., None] * h[:, None]).reshape(-1, D))
    W_new = W_out.clone()
    d_h, got_score = sgns_sparse_update(h, W_new, rows, weight)
    torch.testing.assert_close(got_score, score)
    torch.testing.assert_close(d_h, ref_dh)
    torch.testing.assert_close(W_new, ref_W)
    # with unit weights it is minus the gradient of the summed loss
    d_h1, _ = sgns_sparse_update(h, W_out.clone(), rows, -torch.ones(B, 1 + K, dtype=torch.float64))
    torch.testing.assert_close(d_h1, -negative_sampling_grads(h, u[:, 0], u[:, 1:])[0])


def test_sharing_one_hidden_row_between_consecutive_pairs_equals_repeating_it():
    """Skip-gram sends each center's vector once for all its context words (pairs_per_row)."""
    torch.manual_seed(5)
    V, D, K = 7, 4, 2
    h = torch.randn(3, D, dtype=torch.float64)
    per_row = torch.tensor([2, 0, 3])                                          # a center without pairs, too
    rows = torch.randint(0, V, (5, 1 + K))
    weight = torch.full((5, 1 + K), -0.1, dtype=torch.float64)
    W_shared = torch.randn(V, D, dtype=torch.float64)
    W_repeated = W_shared.clone()
    d_shared, s_shared = sgns_sparse_update(h, W_shared, rows, weight, pairs_per_row=per_row)
    d_rep, s_rep = sgns_sparse_update(h.repeat_interleave(per_row, 0), W_repeated, rows, weight)
    torch.testing.assert_close(s_shared, s_rep)
    torch.testing.assert_close(W_shared, W_repeated)
    summed = torch.zeros(3, D, dtype=torch.float64).index_add_(0, torch.arange(3).repeat_interleave(per_row), d_rep)
    torch.testing.assert_close(d_shared, summed)


@pytest.mark.parametrize("shared", [False, True])
@pytest.mark.parametrize("row_cap", [None, 3])
def test_sparse_and_dense_updates_agree(shared, row_cap):
    torch.manual_seed(6)
    V, D, K = 9, 5, 3
    per_row = torch.tensor([3, 1, 0, 4]) if shared else None
    R = 4 if shared else 8
    h = torch.randn(R, D, dtype=torch.float64)
    rows = torch.randint(0, V, (8, 1 + K))
    weight = -0.05 * torch.rand(8, 1 + K, dtype=torch.float64)
    W_a = torch.randn(V, D, dtype=torch.float64)
    W_b = W_a.clone()
    d_a, s_a = sgns_sparse_update(h, W_a, rows, weight, row_cap, per_row)
    d_b, s_b = sgns_dense_update(h, W_b, rows, weight, row_cap, per_row)
    torch.testing.assert_close(s_a, s_b)
    torch.testing.assert_close(d_a, d_b)
    torch.testing.assert_close(W_a, W_b)


def test_row_cap_scales_only_rows_that_repeat_more_than_the_cap():
    torch.manual_seed(4)
    V, D = 5, 3
    h = torch.randn(6, D, dtype=torch.float64)
    rows = torch.tensor([[0, 1], [0, 2], [0, 3], [0, 1], [4, 2], [0, 3]])   # row 0 five times, others <= 2
    weight = torch.full((6, 2), -0.5, dtype=torch.float64)
    start = torch.randn(V, D, dtype=torch.float64)
    plain, capped = start.clone(), start.clone()
    d_plain, _ = sgns_sparse_update(h, plain, rows, weight)
    d_capped, _ = sgns_sparse_update(h, capped, rows, weight, row_cap=2)
    torch.testing.assert_close(d_plain, d_capped)                            # h's update is untouched
    torch.testing.assert_close(capped[1:] - start[1:], plain[1:] - start[1:])
    torch.testing.assert_close(capped[0] - start[0], (plain[0] - start[0]) * 2 / 5)


# ---- noise distribution and subsampling --------------------------------------------------------------


def test_noise_distribution_is_unigram_to_the_three_quarters_normalised():
    counts = torch.tensor([1, 16, 81, 256])                 # ^0.75 -> 1, 8, 27, 64
    assert noise_distribution(counts).tolist() == pytest.approx([1 / 100, 8 / 100, 27 / 100, 64 / 100])
    c = torch.tensor([5.0, 3.0, 1000.0])
    expected = c ** 0.75 / (c ** 0.75).sum()
    torch.testing.assert_close(noise_distribution(c), expected.double())


def test_negative_sampler_draws_from_the_noise_distribution():
    counts = torch.tensor([1000, 200, 50, 50, 7, 1, 1])
    probs = noise_distribution(counts)
    accept, alias = _alias_table(probs)
    # the alias table encodes the distribution exactly
    rebuilt = accept.clone() + torch.zeros_like(accept).index_add_(0, alias, 1 - accept)
    torch.testing.assert_close(rebuilt / len(counts), probs)
    n = 400_000
    draws = NegativeSampler(counts).sample(n, generator=torch.Generator().manual_seed(0))
    freq = torch.bincount(draws, minlength=len(counts)).double() / n
    sd = (probs * (1 - probs) / n).sqrt()
    assert ((freq - probs).abs() <= 5 * sd + 1e-12).all(), (freq, probs)


def test_subsampling_keep_probabilities_follow_both_formulas():
    counts = torch.tensor([9_000, 900, 90, 9, 1], dtype=torch.float64)   # total 10,000
    f = counts / counts.sum()
    t = 1e-3
    paper = keep_probabilities(counts, t, formula="paper")
    torch.testing.assert_close(paper, torch.sqrt(t / f).clamp(max=1))
    assert paper[0].item() == pytest.approx(math.sqrt(1e-3 / 0.9))
    w2v = keep_probabilities(counts, t, formula="word2vec")
    torch.testing.assert_close(w2v, ((torch.sqrt(f / t) + 1) * t / f).clamp(max=1))
    assert w2v[1].item() == pytest.approx((math.sqrt(0.09 / 1e-3) + 1) * 1e-3 / 0.09)
    assert (w2v >= paper).all() and paper[-1] == 1 and w2v[-1] == 1      # rare words always kept
    assert keep_probabilities(counts, 0).tolist() == [1.0] * 5


def test_subsampling_and_noise_distribution_match_gensim():
    gensim = pytest.importorskip("gensim")
    rng = random.Random(0)
    words = [f"w{i}" for i in range(40)]
    weights = [1 / (i + 1) for i in range(40)]
    sentences = [rng.choices(words, weights, k=12) for _ in range(400)]
    model = gensim.models.Word2Vec(vector_size=4, min_count=1, sample=1e-2, negative=5, workers=1)
    model.build_vocab(sentences)
    counts = torch.tensor([model.wv.get_vecattr(w, "count") for w in model.wv.index_to_key])
    ours = keep_probabilities(counts, 1e-2, formula="gensim")
    theirs = torch.tensor([model.wv.get_vecattr(w, "sample_int") / 2**32 for w in model.wv.index_to_key])
    torch.testing.assert_close(ours, theirs.double(), atol=1e-8, rtol=0)
    cum = np.asarray(model.cum_table, dtype=np.float64)
    gensim_probs = np.diff(np.concatenate([[0.0], cum])) / cum[-1]
    np.testing.assert_allclose(noise_distribution(counts).numpy(), gensim_probs, atol=1e-8)


# ---- models -------------------------------------------------------------------------------------------


def test_cbow_hidden_is_the_mean_of_the_real_context_vectors_and_softmax_loss_is_cross_entropy():
    torch.manual_seed(3)
    model = CBOW(vocab_size=8, dim=3)
    with torch.no_grad():
        model.embed_in.weight.normal_()
        model.embed_out.weight.normal_()
    ctx = torch.tensor([[1, 2, 0, 0], [3, 4, 5, 6]])
    mask = torch.tensor([[True, True, False, False], [True] * 4])
    h = model(ctx, mask)
    W = model.embed_in.weight
    torch.testing.assert_close(h[0], (W[1] + W[2]) / 2)
    torch.testing.assert_close(h[1], W[3:7].mean(0))
    center = torch.tensor([7, 0])
    expected = F.cross_entropy(h @ model.embed_out.weight.T, center)
    torch.testing.assert_close(model.softmax_loss(ctx, center, mask), expected)
    sg = SkipGram(8, 3)
    with torch.no_grad():
        sg.embed_out.weight.normal_()
    probs = sg.logits(torch.tensor([2])).softmax(-1)
    assert probs.shape == (1, 8) and probs.sum().item() == pytest.approx(1.0)


def test_model_inputs_are_checked():
    model = SkipGram(5, 2)
    with pytest.raises(ValueError, match=r"\[0, 5\)"):
        model(torch.tensor([5]))
    with pytest.raises(TypeError, match="integer"):
        model(torch.tensor([1.0]))
    with pytest.raises(ValueError, match=r"\(batch, 5\)"):
        model.one_hot_forward(torch.zeros(2, 4))
    with pytest.raises(ValueError, match=r"\(batch, K\)"):
        model.negative_sampling_loss(torch.tensor([0, 1]), torch.tensor([1, 2]), torch.tensor([1, 2]))
    with pytest.raises(ValueError, match=r"\(batch, K, dim\)"):
        negative_sampling_loss(torch.zeros(2, 3), torch.zeros(2, 3), torch.zeros(2, 3))
    with pytest.raises(ValueError, match="positive"):
        SkipGram(0, 2)


# ---- training learns planted structure ---------------------------------------------------------------

TOPICS = [[f"t{t}w{i}" for i in range(5)] for t in range(4)]


def _topic_corpus(n_sentences=1500, seed=0):
    """Each sentence draws its words from one topic: words co-occur only with their topic-mates."""
    rng = random.Random(seed)
    return [[rng.choice(topic) for _ in range(8)] for topic in (rng.choice(TOPICS) for _ in range(n_sentences))]


def _neighbour_precision(wv, k=4):
    hits = 0
    for topic in TOPICS:
        for w in topic:
            hits += sum(n in topic for n, _ in wv.most_similar(w, topn=k))
    return hits / (k * sum(map(len, TOPICS)))


@pytest.mark.parametrize("sg,loss", [(True, "negative"), (False, "negative"), (True, "softmax")])
def test_word2vec_recovers_planted_cooccurrence_structure(sg, loss):
    """4 topics x 5 words; a sentence uses one topic. Every word's 4 nearest neighbours must be its
    topic-mates. (Without row_cap, the default batch diverges on this 20-word vocabulary.)"""
    corpus = _topic_corpus()
    wv = train_word2vec(corpus, sg=sg, loss=loss, vector_size=16, window=3, min_count=1, sample=0,
                        epochs=4, seed=0, device="cpu")
    assert _neighbour_precision(wv) >= 0.95, _neighbour_precision(wv)
    losses = wv.stats["loss"]
    assert losses[-1] < losses[0]
    assert wv.stats["words"] == 4 * 1500 * 8 and wv.stats["words_per_second"] > 0


def test_training_is_reproducible_given_the_seed():
    corpus = _topic_corpus(200)
    a = train_word2vec(corpus, vector_size=8, window=2, min_count=1, epochs=1, seed=3, device="cpu")
    b = train_word2vec(corpus, vector_size=8, window=2, min_count=1, epochs=1, seed=3, device="cpu")
    assert torch.equal(a.vectors, b.vectors)


def test_train_word2vec_rejects_bad_corpora_and_settings():
    with pytest.raises(ValueError, match="empty"):
        train_word2vec([], device="cpu")
    with pytest.raises(ValueError, match="empty"):
        train_word2vec([[], []], device="cpu")
    with pytest.raises(TypeError, match="str tokens"):
        train_word2vec([["a", 1]], device="cpu")
    with pytest.raises(ValueError, match="window must be >= 1"):
        train_word2vec([["a", "b"]], window=0, min_count=1, device="cpu")
    with pytest.raises(ValueError, match="loss must be"):
        train_word2vec([["a", "b"]], loss="hierarchical", min_count=1, device="cpu")
    with pytest.raises(ValueError, match="min_count"):
        train_word2vec([["a", "b"]], min_count=5, device="cpu")
    with pytest.raises(ValueError, match="row_cap"):
        train_word2vec([["a", "b"]], min_count=1, row_cap=0, device="cpu")


# ---- similarity and analogies -------------------------------------------------------------------------


def _toy_vectors():
    words = ["man", "woman", "king", "queen", "boy", "apple"]
    vecs = torch.tensor([
        [1.0, 0.0, 0.0],    # man:   male
        [0.0, 1.0, 0.0],    # woman: female
        [1.0, 0.0, 1.0],    # king:  male + royal
        [0.0, 1.0, 1.0],    # queen: female + royal
        [1.0, 0.1, -0.3],   # boy
        [-1.0, -1.0, 0.2],  # apple
    ])
    return WordVectors(Vocab(words), vecs)


def test_analogy_answers_queen_and_never_returns_the_query_words():
    wv = _toy_vectors()
    assert wv.analogy("man", "king", "woman")[0][0] == "queen"
    everything = [w for w, _ in wv.analogy("man", "king", "woman", topn=10)]
    assert set(everything) == {"queen", "boy", "apple"}
    with pytest.raises(KeyError, match="'prince' is not in the vocabulary"):
        wv.analogy("man", "prince", "woman")


def test_nearest_neighbours_by_cosine_exclude_the_query():
    from sklearn.metrics.pairwise import cosine_similarity as sk_cos

    wv = _toy_vectors()
    np.testing.assert_allclose(cosine_similarity(wv.vectors).numpy(), sk_cos(wv.vectors.numpy()), atol=1e-6)
    sims, idx = nearest_neighbours(wv.vectors, wv["man"], k=2, exclude=[0])
    assert wv.vocab.decode(idx) == ["boy", "king"]
    assert sims[0].item() == pytest.approx(1 / math.sqrt(1 + 0.01 + 0.09))
    assert [w for w, _ in wv.most_similar("man", topn=5)] == ["boy", "king", "woman", "queen", "apple"]
    assert wv.similarity("king", "queen") == pytest.approx(0.5)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_training_runs_on_cuda():
    wv = train_word2vec(_topic_corpus(300), vector_size=8, window=2, min_count=1, epochs=2, device="cuda")
    assert wv.model.embed_in.weight.device.type == "cuda" and wv.vectors.device.type == "cpu"
