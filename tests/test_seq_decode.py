"""dlmi.seq.decode: teacher forcing, free running, scheduled sampling, greedy and beam search."""
import math

import pytest
import torch

from dlmi.seq import AutoregressiveDecoder, Seq2Seq, teacher_forcing_schedule

torch.set_num_threads(1)
V = 12


def _batch():
    ids = torch.tensor([[1, 5, 6, 7, 2], [1, 8, 2, 0, 0], [1, 4, 4, 2, 0]])
    return ids, torch.tensor([5, 3, 4])


@pytest.mark.parametrize("cell", ["gru", "lstm"])
def test_teacher_forcing_equals_the_step_loop_and_score_is_the_sum_of_log_probs(cell):
    torch.manual_seed(0)
    dec = AutoregressiveDecoder(V, embed_dim=6, units=8, cell=cell, context_size=3).double().eval()
    ids, lengths = _batch()
    ctx = torch.randn(3, 3, dtype=torch.float64)
    logits = dec(ids[:, :-1], lengths - 1, ctx)
    scores = dec.score(ids, lengths, ctx)
    for b, n in enumerate(lengths.tolist()):
        state, total = dec.initial_state(ctx[b:b + 1]), 0.0
        for t in range(n - 1):
            step_logits, state = dec.step(ids[b, t:t + 1], state)
            assert torch.allclose(step_logits[0], logits[b, t], atol=1e-10)
            total += torch.log_softmax(step_logits[0], -1)[ids[b, t + 1]].item()
        assert math.isclose(scores[b].item(), total, abs_tol=1e-9)
    # the padded batch gives each sequence's own logits
    alone = dec(ids[1:2, :2], torch.tensor([2]), ctx[1:2])
    assert torch.allclose(logits[1, :2], alone[0], atol=1e-10)


def test_rollout_with_full_teacher_forcing_is_forward_and_free_running_greedy_is_generate():
    torch.manual_seed(0)
    dec = AutoregressiveDecoder(V, embed_dim=6, units=8, context_size=2).double().eval()
    ids, lengths = _batch()
    ctx = torch.randn(3, 2, dtype=torch.float64)
    assert torch.allclose(dec.rollout_logits(ids, ctx, 1.0), dec(ids, None, ctx), atol=1e-10)
    free = dec.rollout_logits(ids, ctx, 0.0, sample=False).argmax(-1)
    gen, glen = dec.generate(ctx, max_length=ids.shape[1], stop_at_eos=False)
    assert torch.equal(free, gen) and glen.tolist() == [ids.shape[1]] * 3


def test_beam_search_with_beam_one_is_greedy_and_wider_beams_score_at_least_as_well():
    torch.manual_seed(3)
    dec = AutoregressiveDecoder(V, embed_dim=6, units=8, context_size=2).double().eval()
    ctx = torch.randn(4, 2, dtype=torch.float64)
    greedy, lengths = dec.generate(ctx, max_length=8)
    beam1 = dec.beam_search(ctx, beam_size=1, max_length=8)
    beam5 = dec.beam_search(ctx, beam_size=5, max_length=8)
    for b, ((tokens, score), (tokens5, score5)) in enumerate(zip(beam1, beam5)):
        assert tokens == greedy[b, : lengths[b]].tolist()
        assert score5 >= score - 1e-9
        for toks, sc in ((tokens, score), (tokens5, score5)):
            seq = torch.tensor([[dec.bos_id] + toks])
            if toks[-1] == dec.eos_id:  # a finished hypothesis: its score is the model's log P
                assert math.isclose(dec.score(seq, torch.tensor([seq.shape[1]]), ctx[b:b + 1]).item(), sc, abs_tol=1e-9)


def test_generate_stops_at_eos_and_pads_after():
    dec = AutoregressiveDecoder(V, embed_dim=4, units=4)
    with torch.no_grad():
        dec.out.weight.zero_(); dec.out.bias.zero_(); dec.out.bias[2] = 10.0   # always <eos>
    tokens, lengths = dec.generate(batch_size=2, max_length=6)
    assert tokens.tolist() == [[2], [2]] and lengths.tolist() == [1, 1]
    assert dec.beam_search(batch_size=1, beam_size=3)[0][0] == [2]


