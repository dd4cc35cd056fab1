"""Hierarchical report generator (dlmi.seq.report_generation, Liu et al. 2019): the sentence batch,
shapes, masking, the stop loss by hand, step-by-step decoding = the batched forward, overfitting a
tiny batch, determinism, bad input, the shipped checkpoints."""
import math

import pytest
import torch

from dlmi.seq import HierarchicalReportGenerator, encode_reports, stop_targets
from dlmi.text import Vocabulary

REPORTS = [
    "Heart size normal. The lungs are clear. No pneumothorax or pleural effusion.",
    "The heart is enlarged. Small left pleural effusion.",
    "Heart size normal. Right upper lobe opacity. No effusion. No acute disease.",
    "Normal heart size. Lungs clear.",
]


def _vocab():
    return Vocabulary.build(REPORTS)


def _model(vocab_size, **kw):
    torch.manual_seed(0)
    options = dict(embed_dim=16, hidden_dim=32, sentence_dim=24, topic_dim=12, attention_dim=16,
                   channels=(8, 16, 16), dropout=0.0)
    options.update(kw)
    return HierarchicalReportGenerator(vocab_size, **options)


def _images(n=4, seed=0):
    return torch.rand(n, 1, 32, 32, generator=torch.Generator().manual_seed(seed))


# -- the sentence batch ---------------------------------------------------------------------

def test_encode_reports_pads_sentences_and_counts_them():
    vocab = _vocab()
    tokens, n = encode_reports(REPORTS, vocab)
    assert tokens.dtype == torch.long and n.tolist() == [3, 2, 4, 2]
    assert tokens.shape == (4, 4, 2 + 6)            # longest sentence: "no pneumothorax or pleural effusion ."
    assert tokens[1, 0].tolist() == vocab.encode("The heart is enlarged.") + [0]
    assert vocab.decode(tokens[2, 1].tolist()) == "right upper lobe opacity."
    assert (tokens[1, 2:] == vocab.pad_id).all() and (tokens[3, 2:] == vocab.pad_id).all()
    fixed, _ = encode_reports(REPORTS[:2], vocab, max_sentences=5, max_words=9)
    assert fixed.shape == (2, 5, 11)
    # a report given as its sentences is the same report
    split, n2 = encode_reports([["The heart is enlarged.", "Small left pleural effusion."]], vocab)
    assert torch.equal(split[0], tokens[1, :2, :7]) and n2.tolist() == [2]


def test_encode_reports_errors():
    vocab = _vocab()
    with pytest.raises(ValueError, match="report 1 is empty"):
        encode_reports(["Heart size normal.", "  "], vocab)
    with pytest.raises(ValueError, match="empty"):
        encode_reports(["Heart size normal.", []], vocab)
    with pytest.raises(ValueError, match="4 sentences, more than max_sentences=3"):
        encode_reports(REPORTS, vocab, max_sentences=3)
    with pytest.raises(ValueError, match="max_words=4"):
        encode_reports(REPORTS, vocab, max_words=4)
    with pytest.raises(TypeError, match="not one string"):
        encode_reports(REPORTS[0], vocab)
    with pytest.raises(ValueError, match="no reports"):
        encode_reports([], vocab)
    with pytest.raises(TypeError, match="report 0"):
        encode_reports([3], vocab)


def test_stop_targets():
    target, valid = stop_targets(torch.tensor([1, 3, 2]), 3)
    assert target.tolist() == [[1, 0, 0], [0, 0, 1], [0, 1, 0]]
    assert valid.tolist() == [[True, False, False], [True, True, True], [True, True, False]]


# -- the model ------------------------------------------------------------------------------

def test_shapes_and_attention_maps():
    vocab = _vocab()
    tokens, n = encode_reports(REPORTS, vocab)
    model = _model(len(vocab), num_tags=3)
    out = model.teacher_forced(_images(), tokens, n)
    B, S, T = tokens.shape
    assert out["word_logits"].shape == (B, S, T - 1, len(vocab))
    assert out["stop_logits"].shape == (B, S) and out["topics"].shape == (B, S, 12)
    assert out["sentence_alpha"].shape == (B, S, 16) and out["word_alpha"].shape == (B, S, T - 1, 16)
    _, valid = stop_targets(n, S)
    # attention maps sum to one over the 4x4 grid for real sentences, and are zero for padding slots
    assert torch.allclose(out["sentence_alpha"].sum(-1), valid.float(), atol=1e-6)
    assert torch.allclose(out["word_alpha"].sum(-1), valid[..., None].float().expand(B, S, T - 1), atol=1e-6)
    losses = model(_images(), tokens, n, tags=torch.zeros(B, 3))
    assert set(losses) == {"loss_words", "loss_stop", "loss_tags"}
    assert all(v.ndim == 0 and torch.isfinite(v) for v in losses.values())
    reports = model.generate(_images(), vocab, max_sentences=3, max_words=5)
    assert len(reports) == 4
    for r in reports:
        assert 1 <= len(r) <= 3 and len(r.stop_probs) == len(r)
        assert r.sentence_attention.shape == (len(r), 4, 4)
        assert all(a.shape == (len(s) + 1, 4, 4) or (len(s) == 5 and a.shape == (5, 4, 4))
                   for s, a in zip(r.sentences, r.word_attention))
        assert isinstance(r.text, str) and r.ids == sum(r.sentences, [])
        # stopped because P(stop) > 0.5, or ran out of sentences
        assert all(p <= 0.5 for p in r.stop_probs[:-1]) and (r.stop_probs[-1] > 0.5 or len(r) == 3)


