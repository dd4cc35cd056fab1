"""Benchmark: dlmi skip-gram with negative sampling against gensim's Word2Vec, in the same run.

Same corpus and settings for both (sg=1, negative=5, window=5, vector_size=100, min_count=5,
sample=1e-3, 5 epochs, alpha 0.025 -> 0.0001):
- gensim Word2Vec with workers=1 and workers=2 (the reference, compiled Cython),
- dlmi.embed.train_word2vec with 1 torch thread (``--dlmi-threads 1,2`` adds others), and on the GPU
  when there is one.

Speed: corpus words x epochs / wall-clock seconds of the whole call (vocabulary + training), the
best of ``--repeats`` runs (the machine may be shared). Goal: >= 0.3x gensim on CPU, >= 1x on a GPU.

Agreement of the two embeddings, on the ``--top`` most frequent words: the mean overlap of the 10
nearest neighbours, and the Spearman correlation of all pairwise cosine similarities. Two gensim runs
that differ only in their seed give the ceiling these numbers can reach on this corpus.

Corpus: the Indiana University chest X-ray reports (dlmi.data.load_iu_reports, from the
torchxrayvision wheel; sentences of the INDICATION, FINDINGS and IMPRESSION sections, lower-cased,
letters only, the de-identification token XXXX dropped). Without torchxrayvision, a synthetic
corpus (Zipf-distributed topic words, see ``synthetic_corpus``) is used and the output says so.

    python bench/word2vec.py [--repeats N] [--epochs E] [--top N] [--dlmi-threads 1,2]
"""
from __future__ import annotations

import argparse
import os
import random
import re
import sys
import time

import numpy as np
import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))

from dlmi.embed import train_word2vec  # noqa: E402

SETTINGS = dict(vector_size=100, window=5, negative=5, min_count=5, sample=1e-3, alpha=0.025, min_alpha=1e-4)
CLINICAL = ("effusion", "cardiomegaly", "pneumothorax", "atelectasis", "opacity")


def iu_corpus():
    from dlmi.data import load_iu_reports

    reports = load_iu_reports()
    sentences = []
    for column in ("indication", "findings", "impression"):
        for text in reports[column].fillna(""):
            for sentence in re.split(r"[.;:]", text.lower()):
                tokens = [t for t in re.findall(r"[a-z]+", sentence) if t != "xxxx"]
                if tokens:
                    sentences.append(tokens)
    return sentences, "Indiana University chest X-ray reports (3,955 reports, torchxrayvision wheel)"


