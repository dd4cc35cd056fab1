"""Report tokenizer and vocabulary: IU X-ray report text, "XXXX" gaps, punctuation, numbers,
special tokens, padded batches with lengths, save/load, and round trips on the real reports."""
import gzip
import html
import importlib.util
import io
import json
import random
import re
import tarfile
from pathlib import Path

import pytest
import torch

from dlmi.text import (BOS, EOS, PAD, UNK, ReportTokenizer, Vocabulary, detokenize, split_sentences,
                       tokenize_report)

IU_TEXT = "Heart size is normal. XXXX XXXX are within normal limits. No pneumothorax."


def test_iu_report_sentence():
    assert tokenize_report(IU_TEXT) == ["heart", "size", "is", "normal", ".", "xxxx", "are", "within",
                                        "normal", "limits", ".", "no", "pneumothorax", "."]


@pytest.mark.parametrize("text,expected", [
    ("XXXX.", ["xxxx", "."]),
    ("Comparison XXXX, XXXX.", ["comparison", "xxxx", "."]),   # comma dropped, then the two gaps are one
    ("XXXX-XXXX", ["xxxx"]),
    ("XXXX/XXXX XXXX", ["xxxx"]),
    ("PA and lateral x-XXXX", ["pa", "and", "lateral", "x", "xxxx"]),
    ("XXXX-of-view", ["xxxx", "of-view"]),
    ("Dual-XXXX", ["dual", "xxxx"]),
    ("4XXXX", ["xxxx"]),
    ("XXXXPM", ["xxxx", "pm"]),
    ("xxx Xylophone EXXXTRA", ["xxx", "xylophone", "xxxx"]),  # upper-case runs of 3+ X are gaps, lower-case not
])
def test_anonymisation_gaps_become_one_token(text, expected):
    assert tokenize_report(text) == expected


def test_anonymisation_options():
    assert tokenize_report("XXXX XXXX are", merge_anon=False) == ["xxxx", "xxxx", "are"]
    assert tokenize_report("XXXX-XXXX are", anon_token="<anon>") == ["<anon>", "are"]
    assert tokenize_report("XXXX XXXX are", anon_token=None) == ["xxxx", "xxxx", "are"]
    assert tokenize_report("XXXX XXXX are", anon_token=None, lowercase=False) == ["XXXX", "XXXX", "are"]


def test_punctuation_modes():
    text = "Heart (mildly) enlarged; no effusion, T6 fracture? Stable!"
    assert ReportTokenizer(punctuation="keep")(text) == [
        "heart", "(", "mildly", ")", "enlarged", ";", "no", "effusion", ",", "t6", "fracture", "?", "stable", "!"]
    assert ReportTokenizer()(text) == ["heart", "mildly", "enlarged", "no", "effusion", "t6", "fracture", ".",
                                       "stable", "."]
    assert ReportTokenizer(punctuation="drop")(text) == ["heart", "mildly", "enlarged", "no", "effusion", "t6",
                                                         "fracture", "stable"]
    assert tokenize_report("Normal for patient age..") == ["normal", "for", "patient", "age", "."]
    assert tokenize_report("Well-expanded lungs, patient's heart.") == ["well-expanded", "lungs", "patient's", "heart", "."]


def test_numbers_and_case():
    text = "1. Stable 8mm nodule at T12, 1.5 cm below the 6th rib. 2. No effusion."
    assert tokenize_report(text) == ["stable", "8mm", "nodule", "at", "t12", "1.5", "cm", "below", "the", "6th",
                                     "rib", ".", "no", "effusion", "."]
    assert tokenize_report(text, numbers="token") == ["stable", "8mm", "nodule", "at", "t12", "<num>", "cm", "below",
                                                      "the", "6th", "rib", ".", "no", "effusion", "."]
    assert tokenize_report(text, numbers="drop")[5] == "cm"
    assert tokenize_report(text, drop_list_markers=False)[:3] == ["1", ".", "stable"]
    assert tokenize_report("Grade 2. No change.") == ["grade", "2", ".", "no", "change", "."]  # not a list mark
    assert tokenize_report("Heart Size", lowercase=False) == ["Heart", "Size"]
    assert tokenize_report("") == [] and tokenize_report("  \n ") == []
    assert tokenize_report("<unk> size <num>.") == ["<unk>", "size", "<num>", "."]  # decoded output re-tokenizes


