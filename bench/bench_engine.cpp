// Engine micro-benchmarks: (1) tape overhead per recorded node on a long chain of tiny ops, in
// steady state (the tape is cleared and reused, so the arena is warm); (2) elementwise kernel
// throughput in GB/s for add and tanh on a 4M-float tensor at 1 and 2 threads; (3) the recurrent
// step's products (h W^T forward, dG W backward, T times by one weight) with the packed-weight
// GEMM against OpenBLAS, in the same run.
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

/// T step products y_t = x_t W^T and their input gradients dX_t = dY_t W, W (G*H, H) shared by
/// all steps as in a recurrent layer, timed with the packed-weight GEMM and with OpenBLAS
/// alternately (median of 9 each): ms per step and GEMM GFLOP/s of both products.
void bench_step_products() {
    struct Shape {
        const char* name;
        std::size_t batch, hidden, gates;
    };
    constexpr std::size_t steps = 50;
    constexpr int repetitions = 9;
    if (!packed_weight_gemm_active()) {
        fmt::print("step products: the packed-weight GEMM is off or this CPU has no AVX-512F\n");
        return;
    }
    for (const Shape shape : {Shape{"small LSTM", 32, 128, 4}, Shape{"medium LSTM", 32, 512, 4},
                              Shape{"large LSTM", 64, 1024, 4}, Shape{"large GRU", 64, 1024, 3}}) {
        const std::size_t out = shape.gates * shape.hidden;
        Parameter<float> weight("weight", Tensor<float>(out, shape.hidden, 0.01f));
        const Tensor<float> x_all(steps * shape.batch, shape.hidden, 0.5f);
        const Tensor<float> seed(steps * shape.batch, out, 1.0f);
        Tape<float> tape;
        auto run = [&] {
            tape.clear();
            const Var<float> x = tape.input(x_all);
            const Var<float> w = tape.constant(weight.value); // no dW: the step products only
            std::vector<Var<float>> outputs;
            for (std::size_t t = 0; t < steps; ++t) {
                outputs.push_back(linear(slice_rows(x, t * shape.batch, (t + 1) * shape.batch), w));
            }
            tape.backward(concat_rows<float>(outputs), seed);
        };
        for (const int threads : {1, 2}) {
            set_num_threads(threads);
            std::vector<double> packed, blas;
            for (int rep = 0; rep < repetitions + 1; ++rep) {
                for (const bool use_packed : {true, false}) {
                    set_packed_weight_gemm(use_packed);
                    const double seconds = time_once(run);
                    if (rep > 0) { // the first run grows the arena
                        (use_packed ? packed : blas).push_back(seconds);
                    }
                }
            }
            set_packed_weight_gemm(true);
            const double flops = 4.0 * double(steps * shape.batch) * double(out * shape.hidden);
            fmt::print("step products, {:<11} B={:<2} H={:<4} x {}, {} thread{}: packed {:6.3f} "
                       "ms/step ({:5.1f} GFLOP/s), OpenBLAS {:6.3f} ms/step ({:5.1f} GFLOP/s): "
                       "{:.2f}x\n",
                       shape.name, shape.batch, shape.hidden, steps, threads,
                       threads == 1 ? " " : "s", median(packed) / steps * 1e3,
                       flops / median(packed) * 1e-9, median(blas) / steps * 1e3,
                       flops / median(blas) * 1e-9, median(blas) / median(packed));
        }
    }
    set_num_threads(2);
}

} // namespace

/// Prints the BLAS configuration, then the three benchmarks as medians of repetitions (--version:
/// the version only).
int main(int argc, char** argv) {
    if (argc > 1 && std::string(argv[1]) == "--version") {
        fmt::print("{}\n", cellgrad::version_line("bench_engine"));
        return 0;
    }
    const char* coretype = std::getenv("OPENBLAS_CORETYPE");
    fmt::print("openblas core: {}\n", blas_core_name());
    fmt::print("OPENBLAS_CORETYPE={}\n", coretype != nullptr ? coretype : "unset");
    fmt::print("threads (default): {}\n", num_threads());
    bench_tape_overhead();
    bench_elementwise();
    bench_step_products();
    return 0;
}