def synthetic_corpus(n_words=200_000, vocab=3000, topics=30, seed=0):
    """Sentences of 12 words: each word is a topic word (Zipf within the topic's vocabulary) with
    probability 0.7, else a Zipf-distributed function word shared by all topics."""
    rng = random.Random(seed)
    per_topic = vocab // (topics + 1)
    function_words = [f"f{i}" for i in range(per_topic)]
    topic_words = [[f"t{t}_{i}" for i in range(per_topic)] for t in range(topics)]
    zipf = [1 / (i + 1) for i in range(per_topic)]
    sentences = []
    for _ in range(n_words // 12):
        topic = rng.choice(topic_words)
        sentences.append([rng.choices(topic, zipf)[0] if rng.random() < 0.7 else rng.choices(function_words, zipf)[0]
                          for _ in range(12)])
    return sentences, f"SYNTHETIC Zipf topic corpus ({n_words:,} words; torchxrayvision not available)"


def run_gensim(sentences, epochs, workers, seed):
    from gensim.models import Word2Vec

    start = time.perf_counter()
    model = Word2Vec(sentences, sg=1, epochs=epochs, workers=workers, seed=seed, **SETTINGS)
    return model, time.perf_counter() - start


def run_dlmi(sentences, epochs, threads, seed, device="cpu"):
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        start = time.perf_counter()
        wv = train_word2vec(sentences, sg=True, epochs=epochs, seed=seed, device=device, **SETTINGS)
        if device != "cpu":
            torch.cuda.synchronize()
        return wv, time.perf_counter() - start
    finally:
        torch.set_num_threads(before)


def agreement(vectors_a, vectors_b, words, k=10, n_queries=100):
    """(mean neighbour overlap@k over the first n_queries words, Spearman of pairwise cosines)."""
    from scipy.stats import spearmanr

    def unit(m):
        return m / np.linalg.norm(m, axis=1, keepdims=True)

    overlaps = []
    a_all, b_all = unit(vectors_a["matrix"]), unit(vectors_b["matrix"])
    for w in words[:n_queries]:
        ia, ib = vectors_a["index"][w], vectors_b["index"][w]
        sa, sb = a_all @ a_all[ia], b_all @ b_all[ib]
        sa[ia], sb[ib] = -np.inf, -np.inf
        na = {vectors_a["words"][i] for i in np.argsort(-sa)[:k]}
        nb = {vectors_b["words"][i] for i in np.argsort(-sb)[:k]}
        overlaps.append(len(na & nb) / k)
    A = unit(np.stack([vectors_a["matrix"][vectors_a["index"][w]] for w in words]))
    B = unit(np.stack([vectors_b["matrix"][vectors_b["index"][w]] for w in words]))
    upper = np.triu_indices(len(words), 1)
    rho = spearmanr((A @ A.T)[upper], (B @ B.T)[upper]).correlation
    return float(np.mean(overlaps)), float(rho)


def from_gensim(model):
    words = list(model.wv.index_to_key)
    return {"words": words, "index": {w: i for i, w in enumerate(words)}, "matrix": model.wv.vectors}


def from_dlmi(wv):
    return {"words": wv.words, "index": dict(wv.vocab.stoi), "matrix": wv.vectors.numpy()}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=2, help="timed runs of each; the best counts")
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--top", type=int, default=300, help="frequent words compared for agreement")
    parser.add_argument("--dlmi-threads", type=lambda v: [int(t) for t in v.split(",")], default=[1],
                        help="torch thread counts to time dlmi with, e.g. 1,2 (default 1: on a small shared "
                             "machine a second OpenMP thread mostly waits)")
    args = parser.parse_args()

    try:
        import gensim  # noqa: F401
    except ImportError:
        sys.exit("bench/word2vec.py needs gensim (pip install 'dlmi[oracles]')")
    try:
        sentences, source = iu_corpus()
    except Exception as exc:  # torchxrayvision missing or unreadable: say so, and go on synthetic
        print(f"(IU reports unavailable: {type(exc).__name__}: {exc})")
        sentences, source = synthetic_corpus()
    n_words = sum(map(len, sentences))
    print(f"corpus: {source}: {len(sentences):,} sentences, {n_words:,} words")
    print(f"settings: sg=1 {SETTINGS} epochs={args.epochs}; torch {torch.__version__}, "
          f"gensim {__import__('gensim').__version__}, {os.cpu_count()} CPUs")

    wps, models = {}, {}
    runs = [("gensim workers=1", lambda s: run_gensim(sentences, args.epochs, 1, s)),
            ("gensim workers=2", lambda s: run_gensim(sentences, args.epochs, 2, s))]
    for threads in args.dlmi_threads:
        runs.append((f"dlmi cpu threads={threads}",
                     lambda s, t=threads: run_dlmi(sentences, args.epochs, t, s)))
    if torch.cuda.is_available():
        runs.append(("dlmi cuda", lambda s: run_dlmi(sentences, args.epochs, 1, s, device="cuda")))
    for rep in range(args.repeats):          # interleaved, so that a busy spell hits all alike
        for name, fn in runs:
            model, secs = fn(1)
            rate = n_words * args.epochs / secs
            wps[name] = max(wps.get(name, 0.0), rate)
            models.setdefault(name, model)
    print("\nwords/second (best of %d):" % args.repeats)
    for name, rate in wps.items():
        print(f"  {name:20s} {rate:12,.0f}")
    print("ratios (dlmi / gensim; goal >= 0.3x on CPU, >= 1x on GPU):")
    dlmi_cpu = [n for n in wps if n.startswith("dlmi cpu")]
    for name in dlmi_cpu + (["dlmi cuda"] if "dlmi cuda" in wps else []):
        for workers in (1, 2):
            print(f"  {name} / gensim workers={workers}: {wps[name] / wps[f'gensim workers={workers}']:.2f}x")
    best_gensim = max(wps["gensim workers=1"], wps["gensim workers=2"])
    print(f"  best dlmi cpu / best gensim: {max(wps[n] for n in dlmi_cpu) / best_gensim:.2f}x")

    # agreement: dlmi vs gensim, and gensim vs gensim with another seed (the ceiling)
    reference = from_gensim(models["gensim workers=1"])
    other_seed, _ = run_gensim(sentences, args.epochs, 1, seed=2)
    first_dlmi = models[dlmi_cpu[0]]
    ours = from_dlmi(first_dlmi)
    words = [w for w in reference["words"] if w in ours["index"]][:args.top]
    ov, rho = agreement(ours, reference, words)
    ov_ref, rho_ref = agreement(from_gensim(other_seed), reference, words)
    print(f"\nagreement on the {len(words)} most frequent words (neighbour overlap@10 over the top 100, "
          "Spearman of pairwise cosines):")
    print(f"  dlmi   vs gensim:                overlap@10 {ov:.3f}   spearman {rho:.3f}")
    print(f"  gensim vs gensim (other seed):   overlap@10 {ov_ref:.3f}   spearman {rho_ref:.3f}")
    dlmi_wv = first_dlmi
    gensim_model = models["gensim workers=1"]
    print("\nnearest neighbours (dlmi | gensim):")
    for w in CLINICAL:
        if w in dlmi_wv and w in gensim_model.wv:
            a = ", ".join(n for n, _ in dlmi_wv.most_similar(w, 5))
            b = ", ".join(n for n, _ in gensim_model.wv.most_similar(w, topn=5))
            print(f"  {w:13s} {a}  |  {b}")


if __name__ == "__main__":
    main()