def test_padding_does_not_change_the_loss():
    vocab = _vocab()
    tokens, n = encode_reports(REPORTS, vocab)
    model = _model(len(vocab))
    images = _images()
    base = model(images, tokens, n)
    target = tokens[..., 1:]
    first_eos = (target == vocab.eos_id).float().argmax(-1)
    after_eos = torch.arange(target.shape[-1]) > first_eos[..., None]
    _, valid = stop_targets(n, tokens.shape[1])
    padding = torch.zeros_like(tokens, dtype=torch.bool)
    padding[..., 1:] = after_eos
    padding |= ~valid[..., None]
    assert padding.any() and (~padding).any()
    noise = torch.randint(0, len(vocab), tokens.shape, generator=torch.Generator().manual_seed(1))
    perturbed = torch.where(padding, noise, tokens)
    assert not torch.equal(perturbed, tokens)
    other = model(images, perturbed, n)
    for key in base:
        assert torch.allclose(base[key], other[key], rtol=0, atol=1e-7), key
    # a real word does change it (the comparison above can fail)
    changed = tokens.clone()
    changed[0, 1, 2] = vocab["effusion"]
    assert not torch.allclose(model(images, changed, n)["loss_words"], base["loss_words"])


def test_losses_by_hand():
    """Stop BCE and word cross-entropy written out per sentence on a tiny case."""
    vocab = _vocab()
    tokens, n = encode_reports(REPORTS[:2], vocab)          # 3 and 2 sentences
    model = _model(len(vocab), stop_weight=2.5)
    images = _images(2)
    out = model.teacher_forced(images, tokens, n)
    losses = model(images, tokens, n)
    x = out["stop_logits"].tolist()
    sig = lambda v: 1 / (1 + math.exp(-v))
    # report 0: CONTINUE, CONTINUE, STOP; report 1: CONTINUE, STOP; the 3rd slot of report 1 is padding
    bce = [-math.log(1 - sig(x[0][0])), -math.log(1 - sig(x[0][1])), -math.log(sig(x[0][2])),
           -math.log(1 - sig(x[1][0])), -math.log(sig(x[1][1]))]
    assert losses["loss_stop"].item() == pytest.approx(2.5 * sum(bce) / 5, rel=1e-5)
    logp = out["word_logits"].log_softmax(-1)
    terms = []
    for b in range(2):
        for s in range(int(n[b])):
            row = tokens[b, s].tolist()
            for t in range(1, row.index(vocab.eos_id) + 1):   # every word and the <eos>
                terms.append(-logp[b, s, t - 1, row[t]].item())
    assert losses["loss_words"].item() == pytest.approx(sum(terms) / len(terms), rel=1e-5)


def test_step_by_step_equals_the_batched_forward():
    vocab = _vocab()
    tokens, n = encode_reports(REPORTS, vocab)
    model = _model(len(vocab), dropout=0.3).eval()
    images = _images()
    batched = model.teacher_forced(images, tokens, n)
    with torch.no_grad():
        for b in range(len(REPORTS)):
            feats, _, proj_s, proj_w, state = model.encode(images[b:b + 1])
            for s in range(int(n[b])):
                topic, stop, state, alpha = model.sentence_step(state, feats, proj_s)
                assert torch.allclose(stop[0], batched["stop_logits"][b, s], atol=1e-5)
                assert torch.allclose(alpha[0], batched["sentence_alpha"][b, s], atol=1e-5)
                assert torch.allclose(topic[0], batched["topics"][b, s], atol=1e-5)
                w_state = model.word_state(topic)
                row = tokens[b, s]
                for t in range(row.tolist().index(vocab.eos_id)):
                    logits, w_state, w_alpha = model.word_step(row[t:t + 1], w_state, topic, feats, proj_w)
                    assert torch.allclose(logits[0], batched["word_logits"][b, s, t], atol=1e-5)
                    assert torch.allclose(w_alpha[0], batched["word_alpha"][b, s, t], atol=1e-5)


def _overfit(vocab, tokens, n, images, steps=120):
    model = _model(len(vocab), hidden_dim=48)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    history = []
    for _ in range(steps):
        opt.zero_grad()
        loss = sum(model(images, tokens, n).values())
        loss.backward()
        opt.step()
        history.append(loss.item())
    return model, history