def test_sentences_and_detokenize():
    tokens = tokenize_report(IU_TEXT)
    assert split_sentences(tokens) == [["heart", "size", "is", "normal", "."],
                                       ["xxxx", "are", "within", "normal", "limits", "."],
                                       ["no", "pneumothorax", "."]]
    assert ReportTokenizer().sentences("No effusion. Clear") == [["no", "effusion", "."], ["clear"]]
    assert detokenize(tokens) == "heart size is normal. xxxx are within normal limits. no pneumothorax."
    assert detokenize(["heart", "(", "mildly", ")", "enlarged", ",", "stable"]) == "heart (mildly) enlarged, stable"


def test_tokenizer_rejects_bad_settings_and_input():
    with pytest.raises(ValueError):
        ReportTokenizer(punctuation="some")
    with pytest.raises(ValueError):
        ReportTokenizer(numbers="words")
    with pytest.raises(ValueError):
        ReportTokenizer(anon_token="two words")
    with pytest.raises(TypeError):
        tokenize_report(None)
    with pytest.raises(TypeError):
        tokenize_report(["heart"])


CORPUS = [IU_TEXT, "Heart size is normal. Lungs are clear.", "No pneumothorax or pleural effusion.",
          "Mild cardiomegaly. XXXX opacity in the left base."]


def test_vocabulary_special_tokens_and_order():
    vocab = Vocabulary.build(CORPUS)
    assert vocab.itos[:4] == [PAD, BOS, EOS, UNK]
    assert (vocab.pad_id, vocab.bos_id, vocab.eos_id, vocab.unk_id) == (0, 1, 2, 3)
    assert vocab.itos[4] == "."                          # most frequent first
    assert [vocab.counts[t] for t in vocab.itos[4:]] == sorted((vocab.counts[t] for t in vocab.itos[4:]), reverse=True)
    assert vocab["pneumothorax"] == vocab.token_to_id("pneumothorax") != vocab.unk_id
    assert vocab["atelectasis"] == vocab.unk_id and "atelectasis" not in vocab
    assert Vocabulary.build(CORPUS).itos == vocab.itos   # deterministic
    rare = Vocabulary.build(CORPUS, min_freq=2)
    assert "pneumothorax" in rare and "cardiomegaly" not in rare and rare["cardiomegaly"] == rare.unk_id
    assert len(Vocabulary.build(CORPUS, max_size=3)) == 7
    # A literal special token in the data does not get a second id.
    assert Vocabulary.build([["<unk>", "a"]]).itos == [PAD, BOS, EOS, UNK, "a"]
    with pytest.raises(ValueError):
        Vocabulary.build(CORPUS, min_freq=0)
    with pytest.raises(TypeError):
        Vocabulary.build("one string")


def test_encode_decode_round_trip():
    vocab = Vocabulary.build(CORPUS)
    ids = vocab.encode(IU_TEXT)
    assert ids[0] == vocab.bos_id and ids[-1] == vocab.eos_id and len(ids) == 14 + 2
    assert vocab.decode(ids) == "heart size is normal. xxxx are within normal limits. no pneumothorax."
    assert vocab.decode_tokens(ids) == tokenize_report(IU_TEXT)
    assert tokenize_report(vocab.decode(ids)) == tokenize_report(IU_TEXT)
    assert vocab.encode(IU_TEXT, add_bos=False, add_eos=False) == ids[1:-1]
    assert vocab.decode(vocab.encode("Atelectasis is normal.")) == "<unk> is normal."
    assert vocab.decode(ids + [vocab["heart"]]) == vocab.decode(ids)          # stops at <eos>
    assert vocab.decode(ids, stop_at_eos=False, skip_special=False).startswith("<bos> heart")
    short = vocab.encode(IU_TEXT, max_length=5)
    assert len(short) == 5 and short[-1] == vocab.eos_id
    with pytest.raises(ValueError):
        vocab.encode(IU_TEXT, max_length=1)
    with pytest.raises(TypeError):
        vocab.decode([1, "two"])
    with pytest.raises(TypeError):
        vocab.decode([1.0, 2.0])
    with pytest.raises(IndexError):
        vocab.decode([4, 10_000])