def test_scheduled_sampling_schedules_and_training():
    assert teacher_forcing_schedule(0, "linear", c=0.1) == 1.0
    assert math.isclose(teacher_forcing_schedule(5, "linear", c=0.1), 0.5)
    assert math.isclose(teacher_forcing_schedule(3, "exponential", k=0.5), 0.125)
    eps = [teacher_forcing_schedule(i, "inverse_sigmoid", k=10) for i in range(0, 200, 20)]
    assert all(a > b for a, b in zip(eps, eps[1:])) and eps[0] > 0.9 and eps[-1] < 0.01
    with pytest.raises(ValueError):
        teacher_forcing_schedule(1, "cosine")
    torch.manual_seed(0)
    dec = AutoregressiveDecoder(V, embed_dim=8, units=32, context_size=3)
    ids, lengths = _batch()
    ctx = torch.eye(3)
    opt = torch.optim.Adam(dec.parameters(), lr=0.03)
    for step in range(150):
        loss = dec.loss(ids, lengths, ctx, teacher_forcing=teacher_forcing_schedule(step, "linear", c=0.004))
        opt.zero_grad(); loss.backward(); opt.step()
    dec.eval()
    assert dec.loss(ids, lengths, ctx).item() < 0.05
    tokens, n = dec.generate(ctx, max_length=6)
    assert [tokens[b, 1:n[b]].tolist() for b in range(3)] == [[6, 7, 2], [2], [4, 2]]


def test_seq2seq_overfits_a_copy_task_and_decodes_it():
    torch.manual_seed(0)
    src = torch.tensor([[5, 6, 7], [8, 9, 0], [4, 10, 11]])
    src_len = torch.tensor([3, 2, 3])
    tgt = torch.tensor([[1, 5, 6, 7, 2], [1, 8, 9, 2, 0], [1, 4, 10, 11, 2]])
    tgt_len = torch.tensor([5, 4, 5])
    model = Seq2Seq(V, V, embed_dim=8, units=32)
    opt = torch.optim.Adam(model.parameters(), lr=0.03)
    for _ in range(150):
        loss = model.loss(src, src_len, tgt, tgt_len)
        opt.zero_grad(); loss.backward(); opt.step()
    model.eval()
    tokens, lengths = model.generate(src, src_len, max_length=6)
    assert [tokens[b, : lengths[b]].tolist() for b in range(3)] == [[5, 6, 7, 2], [8, 9, 2], [4, 10, 11, 2]]
    assert [t for t, _ in model.beam_search(src, src_len, beam_size=3)] == [[5, 6, 7, 2], [8, 9, 2], [4, 10, 11, 2]]


def test_decoder_bad_input():
    dec = AutoregressiveDecoder(V, embed_dim=4, units=4, context_size=2)
    ids, lengths = _batch()
    with pytest.raises(ValueError, match="context of shape"):
        dec.loss(ids, lengths)
    with pytest.raises(ValueError, match="outside the vocabulary"):
        dec.loss(ids + V, lengths, torch.zeros(3, 2))
    with pytest.raises(ValueError, match="one length per sequence"):
        dec.loss(ids, lengths[:2], torch.zeros(3, 2))
    with pytest.raises(ValueError, match="empty sequences"):
        dec.score(ids, torch.tensor([5, 0, 3]), torch.zeros(3, 2))
    with pytest.raises(ValueError, match="probability"):
        dec.rollout_logits(ids, torch.zeros(3, 2), teacher_forcing=1.5)
    with pytest.raises(ValueError, match="beam_size"):
        dec.beam_search(torch.zeros(1, 2), beam_size=0)
    with pytest.raises(ValueError, match="takes no context"):
        AutoregressiveDecoder(V).generate(torch.zeros(1, 2))
