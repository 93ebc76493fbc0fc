// Engine micro-benchmarks: (1) tape overhead per recorded node on a long chain of tiny ops, in
// steady state (the tape is cleared and reused, so the arena is warm); (2) elementwise kernel
// throughput in GB/s for add and tanh on a 4M-float tensor at 1 and 2 threads.
//
// A plain timing loop rather than Google Benchmark: the figures we want are derived units (ns per
// recorded node, GB/s of bytes read + written) at thread counts we set ourselves between runs,
// reported as the median of a fixed number of repetitions. That is a dozen lines here, needs no
// extra dependency, and keeps the output a short table that is easy to paste into notes.
#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <string>
#include <vector>

#include <fmt/format.h>

#include "cellgrad/cellgrad.hpp"

using namespace cellgrad;

namespace {

using Clock = std::chrono::steady_clock;

/// Median of the samples (the upper middle one for an even count).
double median(std::vector<double> samples) {
    std::sort(samples.begin(), samples.end());
    return samples[samples.size() / 2];
}

/// Seconds taken by one call of `body`.
template <class F>
double time_once(const F& body) {
    const Clock::time_point start = Clock::now();
    body();
    return std::chrono::duration<double>(Clock::now() - start).count();
}

/// Records a chain of `nodes` ops, alternating affine and tanh, on (1, 4) values.
Var<float> tiny_chain(Tape<float>& tape, Parameter<float>& x, std::size_t nodes) {
    Var<float> y = tape.param(x);
    for (std::size_t i = 0; i < nodes; i += 2) {
        y = tanh(affine(y, 0.9, 0.01));
    }
    return sum(y);
}

/// ns per recorded node for the tiny chain, forward only or forward + backward.
void bench_tape_overhead() {
    constexpr std::size_t nodes = 20000;
    constexpr int passes = 10; // chains per repetition
    constexpr int repetitions = 15;
    Parameter<float> x("x", Tensor<float>(1, 4, {0.1f, -0.2f, 0.3f, 0.4f}));
    Tape<float> tape;
    for (const bool backward : {false, true}) {
        // Warm-up: grows the arena and the node vector to their steady-state size.
        tape.clear();
        tiny_chain(tape, x, nodes).backward();
        const std::size_t capacity = tape.arena_capacity();
        std::vector<double> ns_per_node;
        for (int rep = 0; rep < repetitions; ++rep) {
            const double seconds = time_once([&] {
                for (int pass = 0; pass < passes; ++pass) {
                    tape.clear();
                    const Var<float> loss = tiny_chain(tape, x, nodes);
                    if (backward) {
                        loss.backward();
                    }
                }
            });
            ns_per_node.push_back(seconds * 1e9 / double(passes * tape.size()));
        }
        fmt::print("tape overhead, (1, 4) affine/tanh chain of {} nodes, {:<18} {:7.1f} ns/node "
                   "(min {:.1f}; arena {} -> {} floats)\n",
                   tape.size(),
                   backward ? "forward+backward:" : "forward only:", median(ns_per_node),
                   *std::min_element(ns_per_node.begin(), ns_per_node.end()), capacity,
                   tape.arena_capacity());
    }
}

/// GB/s of add (3 x 4 bytes per element) and tanh (2 x 4 bytes) on a 2048 x 2048 float tensor.
void bench_elementwise() {
    constexpr std::size_t rows = 2048;
    constexpr std::size_t cols = 2048;
    constexpr int repetitions = 21;
    const double elements = double(rows * cols);
    Parameter<float> a("a", Tensor<float>(rows, cols, 0.25f));
    Parameter<float> b("b", Tensor<float>(rows, cols, -0.5f));
    Tape<float> tape;
    NoGradGuard no_grad; // forward kernels only
    struct Kernel {
        const char* name;
        double bytes_per_element;
    };
    for (const Kernel kernel : {Kernel{"add", 12.0}, Kernel{"tanh", 8.0}}) {
        for (const int threads : {1, 2}) {
            set_num_threads(threads);
            std::vector<double> seconds;
            for (int rep = 0; rep < repetitions + 2; ++rep) {
                tape.clear(); // the output buffer comes from the warm arena
                const Var<float> va = tape.param(a);
                const Var<float> vb = tape.param(b);
                const double t = time_once([&] {
                    if (std::string(kernel.name) == "add") {
                        add(va, vb);
                    } else {
                        tanh(va);
                    }
                });
                if (rep >= 2) { // the first two runs fault the arena's pages in
                    seconds.push_back(t);
                }
            }
            const double best = median(seconds);
            fmt::print("{:<4} {} x {} floats, {} thread{}: {:7.2f} GB/s  ({:.3f} ms)\n",
                       kernel.name, rows, cols, threads, threads == 1 ? " " : "s",
                       kernel.bytes_per_element * elements / best * 1e-9, best * 1e3);
        }
    }
    set_num_threads(2);
}

} // namespace

/// Prints the BLAS configuration, then the two benchmarks as medians of repetitions.
int main() {
    const char* coretype = std::getenv("OPENBLAS_CORETYPE");
    fmt::print("openblas core: {}\n", blas_core_name());
    fmt::print("OPENBLAS_CORETYPE={}\n", coretype != nullptr ? coretype : "unset");
    fmt::print("threads (default): {}\n", num_threads());
    bench_tape_overhead();
    bench_elementwise();
    return 0;
}
