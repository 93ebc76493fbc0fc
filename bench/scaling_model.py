#!/usr/bin/env python3
"""Step-time model of data-parallel char_rnn training on N machines (docs/distributed.md).

t_step(N) = t_compute(N) + t_allreduce(N), with the allreduce of G gradient bytes costed as a ring:
    t_allreduce(N) = 2 (N-1)/N * G / bandwidth + 2 (N-1) * latency
(cellgrad's allreduce_sum is a reduce-scatter then an all-gather: the same bytes per rank.)
Nothing overlaps: cellgrad sums the gradients after backward, as one flat buffer.

Two ways to grow N:
  weak   - every rank keeps the batch of one machine (the global batch grows with N):
           t_compute = t1, throughput = N * tokens / t_step, efficiency = t1 / t_step;
  strong - the global batch stays (each rank takes B/N streams, N <= B):
           t_compute = t1 / N, speed-up = t1 / t_step, efficiency = speed-up / N.
t1 = tokens per step / tokens per second of one machine (measured, given on the command line).

The parameter count is char_rnn's LSTM (examples/char_rnn, checkpoint shapes): embedding V x E,
per layer weight_ih 4H x (E or H), weight_hh 4H x H and two biases of 4H, decoder H x V + V.

Usage: scaling_model.py NAME V E H LAYERS BATCH SEQ TOKENS_PER_SECOND [NAME V E H ...]
"""
import sys

LINKS = [  # (name, bytes/s, latency per message in s)
    ("10 Gbit/s", 10e9 / 8, 25e-6),   # Ethernet, TCP
    ("100 Gbit/s", 100e9 / 8, 3e-6),  # InfiniBand / RoCE class
]
RANKS = [2, 4, 8, 16, 32, 64]


def allreduce_seconds(n, gradient_bytes, bandwidth, latency):
    return 2 * (n - 1) / n * gradient_bytes / bandwidth + 2 * (n - 1) * latency


def lstm_parameters(vocabulary, embedding, hidden, layers):
    total = vocabulary * embedding + hidden * vocabulary + vocabulary
    for layer in range(layers):
        inputs = embedding if layer == 0 else hidden
        total += 4 * hidden * inputs + 4 * hidden * hidden + 8 * hidden
    return total


def model(name, parameters, batch, seq, tokens_per_second):
    gradient_bytes = 4 * (parameters + 1)  # float gradients + the loss, one flat buffer
    tokens = batch * seq
    t1 = tokens / tokens_per_second
    print(f"### {name}: {parameters:,} parameters, {gradient_bytes / 1e6:.2f} MB of gradients per "
          f"step; {tokens:,} tokens per step (batch {batch} x seq {seq}); one machine "
          f"{tokens_per_second:,.0f} tok/s, so t1 = {t1 * 1e3:.1f} ms\n")
    print("| link | N | allreduce ms | weak: step ms | weak: tok/s | weak: efficiency "
          "| strong: step ms | strong: speed-up | strong: efficiency |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for link, bandwidth, latency in LINKS:
        weak_stop = strong_stop = None
        for n in RANKS:
            ar = allreduce_seconds(n, gradient_bytes, bandwidth, latency)
            weak_step = t1 + ar
            weak_eff = t1 / weak_step
            if n <= batch:
                strong_step = t1 / n + ar
                speedup = t1 / strong_step
                strong_eff = speedup / n
                strong = f"{strong_step * 1e3:.1f} | {speedup:.1f} | {strong_eff:.0%}"
                if strong_eff < 0.5 and strong_stop is None:
                    strong_stop = n
            else:
                strong = f"- | - | - (N > batch {batch})"
            if weak_eff < 0.5 and weak_stop is None:
                weak_stop = n
            print(f"| {link} | {n} | {ar * 1e3:.2f} | {weak_step * 1e3:.1f} | "
                  f"{n * tokens / weak_step:,.0f} | {weak_eff:.0%} | {strong} |")
        # N at which the allreduce takes as long as the compute (efficiency 50%).
        print(f"| {link}: below 50% efficiency from | | | weak: "
              f"{weak_stop or 'beyond 64'} | | | strong: {strong_stop or 'not within the batch'} | | |")
    print()


def main(argv):
    if len(argv) < 9 or (len(argv) - 1) % 8 != 0:
        sys.exit(__doc__)
    for i in range(1, len(argv), 8):
        name, vocabulary, embedding, hidden, layers, batch, seq, rate = argv[i:i + 8]
        parameters = lstm_parameters(int(vocabulary), int(embedding), int(hidden), int(layers))
        model(name, parameters, int(batch), int(seq), float(rate))


if __name__ == "__main__":
    main(sys.argv)