def test_encode_batch_pads_and_returns_lengths():
    vocab = Vocabulary.build(CORPUS)
    texts = [IU_TEXT, "No pneumothorax.", ""]
    ids, lengths = vocab.encode_batch(texts)
    assert ids.dtype == torch.long and lengths.dtype == torch.long
    assert ids.shape == (3, 16) and lengths.tolist() == [16, 5, 2]
    assert (ids[1, 5:] == vocab.pad_id).all() and (ids[2, 2:] == vocab.pad_id).all()
    assert ids[2, :2].tolist() == [vocab.bos_id, vocab.eos_id]
    assert vocab.decode_batch(ids, lengths) == [vocab.decode(vocab.encode(t)) for t in texts]
    assert vocab.decode_batch(ids.numpy()) == vocab.decode_batch(ids)
    no_specials, n = vocab.encode_batch(texts[1:2], add_bos=False, add_eos=False)
    assert n.tolist() == [3] and no_specials.shape == (1, 3)
    capped, n = vocab.encode_batch(texts, max_length=6)
    assert capped.shape == (3, 6) and n.tolist() == [6, 5, 2]
    with pytest.raises(TypeError):
        vocab.encode_batch("one text")
    with pytest.raises(ValueError):
        vocab.encode_batch([])
    with pytest.raises(ValueError):
        vocab.decode_batch(ids, [1, 2])


def test_save_load(tmp_path):
    vocab = Vocabulary.build(CORPUS, min_freq=1, tokenizer=ReportTokenizer(numbers="token", punctuation="keep"))
    path = vocab.save(tmp_path / "vocab.json")
    loaded = Vocabulary.load(path)
    assert loaded == vocab and loaded.itos == vocab.itos and loaded.counts == vocab.counts
    assert loaded.tokenizer.config() == vocab.tokenizer.config()
    assert loaded.encode("Heart 2 cm, normal.") == vocab.encode("Heart 2 cm, normal.")
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(ValueError):
        Vocabulary.load(tmp_path / "bad.json")
    (tmp_path / "other.json").write_text(json.dumps({"tokens": ["a"]}))
    with pytest.raises(ValueError):
        Vocabulary.load(tmp_path / "other.json")


def _iu_report_texts():
    """Findings + impression of the IU X-ray reports shipped inside the torchxrayvision wheel,
    read in place (the package itself is not imported)."""
    spec = importlib.util.find_spec("torchxrayvision")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("torchxrayvision (which ships the IU reports) is not installed")
    archive = Path(list(spec.submodule_search_locations)[0]) / "data" / "NLMCXR_reports.tgz"
    if not archive.exists():
        pytest.skip(f"{archive} not found")
    texts = []
    # Decompress once and pick the two sections with a regex: much faster than a streamed
    # tarfile plus an XML parser per report, and these files are flat and regular.
    section = re.compile(r'<AbstractText Label="(?:FINDINGS|IMPRESSION)">(.*?)</AbstractText>', re.S)
    with tarfile.open(fileobj=io.BytesIO(gzip.decompress(archive.read_bytes()))) as tar:
        for member in tar:
            if member.isfile() and member.name.endswith(".xml"):
                xml = tar.extractfile(member).read().decode("utf-8")
                parts = [html.unescape(p) for p in section.findall(xml) if p.strip()]
                if parts:
                    texts.append(" ".join(parts))
    return texts


def test_real_iu_reports_tokenize_and_round_trip():
    texts = _iu_report_texts()
    assert len(texts) > 3000
    tokenizer = ReportTokenizer()
    all_tokens = [tokenizer(t) for t in texts]
    flat = [tok for toks in all_tokens for tok in toks]
    assert all(tok and not any(ch.isspace() for ch in tok) for tok in flat)
    assert all(tok == tok.lower() for tok in flat)
    assert not any("xxx" in tok for tok in flat if tok != "xxxx")       # every gap became the one token
    assert flat.count("xxxx") > 1000
    assert sum("XXXX" in t for t in texts) > 1000
    vocab = Vocabulary.build(texts, min_freq=3)
    assert 500 < len(vocab) < 3000
    rng = random.Random(0)
    sample = rng.sample(texts, 300)
    ids, lengths = vocab.encode_batch(sample)
    decoded = vocab.decode_batch(ids, lengths)
    for text, back in zip(sample, decoded):
        expected = [tok if tok in vocab else UNK for tok in tokenizer(text)]
        assert tokenizer(back) == expected
    # Sentence counts are plausible: most reports have 2-10 sentences.
    counts = [len(split_sentences(toks)) for toks in all_tokens]
    assert 2 <= sorted(counts)[len(counts) // 2] <= 10
