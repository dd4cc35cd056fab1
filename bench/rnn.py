"""Benchmark: dlmi SimpleRNN / GRU / LSTM against torch.nn.RNN / GRU / LSTM, in the same run.

Forward + backward of a batch of 64 sequences, 100 steps, 128 features, 128 units, for
- torch.nn       the reference (torch.nn.RNN/GRU/LSTM, batch_first=True),
- dlmi loop      dlmi's default path: the readable per-step Python loop,
- dlmi fused     dlmi's fast path (``fused=True``): the same parameters through torch's kernels,
all three with the same weights (the dlmi layers are made with ``from_torch``). Prints the median
time of each and the ratio to torch.nn (goal: loop <= 1.5x, fused <= 1.1x), and the memory:
on CUDA the peak allocated during forward + backward, on CPU (where torch keeps no allocator
statistics) the bytes autograd holds for the backward pass (the saved tensors), which is what
grows with the sequence length. Runs on the GPU when there is one (or DLMI_DEVICE says so).

    python bench/rnn.py [--repeats N] [--budget SECONDS] [--threads N]
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))

import dlmi  # noqa: E402
from dlmi.rnn import from_torch  # noqa: E402

BATCH, STEPS, FEATURES, UNITS = 64, 100, 128, 128
KINDS = (("SimpleRNN", torch.nn.RNN), ("GRU", torch.nn.GRU), ("LSTM", torch.nn.LSTM))


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def forward_backward(model, x, is_torch):
    output = model(x)
    sequence = output[0] if is_torch else output
    sequence.sum().backward()


def seconds(model, x, is_torch, device):
    sync(device)
    start = time.perf_counter()
    forward_backward(model, x, is_torch)
    sync(device)
    return time.perf_counter() - start


def memory_bytes(model, x, is_torch, device):
    model.zero_grad(set_to_none=True)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
        forward_backward(model, x, is_torch)
        torch.cuda.synchronize(device)
        return torch.cuda.max_memory_allocated(device) - base
    storages = {}

    def pack(tensor):
        storage = tensor.untyped_storage()
        storages[storage.data_ptr()] = storage.nbytes()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        output = model(x)
    sequence = output[0] if is_torch else output
    sequence.sum().backward()
    return sum(storages.values())


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=15, help="timed repetitions per model (median reported)")
    parser.add_argument("--budget", type=float, default=120.0,
                        help="seconds of timing in all; fewer repetitions (at least 3) when a machine is slow")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch CPU threads (default 1: on a shared machine, idle-spinning OpenMP threads "
                             "make multi-threaded timings swing by 10x and more; 0 keeps torch's choice)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = dlmi.get_device()
    torch.manual_seed(0)
    memory_kind = "peak allocated" if device.type == "cuda" else "autograd saved"
    print(f"device {device}, torch {torch.__version__}, {torch.get_num_threads()} threads; batch {BATCH}, "
          f"{STEPS} steps, {FEATURES} features, {UNITS} units; forward+backward, median of {args.repeats}")
    print(f"{'layer':<10} {'path':<12} {'ms':>8} {'x torch':>8} {'MiB':>8} {'x torch':>8}   ({memory_kind})")
    x = torch.randn(BATCH, STEPS, FEATURES, device=device)
    for name, torch_class in KINDS:
        reference = torch_class(FEATURES, UNITS, batch_first=True, device=device)
        models = {
            "torch.nn": (reference, True),
            "dlmi loop": (from_torch(reference), False),
            "dlmi fused": (from_torch(reference, fused=True), False),
        }
        for model, is_torch in models.values():  # warm-up: allocator, oneDNN/cuDNN plans
            forward_backward(model, x, is_torch)
        times = {path: [] for path in models}
        deadline = time.perf_counter() + args.budget / len(KINDS)
        for repeat in range(args.repeats):  # interleaved, so that load from elsewhere hits all alike
            if repeat >= 3 and time.perf_counter() > deadline:
                break
            for path, (model, is_torch) in models.items():
                model.zero_grad(set_to_none=True)
                times[path].append(seconds(model, x, is_torch, device))
        medians = {path: statistics.median(ts) for path, ts in times.items()}
        memory = {path: memory_bytes(model, x, is_torch, device) for path, (model, is_torch) in models.items()}
        for path in models:
            print(f"{name:<10} {path:<12} {1e3 * medians[path]:8.2f} {medians[path] / medians['torch.nn']:8.2f} "
                  f"{memory[path] / 2**20:8.2f} {memory[path] / memory['torch.nn']:8.2f}   n={len(times[path])}")


if __name__ == "__main__":
    main()
