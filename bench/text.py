"""Benchmark: dlmi.text corpus BLEU and ROUGE-L against sacrebleu and rouge-score, same run, same data.

10,000 report-like hypothesis/reference pairs (IU X-ray style sentences, 20-70 words each).
For each metric both implementations score the same corpus; the script checks that the numbers
agree and prints the wall time of each (best of a few repeats) and the ratio
reference_time / dlmi_time (> 1 means dlmi is faster; the goal is >= 1).

    python bench/text.py [--pairs 10000] [--repeats 2]
"""
from __future__ import annotations

import argparse
import logging
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "lib"))  # run from a checkout without installing

from dlmi.text import corpus_bleu, corpus_rouge_l, rouge_tokenize  # noqa: E402

SENTENCES = [
    "the heart size is normal .", "heart size is within normal limits .", "the heart is mildly enlarged .",
    "mild cardiomegaly is present .", "the cardiomediastinal silhouette is within normal limits .",
    "the mediastinal contours are normal .", "the lungs are clear .", "lungs are clear bilaterally .",
    "no focal airspace consolidation .", "there is no pleural effusion or pneumothorax .",
    "no pneumothorax or large pleural effusion .", "small left pleural effusion .",
    "small bilateral pleural effusions are present .", "there is a right lower lobe opacity .",
    "patchy opacities in the lung bases may represent atelectasis .", "bibasilar atelectasis .",
    "there is a 1 cm nodule in the right upper lobe .", "calcified granuloma in the left upper lobe .",
    "the pulmonary vascularity is within normal limits .", "no acute cardiopulmonary abnormality .",
    "no acute cardiopulmonary disease .", "no acute bony abnormality .", "degenerative changes of the spine .",
    "xxxx xxxx are within normal limits .", "the osseous structures are intact .",
    "stable appearance of the chest .", "interval improvement of the right basilar opacity .",
    "the thoracic aorta is tortuous .", "there is mild pulmonary edema .", "no evidence of active disease .",
]


def make_pairs(count: int, seed: int = 0):
    """Hypothesis/reference reports sharing some sentences, with word-level noise on top."""
    rng = random.Random(seed)
    vocabulary = sorted({w for s in SENTENCES for w in s.split()})
    hyps, refs = [], []
    for _ in range(count):
        ref = rng.sample(SENTENCES, rng.randint(3, 8))
        hyp = [s if rng.random() < 0.6 else rng.choice(SENTENCES) for s in ref]
        rng.shuffle(hyp)
        words = " ".join(hyp).split()
        for _ in range(rng.randint(0, 4)):
            words[rng.randrange(len(words))] = rng.choice(vocabulary)
        hyps.append(" ".join(words))
        refs.append(" ".join(ref))
    return hyps, refs


def best_time(fn, repeats: int):
    best, result = float("inf"), None
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - start)
    return best, result


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=10_000)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args(argv)
    try:
        import sacrebleu
        from rouge_score import rouge_scorer
    except ImportError as err:
        print(f"bench/text.py needs the oracle packages (pip install 'dlmi[oracles]'): {err}")
        return 1
    logging.getLogger("sacrebleu").setLevel(logging.ERROR)

    hyps, refs = make_pairs(args.pairs)
    words = sum(len(h.split()) + len(r.split()) for h, r in zip(hyps, refs))
    print(f"{args.pairs} report pairs, {words / (2 * args.pairs):.1f} words per report on average, "
          f"best of {args.repeats}")
    print(f"{'metric':<34}{'reference (s)':>14}{'dlmi (s)':>10}{'ratio':>8}  value check")
    ratios = []

    def row(name, ref_fn, ours_fn, same):
        t_ref, v_ref = best_time(ref_fn, args.repeats)
        t_ours, v_ours = best_time(ours_fn, args.repeats)
        ok = same(v_ref, v_ours)
        ratios.append(t_ref / t_ours)
        print(f"{name:<34}{t_ref:>14.3f}{t_ours:>10.3f}{t_ref / t_ours:>7.2f}x  "
              f"{'equal' if ok else 'DIFFERENT'} ({v_ours if isinstance(v_ours, float) else v_ours[2]:.6f})")
        return ok

    oks = []
    for smoothing in ("none", "exp"):
        metric = sacrebleu.BLEU(tokenize="none", force=True, smooth_method=smoothing)
        oks.append(row(f"corpus BLEU-4 ({smoothing}) vs sacrebleu",
                       lambda: metric.corpus_score(hyps, [refs]).score / 100,
                       lambda: corpus_bleu(hyps, refs, smoothing=smoothing),
                       lambda a, b: abs(a - b) < 1e-9))

    scorer = rouge_scorer.RougeScorer(["rougeL"])

    def rouge_score_corpus(scorer=scorer):
        p = r = f = 0.0
        for hyp, ref in zip(hyps, refs):
            s = scorer.score(ref, hyp)["rougeL"]
            p, r, f = p + s.precision, r + s.recall, f + s.fmeasure
        return p / len(hyps), r / len(hyps), f / len(hyps)

    oks.append(row("ROUGE-L vs rouge-score (default)", rouge_score_corpus,
                   lambda: corpus_rouge_l(hyps, refs, tokenize=rouge_tokenize),
                   lambda a, b: all(abs(x - y) < 1e-9 for x, y in zip(a, b))))

    class Whitespace:
        def tokenize(self, text):
            return text.split()

    plain = rouge_scorer.RougeScorer(["rougeL"], tokenizer=Whitespace())
    oks.append(row("ROUGE-L vs rouge-score (whitespace)", lambda: rouge_score_corpus(plain),
                   lambda: corpus_rouge_l(hyps, refs),
                   lambda a, b: all(abs(x - y) < 1e-9 for x, y in zip(a, b))))

    print(f"slowest ratio {min(ratios):.2f}x (goal: >= 1, not slower than the reference)")
    return 0 if all(oks) else 1


if __name__ == "__main__":
    sys.exit(main())