def test_overfits_a_tiny_batch_greedy_and_beam():
    vocab = _vocab()
    tokens, n = encode_reports(REPORTS, vocab)
    images = _images()
    model, history = _overfit(vocab, tokens, n, images)
    assert history[-1] < 0.05 * history[0]
    expected = [[tokens[b, s, 1:].tolist()[: tokens[b, s, 1:].tolist().index(vocab.eos_id)]
                 for s in range(int(n[b]))] for b in range(len(REPORTS))]
    greedy = model.generate(images, vocab, max_sentences=6, max_words=10)
    assert [r.sentences for r in greedy] == expected
    assert [r.text for r in greedy] == [vocab.decode(vocab.encode(r)) for r in REPORTS]
    beam = model.generate(images, vocab, max_sentences=6, max_words=10, beam_size=3)
    assert [r.sentences for r in beam] == expected
    assert beam[2].word_attention[1].shape == (len(expected[2][1]) + 1, 4, 4)


def test_cpu_determinism():
    vocab = _vocab()
    tokens, n = encode_reports(REPORTS, vocab)
    images = _images()
    a, ha = _overfit(vocab, tokens, n, images, steps=5)
    b, hb = _overfit(vocab, tokens, n, images, steps=5)
    assert ha == hb
    for (ka, pa), (kb, pb) in zip(a.state_dict().items(), b.state_dict().items()):
        assert ka == kb and torch.equal(pa, pb)
    ra, rb = a.generate(images, vocab), b.generate(images, vocab)
    assert [r.sentences for r in ra] == [r.sentences for r in rb]
    assert all(torch.equal(x.sentence_attention, y.sentence_attention) for x, y in zip(ra, rb))


def test_bad_input_is_a_clear_error():
    vocab = _vocab()
    tokens, n = encode_reports(REPORTS, vocab)
    model = _model(len(vocab))
    images = _images()
    with pytest.raises(ValueError, match=r"images must be a \(batch, channels, height, width\)"):
        model(images[:, 0], tokens, n)
    with pytest.raises(ValueError, match=r"\(batch, max_sentences, max_words\)"):
        model(images, tokens[:, 0], n)
    with pytest.raises(TypeError, match="torch.long"):
        model(images, tokens.float(), n)
    with pytest.raises(ValueError, match="num_sentences must be an integer tensor of shape"):
        model(images, tokens, n[:2])
    with pytest.raises(ValueError, match="num_sentences must be an integer tensor"):
        model(images, tokens, n.float())
    with pytest.raises(ValueError, match="empty report"):
        model(images, tokens, torch.tensor([3, 0, 4, 2]))
    with pytest.raises(ValueError, match="exceeds the 4 sentence slots"):
        model(images, tokens, torch.tensor([3, 2, 5, 2]))
    with pytest.raises(ValueError, match="3 images but 4 reports"):
        model(images[:3], tokens, n)
    with pytest.raises(ValueError, match=r"token ids must lie in \[0, "):
        model(images, tokens + len(vocab), n)
    cut = tokens.clone()
    cut[1, 1, :] = torch.tensor([1, 5, 6, 7, 8, 9, 10, 11])     # no <eos>
    with pytest.raises(ValueError, match="sentence 1 of report 1 has no <eos>"):
        model(images, cut, n)
    with pytest.raises(ValueError, match="no tag head"):
        model(images, tokens, n, tags=torch.zeros(4, 5))
    with pytest.raises(ValueError, match="max_sentences must be a positive integer"):
        model.generate(images, max_sentences=0)
    with pytest.raises(ValueError, match="beam_size"):
        model.generate(images, beam_size=0)


def test_shipped_checkpoints_load_and_write_reports():
    from dlmi.data.cxr import make_cxr_phantom
    from dlmi.seq.captioning import CaptioningModel
    from dlmi.seq.report_generation import CHECKPOINTS, load_pretrained
    from dlmi.text import findings_of

    if not (CHECKPOINTS / "hierarchical.pt").exists():
        pytest.fail("the lecture checkpoints are missing; run python -m dlmi.seq.report_generation")
    image = torch.from_numpy(make_cxr_phantom(["cardiomegaly"], seed=3).image)[None, None]
    model, vocab = load_pretrained("hierarchical")
    assert isinstance(model, HierarchicalReportGenerator) and not model.training
    report = model.generate(image, vocab)[0]
    assert len(report) >= 2 and report.text.endswith(".")
    assert "cardiomegaly" in findings_of(report.text)
    captioner, vocab2 = load_pretrained("captioning")
    assert isinstance(captioner, CaptioningModel) and vocab2 == vocab
    with pytest.raises(ValueError, match="name must be one of"):
        load_pretrained("resnet")
