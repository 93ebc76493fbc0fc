// bench_training: tokens/s of one full training step (embedding -> LSTM/GRU/RNN over all steps ->
// linear decoder on every step -> mean cross-entropy -> backward -> SGD), cellgrad against
// LibTorch, run alternately in one process, plus the sgemm ceiling of the same GEMM shapes.
//
// Progress goes to stderr; the report (markdown) goes to stdout. See bench/README.md.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iostream>
#include <memory>
#include <random>
#include <string>
#include <thread>
#include <tuple>
#include <vector>

#include <CLI/CLI.hpp>
#include <cblas.h>
#include <fmt/format.h>

#include <cellgrad/cellgrad.hpp>
#include <cellgrad/nn.hpp>
#include <cellgrad/optim/sgd.hpp>

#include "torch_step.hpp"
#ifdef CELLGRAD_BENCH_WITH_ONEDNN
#include "onednn_step.hpp"
#endif
#if defined(__x86_64__)
#include "process_memory.hpp"
#include <immintrin.h>
#endif

namespace {

namespace nn = cellgrad::nn;
using bench::StepShape;
using cellgrad::Var;

/// Vocabulary of the embedding and the decoder (char-rnn's tiny-shakespeare size).
constexpr std::size_t vocab_size = 65;

/// A named (batch, steps, input, hidden) configuration.
struct Config {
    std::string name;
    std::size_t batch;
    std::size_t steps;
    std::size_t input;
    std::size_t hidden;
};

/// The configurations of issue 6.
const std::vector<Config> known_configs = {
    {"small", 32, 64, 64, 128},
    {"medium", 32, 64, 128, 512},
    {"charrnn-b1", 1, 25, 65, 100},
    {"large", 64, 100, 256, 1024},
};

/// Stacked gate blocks G of a cell: 4 (LSTM), 3 (GRU), 1 (RNN).
std::size_t gate_count(const std::string& cell) {
    if (cell == "lstm" || cell == "peephole-lstm" || cell == "layernorm-lstm") {
        return 4; // the variants run the LSTM's GEMMs
    }
    if (cell == "gru") {
        return 3;
    }
    if (cell == "rnn") {
        return 1;
    }
    throw cellgrad::Error(fmt::format("unknown cell '{}': expected lstm, gru, rnn, "
                                      "peephole-lstm or layernorm-lstm",
                                      cell));
}

/// Rows of the input-projection GEMMs: T*B embedded rows, or the V table rows when the step
/// projects the embedding table (Recurrent::forward does for embedded tokens when V < T*B).
std::size_t input_rows(const StepShape& s, bool project_table) {
    return project_table ? std::min(s.vocab, s.steps * s.batch) : s.steps * s.batch;
}

/// GEMM FLOPs of one training step: forward 2*(R*in*GH + T*B*(H*GH + H*V)) with R input rows,
/// backward twice that.
double step_flops(const StepShape& s, bool project_table) {
    const double gh = double(gate_count(s.cell)) * double(s.hidden);
    const double forward = 2.0 * double(input_rows(s, project_table)) * double(s.input) * gh +
                           2.0 * double(s.steps) * double(s.batch) *
                               (double(s.hidden) * gh + double(s.hidden) * double(s.vocab));
    return 3.0 * forward;
}

/// Median of the samples (mean of the two middle ones for an even count).
double median(std::vector<double> samples) {
    if (samples.empty()) {
        return std::nan("");
    }
    std::sort(samples.begin(), samples.end());
    const std::size_t mid = samples.size() / 2;
    return samples.size() % 2 == 1 ? samples[mid] : 0.5 * (samples[mid - 1] + samples[mid]);
}

/// The cellgrad model + SGD; step() is Trainer::train_step without clipping or carried state.
class CellgradStep : public bench::TrainingStep {
  public:
    /// Builds embedding, sequence layer and decoder from `seed` and an SGD over all of them;
    /// `from_tokens` feeds the layer the embedded tokens, so it projects the table's rows; else
    /// the embedded rows behind a zero-copy slice, which it takes as plain rows (LibTorch's GEMMs).
    CellgradStep(const StepShape& shape, std::vector<std::int32_t> inputs,
                 std::vector<std::int32_t> targets, double lr, std::uint64_t seed, bool from_tokens)
        : shape_(shape), from_tokens_(from_tokens), rng_(seed),
          embedding_(shape.vocab, shape.input, rng_, "embedding."), rnn_(make_layer(shape, rng_)),
          decoder_(shape.hidden, shape.vocab, rng_, true, "decoder."),
          sgd_(parameters(), cellgrad::SGDOptions{.lr = lr}), inputs_(std::move(inputs)),
          targets_(std::move(targets)) {
        tape_.reuse_gradient_memory(true); // as LibTorch frees each gradient after its use
    }

    /// One full training step on the fixed batch.
    double step() override {
        const double loss = loss_and_gradients();
        sgd_.step();
        return loss;
    }

    /// Forward and backward without the SGD update; returns the loss.
    double loss_and_gradients() {
        tape_.clear();
        const Var<float> embedded = embedding_.forward(tape_, inputs_); // (T*B, E)
        const nn::RecurrentOutput<float> output = rnn_->forward(
            from_tokens_ ? embedded : cellgrad::slice_rows(embedded, 0, inputs_.size()),
            shape_.batch);
        const Var<float> logits = decoder_.forward(output.output); // (T*B, V)
        const Var<float> loss = cellgrad::cross_entropy<float>(logits, targets_);
        sgd_.zero_grad();
        tape_.backward(loss);
        return loss.item();
    }

    /// Every parameter's value (or, with `gradients`, its gradient) under its PyTorch name.
    bench::ModelTensors tensors(bool gradients) {
        bench::ModelTensors out;
        for (cellgrad::Parameter<float>* parameter : parameters()) {
            const cellgrad::Tensor<float>& tensor = gradients ? parameter->grad : parameter->value;
            out.names.push_back(parameter->name);
            out.values.emplace_back(tensor.data(), tensor.data() + tensor.size());
        }
        return out;
    }

    /// Bytes the tape holds: node values and gradients of the largest step so far.
    std::size_t arena_bytes() const { return tape_.memory_bytes(); }

  private:
    /// One layer of the shape's cell (nn::make_recurrent: lstm, gru, rnn or a variant).
    static std::unique_ptr<nn::Recurrent<float>> make_layer(const StepShape& shape,
                                                            std::mt19937_64& rng) {
        nn::RecurrentOptions options;
        options.input_size = shape.input;
        options.hidden_size = shape.hidden;
        options.parameter_prefix = "rnn.";
        gate_count(shape.cell); // validates the name
        return nn::make_recurrent<float>(shape.cell, options, rng);
    }

    /// Embedding, layer and decoder parameters.
    std::vector<cellgrad::Parameter<float>*> parameters() {
        std::vector<cellgrad::Parameter<float>*> list = embedding_.parameters();
        for (cellgrad::Parameter<float>* parameter : rnn_->parameters()) {
            list.push_back(parameter);
        }
        for (cellgrad::Parameter<float>* parameter : decoder_.parameters()) {
            list.push_back(parameter);
        }
        return list;
    }

    StepShape shape_;
    bool from_tokens_;
    std::mt19937_64 rng_;
    nn::Embedding<float> embedding_;
    std::unique_ptr<nn::Recurrent<float>> rnn_;
    nn::Linear<float> decoder_;
    cellgrad::SGD<float> sgd_;
    cellgrad::Tape<float> tape_;
    std::vector<std::int32_t> inputs_;
    std::vector<std::int32_t> targets_;
};

/// One cblas_sgemm call shape (row-major), repeated `repeat` times.
struct Gemm {
    CBLAS_TRANSPOSE trans_a;
    CBLAS_TRANSPOSE trans_b;
    std::size_t m, n, k;
    std::size_t repeat;
};

/// The GEMMs of one training step as plain cblas_sgemm calls: the sgemm ceiling.
///
/// The recurrence forces the per-step GEMMs (h W_hh^T forward, dG W_hh backward: T calls of
/// (B x H)(H x GH) and (B x GH)(GH x H)); everything else is one big GEMM over all T*B rows
/// (dW_hh = dG^T H, the decoder and its dX and dW) or over the R input rows (input projection,
/// its dX and dW: R = T*B, or V when the embedding table is projected).
class GemmSet {
  public:
    /// Lays out the calls and allocates random operands large enough for each.
    GemmSet(const StepShape& s, bool project_table) {
        const std::size_t tb = s.steps * s.batch;
        const std::size_t rows = input_rows(s, project_table);
        const std::size_t gh = gate_count(s.cell) * s.hidden;
        const std::size_t h = s.hidden;
        const std::size_t v = s.vocab;
        const std::size_t in = s.input;
        calls_ = {
            {CblasNoTrans, CblasTrans, rows, gh, in, 1},           // X W_ih^T
            {CblasNoTrans, CblasTrans, s.batch, gh, h, s.steps},   // h_t W_hh^T, per step
            {CblasNoTrans, CblasTrans, tb, v, h, 1},               // H W_dec^T
            {CblasNoTrans, CblasNoTrans, tb, h, v, 1},             // dH = dY W_dec
            {CblasTrans, CblasNoTrans, v, h, tb, 1},               // dW_dec = dY^T H
            {CblasNoTrans, CblasNoTrans, s.batch, h, gh, s.steps}, // dh_t = dG_t W_hh, per step
            {CblasTrans, CblasNoTrans, gh, h, tb, 1},              // dW_hh = dG^T H_prev
            {CblasNoTrans, CblasNoTrans, rows, in, gh, 1},         // dX = dG W_ih
            {CblasTrans, CblasNoTrans, gh, in, rows, 1},           // dW_ih = dG^T X
        };
        std::size_t largest = 0;
        for (const Gemm& call : calls_) {
            largest = std::max({largest, call.m * call.k, call.k * call.n, call.m * call.n});
            flops_ += 2.0 * double(call.m) * double(call.n) * double(call.k) * double(call.repeat);
        }
        std::mt19937_64 rng(7);
        std::uniform_real_distribution<float> draw(-1.0f, 1.0f);
        for (std::vector<float>* buffer : {&a_, &b_, &c_}) {
            buffer->resize(largest);
            for (float& value : *buffer) {
                value = draw(rng);
            }
        }
    }

    /// Runs every call once; returns a checksum so that nothing is optimised away.
    double run() {
        for (const Gemm& call : calls_) {
            const auto m = static_cast<int>(call.m);
            const auto n = static_cast<int>(call.n);
            const auto k = static_cast<int>(call.k);
            const int lda = call.trans_a == CblasNoTrans ? k : m;
            const int ldb = call.trans_b == CblasNoTrans ? n : k;
            for (std::size_t r = 0; r < call.repeat; ++r) {
                cblas_sgemm(CblasRowMajor, call.trans_a, call.trans_b, m, n, k, 1.0f, a_.data(),
                            lda, b_.data(), ldb, 0.0f, c_.data(), n);
            }
        }
        return double(c_[0]);
    }

    /// FLOPs of one run(); equals step_flops() of the shape.
    double flops() const { return flops_; }

  private:
    std::vector<Gemm> calls_;
    std::vector<float> a_, b_, c_;
    double flops_ = 0;
};

/// Something timed once per round: how to set its threads and how to run it.
struct Contender {
    /// A contender with no samples yet.
    Contender(std::string name_, std::function<void()> set_threads_, std::function<double()> run_)
        : name(std::move(name_)), set_threads(std::move(set_threads_)), run(std::move(run_)) {}
    std::string name;
    std::function<void()> set_threads;
    std::function<double()> run;
    std::vector<double> seconds;        ///< timed rounds only
    double back_to_back = std::nan(""); ///< oneDNN: median of steps run one after another
    double best_seconds = std::nan(""); ///< cellgrad: its best timing at any thread count
    std::string best_at;                ///< where that was ("1 thread, back to back")
    double first_loss = std::nan("");
    double last_loss = std::nan("");
};

#ifdef CELLGRAD_BENCH_WITH_TORCH
/// A LibTorch thread split: torch intra-op threads x OpenBLAS threads.
struct Split {
    int torch;
    int blas;
};

/// Splits at `n` cores: every (a, b) with a, b <= n and max(a, b) = n.
std::vector<Split> splits_for(int n) {
    std::vector<Split> list;
    for (int a = n; a >= 1; --a) {
        for (int b = 1; b <= n; ++b) {
            if (std::max(a, b) == n) {
                list.push_back({a, b});
            }
        }
    }
    return list;
}
#endif

/// What one contender's training step holds, measured in a process of its own.
struct MemoryFigures {
    double peak_bytes = std::nan("");      ///< VmHWM over the steps - VmRSS before the model
    double component_bytes = std::nan(""); ///< cellgrad: tape arena; oneDNN: RNN workspace
};

/// One row of the report.
struct Row {
    std::string config;
    std::string cell;
    int threads = 0;
    double tokens = 0;
    double flops = 0;            ///< GEMM FLOPs of the step on T*B embedded rows (LibTorch's)
    double projected_flops = 0;  ///< the same with the embedding table projected (token path)
    double cellgrad_seconds = 0; ///< token path
    double cellgrad_embedded_seconds = 0; ///< forward on the embedded rows
    /// Each cellgrad path at its best, as oneDNN is taken: the rounds at the row's thread count,
    /// or back to back at any count up to it; with where that was ("1 thread, back to back").
    double cellgrad_best_seconds = 0;
    double cellgrad_embedded_best_seconds = 0;
    std::string cellgrad_best_at, cellgrad_embedded_best_at;
    double sgemm_seconds = 0;
    double sgemm_projected_seconds = 0;
    std::vector<std::pair<std::string, double>> torch_seconds; ///< per split, median
    /// oneDNN per thread count: (name, median in the rounds, median back to back)
    std::vector<std::tuple<std::string, double, double>> onednn_seconds;
    std::string onednn_implementation;
    /// Peak memory per contender ("cellgrad", "cellgrad-embedded", "LibTorch 1x1", "oneDNN").
    std::vector<std::pair<std::string, MemoryFigures>> memory;
    std::size_t timed = 0;
};

/// Value of an environment variable, or "(unset)".
std::string env_or_unset(const char* name) {
    const char* value = std::getenv(name);
    return value == nullptr ? std::string("(unset)") : fmt::format("`{}`", value);
}

/// The three load averages from /proc/loadavg, or "n/a".
std::string load_average() {
    std::ifstream file("/proc/loadavg");
    double one = 0, five = 0, fifteen = 0;
    if (file >> one >> five >> fifteen) {
        return fmt::format("{:.2f} {:.2f} {:.2f}", one, five, fifteen);
    }
    return "n/a";
}

/// GFLOP/s of OpenBLAS on one square 2048^3 sgemm at `threads` OpenBLAS threads (median of 5
/// after one warm-up): the machine's practical ceiling, for scale.
double square_sgemm_gflops(int threads) {
    constexpr int n = 2048;
    std::vector<float> a(std::size_t(n) * n, 0.5f), b(a.size(), 0.25f), c(a.size());
    openblas_set_num_threads(threads);
    std::vector<double> seconds;
    for (int round = 0; round < 6; ++round) {
        const auto start = std::chrono::steady_clock::now();
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, n, n, 1.0f, a.data(), n, b.data(),
                    n, 0.0f, c.data(), n);
        const std::chrono::duration<double> elapsed = std::chrono::steady_clock::now() - start;
        if (round > 0) {
            seconds.push_back(elapsed.count());
        }
    }
    openblas_set_num_threads(1);
    return 2.0 * n * double(n) * n / median(seconds) * 1e-9;
}

#if defined(__x86_64__)
/// 16 independent chains of `iterations` AVX-512 FMAs on registers (no memory traffic): 512
/// FLOPs per iteration; returns a value that depends on every chain.
__attribute__((target("avx512f"))) float fma_chains_avx512(std::size_t iterations) {
    __m512 chains[16];
    for (int i = 0; i < 16; ++i) {
        chains[i] = _mm512_set1_ps(float(i) * 1e-3f);
    }
    const __m512 scale = _mm512_set1_ps(0.999999f);
    const __m512 offset = _mm512_set1_ps(1e-7f);
    for (std::size_t it = 0; it < iterations; ++it) {
        for (__m512& chain : chains) {
            chain = _mm512_fmadd_ps(chain, scale, offset);
        }
    }
    // Lanes summed through memory: GCC 12 warns (-Wuninitialized, a false positive inside its
    // header) on _mm512_reduce_add_ps.
    alignas(64) float lanes[16];
    float sum = 0;
    for (const __m512& chain : chains) {
        _mm512_store_ps(lanes, chain);
        for (const float lane : lanes) {
            sum += lane;
        }
    }
    return sum;
}

/// The same with AVX2 FMAs (8 lanes): 256 FLOPs per iteration.
__attribute__((target("avx2,fma"))) float fma_chains_avx2(std::size_t iterations) {
    __m256 chains[16];
    for (int i = 0; i < 16; ++i) {
        chains[i] = _mm256_set1_ps(float(i) * 1e-3f);
    }
    const __m256 scale = _mm256_set1_ps(0.999999f);
    const __m256 offset = _mm256_set1_ps(1e-7f);
    for (std::size_t it = 0; it < iterations; ++it) {
        for (__m256& chain : chains) {
            chain = _mm256_fmadd_ps(chain, scale, offset);
        }
    }
    alignas(32) float lanes[8];
    float sum = 0;
    for (const __m256& chain : chains) {
        _mm256_store_ps(lanes, chain);
        for (const float lane : lanes) {
            sum += lane;
        }
    }
    return sum;
}
#endif

/// The machine's float FMA peak at `threads` threads, measured: every thread runs register-only
/// FMA chains at once (the widest vectors the CPU has); best of 3 runs of about 0.3 s. Returns
/// GFLOP/s and the vector ISA used ("n/a" off x86-64).
std::pair<double, std::string> fma_peak_gflops(int threads) {
#if defined(__x86_64__)
    const bool wide = __builtin_cpu_supports("avx512f");
    if (!wide && !__builtin_cpu_supports("fma")) {
        return {std::nan(""), "no FMA"};
    }
    const std::size_t iterations = 20'000'000;
    const double flops_per_thread = double(iterations) * (wide ? 512.0 : 256.0);
    double best = 0;
    for (int run = 0; run < 3; ++run) {
        std::vector<std::thread> workers;
        std::vector<float> sums(static_cast<std::size_t>(threads));
        const auto start = std::chrono::steady_clock::now();
        for (int t = 0; t < threads; ++t) {
            workers.emplace_back([&sums, t, wide, iterations] {
                sums[std::size_t(t)] =
                    wide ? fma_chains_avx512(iterations) : fma_chains_avx2(iterations);
            });
        }
        for (std::thread& worker : workers) {
            worker.join();
        }
        const std::chrono::duration<double> elapsed = std::chrono::steady_clock::now() - start;
        if (!std::isfinite(sums[0])) {
            throw cellgrad::Error("fma_peak_gflops: the FMA chains diverged");
        }
        best = std::max(best, flops_per_thread * threads / elapsed.count() * 1e-9);
    }
    return {best, wide ? "AVX-512" : "AVX2"};
#else
    (void)threads;
    return {std::nan(""), "n/a"};
#endif
}

using cellgrad::bench::resident_bytes;

/// Resets VmHWM to the current VmRSS (writes 5 to /proc/self/clear_refs); false if refused.
bool reset_peak_resident() {
    std::ofstream clear("/proc/self/clear_refs");
    clear << "5" << std::flush;
    return bool(clear);
}

/// A rate as a whole number, or "n/a" when it is not finite.
std::string format_rate(double value) {
    if (!std::isfinite(value)) {
        return "n/a";
    }
    return fmt::format("{:.0f}", value);
}

/// Runs all contenders round-robin: `warmup` untimed rounds, then `timed` timed rounds. Each
/// round starts one contender later, so that every contender follows every other equally often,
/// and each step starts after a pause of `settle`: multi-threaded OpenBLAS and LibTorch's OpenMP
/// leave their workers spinning on the cores for a while after they return, which slowed
/// whatever ran next (cellgrad at 2 threads on `medium`: 26k tok/s in the rounds, 41k alone).
void run_rounds(std::vector<Contender>& contenders, std::size_t warmup, std::size_t timed,
                std::chrono::milliseconds settle) {
    for (std::size_t round = 0; round < warmup + timed; ++round) {
        for (std::size_t turn = 0; turn < contenders.size(); ++turn) {
            Contender& contender = contenders[(round + turn) % contenders.size()];
            contender.set_threads();
            std::this_thread::sleep_for(settle);
            const auto start = std::chrono::steady_clock::now();
            const double loss = contender.run();
            const auto stop = std::chrono::steady_clock::now();
            if (!std::isfinite(loss)) {
                throw cellgrad::Error(fmt::format("{}: non-finite result {} in round {}",
                                                  contender.name, loss, round));
            }
            if (round == 0) {
                contender.first_loss = loss;
            }
            contender.last_loss = loss;
            if (round >= warmup) {
                contender.seconds.push_back(std::chrono::duration<double>(stop - start).count());
            }
        }
    }
}

/// Median seconds of `timed` steps of `contender` run one after another (after one untimed
/// step), with no pause between them, at the thread count set last.
double time_back_to_back(Contender& contender, std::size_t timed) {
    std::vector<double> seconds;
    for (std::size_t round = 0; round < timed + 1; ++round) {
        const auto start = std::chrono::steady_clock::now();
        contender.run();
        const auto stop = std::chrono::steady_clock::now();
        if (round > 0) {
            seconds.push_back(std::chrono::duration<double>(stop - start).count());
        }
    }
    return median(seconds);
}

/// "n thread(s), timing".
std::string timing_label(int threads, const char* timing) {
    return fmt::format("{} thread{}, {}", threads, threads == 1 ? "" : "s", timing);
}

/// Command-line options.
struct Options {
    std::vector<std::string> configs = {"small", "medium", "charrnn-b1", "large"};
    std::vector<std::string> cells = {"lstm", "gru", "rnn"};
    std::vector<int> threads = {1, 2};
    std::size_t warmup = 2;
    std::size_t steps = 10;
    std::size_t large_warmup = 1;
    int settle_ms = 200;
    std::size_t large_steps = 10;
    double lr = 0.01;
    std::uint64_t seed = 1;
    bool torch = true;
    bool onednn = true;
    bool memory = true; ///< probe each contender's peak memory in a child process
    bool check_onednn = false;
    std::string memory_probe; ///< internal: this process is the child probing this contender
    std::string only;         ///< run only the contender of this name (for profiling); empty: all
};

/// The row's batch: B*T time-major input and target token ids drawn from `seed`.
std::pair<std::vector<std::int32_t>, std::vector<std::int32_t>> make_tokens(std::size_t tokens,
                                                                            std::uint64_t seed) {
    std::mt19937_64 rng(seed);
    std::uniform_int_distribution<std::int32_t> token(0, std::int32_t(vocab_size) - 1);
    std::vector<std::int32_t> inputs(tokens), targets(tokens);
    for (std::size_t i = 0; i < tokens; ++i) {
        inputs[i] = token(rng);
        targets[i] = token(rng);
    }
    return {inputs, targets};
}

/// The child's side of probe_memory: builds only `options.memory_probe` for the first config and
/// cell, runs 3 steps at 1 thread and prints "memory-probe <peak bytes> <component bytes>".
int run_memory_probe(const Config& config, const std::string& cell, const Options& options) {
    const StepShape shape{cell,         config.batch,  config.steps,
                          config.input, config.hidden, vocab_size};
    const auto [inputs, targets] = make_tokens(config.batch * config.steps, options.seed);
    cellgrad::set_num_threads(1);
    openblas_set_num_threads(1);
    reset_peak_resident();
    const double baseline = resident_bytes().first;
    std::shared_ptr<bench::TrainingStep> step;
    std::function<double()> component = [] { return std::nan(""); };
    const std::string& name = options.memory_probe;
    if (name == "cellgrad" || name == "cellgrad-embedded") {
        auto cellgrad_step = std::make_shared<CellgradStep>(shape, inputs, targets, options.lr,
                                                            options.seed, name == "cellgrad");
        component = [cellgrad_step] { return double(cellgrad_step->arena_bytes()); };
        step = cellgrad_step;
#ifdef CELLGRAD_BENCH_WITH_TORCH
    } else if (name == "LibTorch") {
        bench::set_torch_threads(1);
        step = bench::make_torch_step(shape, inputs, targets, options.lr, options.seed);
#endif
#ifdef CELLGRAD_BENCH_WITH_ONEDNN
    } else if (name == "oneDNN") {
        bench::set_onednn_threads(1);
        std::shared_ptr<bench::OnednnStep> onednn_step =
            bench::make_onednn_step(shape, inputs, targets, options.lr, nullptr, options.seed);
        component = [onednn_step] { return double(onednn_step->workspace_bytes()); };
        step = onednn_step;
#endif
    } else {
        throw cellgrad::Error(
            fmt::format("--memory-probe {}: no such contender in this build", name));
    }
    for (int round = 0; round < 3; ++round) {
        step->step();
    }
    fmt::print("memory-probe {:.0f} {:.0f}\n", resident_bytes().second - baseline, component());
    return 0;
}

/// Peak memory of one contender's training step, measured in a fresh process of this program
/// (so that no other contender's allocations, thread pools or freed-but-kept heap count):
/// VmHWM over 3 steps minus VmRSS before its model was built, plus its own component figure.
MemoryFigures probe_memory(const std::string& contender, const Config& config,
                           const std::string& cell, const Options& options) {
    const std::string self = std::filesystem::read_symlink("/proc/self/exe").string();
    const std::string command =
        fmt::format("'{}' --memory-probe '{}' --configs {} --cells {} --seed {} --lr {}", self,
                    contender, config.name, cell, options.seed, options.lr);
    std::FILE* pipe = popen(command.c_str(), "r");
    MemoryFigures figures;
    if (pipe == nullptr) {
        return figures;
    }
    char line[256] = {};
    while (std::fgets(line, sizeof line, pipe) != nullptr) {
        double peak = 0, component = 0;
        if (std::sscanf(line, "memory-probe %lf %lf", &peak, &component) == 2) {
            figures.peak_bytes = peak;
            figures.component_bytes = component;
        }
    }
    if (pclose(pipe) != 0) {
        std::cerr << fmt::format("memory probe of {} ({} {}) failed\n", contender, config.name,
                                 cell);
    }
    return figures;
}

/// The pause before each step: --settle-ms for multi-threaded rows; none at 1 thread, where no
/// contender leaves workers behind.
std::chrono::milliseconds settle_time(const Options& options, int threads) {
    return std::chrono::milliseconds(threads > 1 ? options.settle_ms : 0);
}

/// Measures one (config, cell, threads) row: cellgrad, each LibTorch split and the sgemm set.
Row measure(const Config& config, const std::string& cell, int threads, const Options& options) {
    const StepShape shape{cell,         config.batch,  config.steps,
                          config.input, config.hidden, vocab_size};
    const std::size_t tokens = config.batch * config.steps;
    const auto [inputs, targets] = make_tokens(tokens, options.seed);

    // When V >= T*B the token path gathers first, so both cellgrad paths are the same step.
    const bool projects_table = input_rows(shape, true) < tokens;
    std::vector<Contender> contenders;
    for (const bool from_tokens : {true, false}) {
        if (!from_tokens && !projects_table) {
            continue;
        }
        auto cellgrad_step = std::make_shared<CellgradStep>(shape, inputs, targets, options.lr,
                                                            options.seed, from_tokens);
        contenders.emplace_back(
            from_tokens ? "cellgrad" : "cellgrad-embedded",
            [threads] { cellgrad::set_num_threads(threads); },
            [cellgrad_step] { return cellgrad_step->step(); });
    }
#ifdef CELLGRAD_BENCH_WITH_TORCH
    if (options.torch) {
        for (const Split split : splits_for(threads)) {
            // One model per split so that each split trains its own copy from the same init.
            std::shared_ptr<bench::TrainingStep> torch_step =
                bench::make_torch_step(shape, inputs, targets, options.lr, options.seed);
            contenders.emplace_back(
                fmt::format("{}x{}", split.torch, split.blas),
                [split] {
                    bench::set_torch_threads(split.torch);
                    openblas_set_num_threads(split.blas);
                },
                [torch_step] { return torch_step->step(); });
        }
    }
#endif
#ifdef CELLGRAD_BENCH_WITH_ONEDNN
    std::string onednn_implementation;
    if (options.onednn && bench::onednn_supports(cell)) {
        for (int onednn_threads = threads; onednn_threads >= 1; --onednn_threads) {
            // Its best thread count: every count up to the row's, each with its own model.
            std::shared_ptr<bench::OnednnStep> onednn_step =
                bench::make_onednn_step(shape, inputs, targets, options.lr, nullptr, options.seed);
            onednn_implementation = onednn_step->implementation();
            contenders.emplace_back(
                fmt::format("onednn-{}", onednn_threads),
                [onednn_threads] { bench::set_onednn_threads(onednn_threads); },
                [onednn_step] { return onednn_step->step(); });
        }
    }
#endif
    std::vector<std::shared_ptr<GemmSet>> gemm_sets;
    for (const bool project_table : {false, true}) {
        if (project_table && !projects_table) {
            continue;
        }
        gemm_sets.push_back(std::make_shared<GemmSet>(shape, project_table));
        contenders.emplace_back(
            project_table ? "sgemm-projected" : "sgemm",
            [threads] { openblas_set_num_threads(threads); },
            [gemms = gemm_sets.back()] { return gemms->run(); });
    }

    if (!options.only.empty()) {
        std::erase_if(contenders, [&](const Contender& c) { return c.name != options.only; });
        if (contenders.empty()) {
            throw cellgrad::Error(fmt::format("--only {}: no such contender", options.only));
        }
        run_rounds(contenders, options.warmup, options.steps, settle_time(options, threads));
        std::cerr << fmt::format("{} {} {}t {}: {:.0f} tok/s\n", config.name, cell, threads,
                                 options.only, double(tokens) / median(contenders[0].seconds));
        return {};
    }
    const bool large = config.name == "large";
    const std::size_t warmup = large ? options.large_warmup : options.warmup;
    const std::size_t timed = large ? options.large_steps : options.steps;
    run_rounds(contenders, warmup, timed, settle_time(options, threads));
    // oneDNN at its best: an OpenMP region that starts after the settle pause pays for waking its
    // threads (5-8 ms here) and oneDNN runs hundreds per step, so it is also timed back to back.
    for (Contender& contender : contenders) {
        if (contender.name.starts_with("onednn")) {
            contender.set_threads();
            contender.back_to_back = time_back_to_back(contender, timed);
        }
    }
    // cellgrad taken the same way: its TBB workers also sleep through the settle pause, and a
    // 2-thread row may be faster at 1 (small shapes): back to back at every count up to the row's.
    // The best of these and of the rounds is what the oneDNN table compares.
    for (Contender& contender : contenders) {
        if (!contender.name.starts_with("cellgrad")) {
            continue;
        }
        contender.best_seconds = median(contender.seconds);
        contender.best_at = timing_label(threads, "rounds");
        for (int count = threads; count >= 1; --count) {
            cellgrad::set_num_threads(count);
            const double seconds = time_back_to_back(contender, timed);
            if (seconds < contender.best_seconds) {
                contender.best_seconds = seconds;
                contender.best_at = timing_label(count, "back to back");
            }
        }
    }

    Row row;
    row.config = config.name;
    row.cell = cell;
    row.threads = threads;
    row.tokens = double(tokens);
    row.flops = step_flops(shape, false);
    row.projected_flops = step_flops(shape, true);
    row.timed = timed;
    for (const Contender& contender : contenders) {
        const double seconds = median(contender.seconds);
        if (contender.name == "cellgrad") {
            row.cellgrad_seconds = seconds;
            row.cellgrad_best_seconds = contender.best_seconds;
            row.cellgrad_best_at = contender.best_at;
        } else if (contender.name == "cellgrad-embedded") {
            row.cellgrad_embedded_seconds = seconds;
            row.cellgrad_embedded_best_seconds = contender.best_seconds;
            row.cellgrad_embedded_best_at = contender.best_at;
        } else if (contender.name == "sgemm") {
            row.sgemm_seconds = seconds;
        } else if (contender.name == "sgemm-projected") {
            row.sgemm_projected_seconds = seconds;
        } else if (contender.name.starts_with("onednn")) {
            row.onednn_seconds.emplace_back(contender.name, seconds, contender.back_to_back);
        } else {
            row.torch_seconds.emplace_back(contender.name, seconds);
        }
    }
#ifdef CELLGRAD_BENCH_WITH_ONEDNN
    row.onednn_implementation = onednn_implementation;
#endif
    if (options.memory && threads == options.threads.front()) {
        std::vector<std::string> probed = {"cellgrad"};
        if (projects_table) {
            probed.emplace_back("cellgrad-embedded");
        }
#ifdef CELLGRAD_BENCH_WITH_TORCH
        if (options.torch) {
            probed.emplace_back("LibTorch");
        }
#endif
#ifdef CELLGRAD_BENCH_WITH_ONEDNN
        if (options.onednn && bench::onednn_supports(cell)) {
            probed.emplace_back("oneDNN");
        }
#endif
        for (const std::string& name : probed) {
            row.memory.emplace_back(name, probe_memory(name, config, cell, options));
        }
    }
    if (!projects_table) {
        row.cellgrad_embedded_seconds = row.cellgrad_seconds;
        row.cellgrad_embedded_best_seconds = row.cellgrad_best_seconds;
        row.cellgrad_embedded_best_at = row.cellgrad_best_at;
        row.sgemm_projected_seconds = row.sgemm_seconds;
    }
    if (std::abs(gemm_sets.front()->flops() - row.flops) > 1e-6 * row.flops ||
        std::abs(gemm_sets.back()->flops() - row.projected_flops) > 1e-6 * row.flops) {
        throw cellgrad::Error("bench_training: the sgemm sets and the FLOP formula disagree");
    }

    std::string line =
        fmt::format("{:<10} {:<4} {}t  cellgrad {:>9.0f} tok/s (loss {:.3f}->{:.3f})", config.name,
                    cell, threads, row.tokens / row.cellgrad_seconds, contenders.front().first_loss,
                    contenders.front().last_loss);
    if (projects_table) {
        line += fmt::format("  embedded rows {:.0f}", row.tokens / row.cellgrad_embedded_seconds);
    }
    line +=
        fmt::format("  at best {:.0f} ({}) / {:.0f} ({})", row.tokens / row.cellgrad_best_seconds,
                    row.cellgrad_best_at, row.tokens / row.cellgrad_embedded_best_seconds,
                    row.cellgrad_embedded_best_at);
    for (const Contender& contender : contenders) {
        if (contender.name.starts_with("onednn")) {
            line += fmt::format("  {} {:.0f} / {:.0f} back to back (loss {:.3f}->{:.3f})",
                                contender.name, row.tokens / median(contender.seconds),
                                row.tokens / contender.back_to_back, contender.first_loss,
                                contender.last_loss);
        } else if (contender.name.find("cellgrad") == std::string::npos &&
                   contender.name.find("sgemm") == std::string::npos) {
            line += fmt::format("  torch {} {:.0f} (loss {:.3f}->{:.3f})", contender.name,
                                row.tokens / median(contender.seconds), contender.first_loss,
                                contender.last_loss);
        }
    }
    line += fmt::format("  sgemm {:.1f} GFLOP/s  [load {}]", row.flops / row.sgemm_seconds * 1e-9,
                        load_average());
    std::cerr << line << std::endl;
    return row;
}

/// The report: environment, the main table and the per-split LibTorch table, in markdown.
std::string report(const std::vector<Row>& rows, const Options& options, bool with_torch,
                   bool with_onednn, const std::string& load_before) {
    const std::string core = cellgrad::blas_core_name();
    std::string text;
    text += "## Training step: cellgrad vs LibTorch\n\n";
    text += fmt::format("- BLAS: {} (core **{}**)\n", openblas_get_config(), core);
    text += fmt::format("- OPENBLAS_CORETYPE: {}\n", env_or_unset("OPENBLAS_CORETYPE"));
    text += fmt::format("- GLIBC_TUNABLES: {}\n", env_or_unset("GLIBC_TUNABLES"));
#ifdef CELLGRAD_BENCH_WITH_TORCH
    text += fmt::format("- peer: {}{}\n", bench::torch_description(),
                        with_torch ? "" : " (disabled by --no-torch)");
#else
    text += "- peer: LibTorch not built (Torch not found or CELLGRAD_BENCH_TORCH=OFF)\n";
#endif
    text += fmt::format("- packed-weight GEMM (cellgrad's AVX-512 kernel for products of 4-128 "
                        "rows by a weight packed once per step): {}\n",
                        cellgrad::packed_weight_gemm_active() ? "on" : "off");
    text += "- machine ceiling, OpenBLAS sgemm 2048 x 2048 x 2048:";
    for (const int threads : options.threads) {
        text += fmt::format(" {:.1f} GFLOP/s at {} thread{};", square_sgemm_gflops(threads),
                            threads, threads == 1 ? "" : "s");
    }
    text += "\n";
    std::vector<std::pair<int, double>> fma_peaks;
    text += "- FMA peak, measured (register-only float FMA chains on every thread at once):";
    for (const int threads : options.threads) {
        const auto [gflops, isa] = fma_peak_gflops(threads);
        fma_peaks.emplace_back(threads, gflops);
        text += fmt::format(" {:.1f} GFLOP/s at {} thread{} ({});", gflops, threads,
                            threads == 1 ? "" : "s", isa);
    }
    text += "\n";
    const auto fma_peak = [&](int threads) {
        for (const auto& [count, gflops] : fma_peaks) {
            if (count == threads) {
                return gflops;
            }
        }
        return std::nan("");
    };
#ifdef CELLGRAD_BENCH_WITH_ONEDNN
    text += fmt::format("- peer: {}{}\n", bench::onednn_description(),
                        with_onednn ? "" : " (disabled by --no-onednn)");
    for (const Row& row : rows) {
        if (!row.onednn_implementation.empty()) {
            text += fmt::format("- oneDNN implementation ({} {}): {}\n", row.config, row.cell,
                                row.onednn_implementation);
            break; // the same for every shape on one machine; the rows' stderr lines name theirs
        }
    }
#else
    text += "- peer: oneDNN not built (libdnnl-dev not found or CELLGRAD_BENCH_ONEDNN=OFF)\n";
#endif
    text += fmt::format("- cores: {}; load average before {}, after {}\n",
                        std::thread::hardware_concurrency(), load_before, load_average());
    text += fmt::format("- rounds: {} warm-up + {} timed ({} + {} for large), contenders "
                        "interleaved round by round, each step after a {} ms pause at 2+ threads; "
                        "figures are medians\n",
                        options.warmup, options.steps, options.large_warmup, options.large_steps,
                        options.settle_ms);
    text +=
        "- tokens/s = B*T / median step time. cellgrad feeds the layer the embedded tokens, "
        "which projects the V = 65 embedding rows once and reads them by token when V < T*B (the "
        "same values and gradients, fewer FLOPs); the `embedded rows` columns run the same "
        "model on gathered embeddings, with LibTorch's GEMMs (they equal the first columns "
        "when V >= T*B).\n";
    text += "- GFLOP/s counts the GEMMs each path executes (forward 2(R*in*GH + TB(H*GH + H*V)) "
            "with R = V or TB input rows, backward 2x); sgemm = those GEMM shapes as bare "
            "cblas_sgemm calls at the row's thread count (OpenBLAS re-packs W_hh in each of the "
            "2T step calls; cellgrad's packed kernel does not, so it can exceed 100%); LibTorch "
            "executes the embedded-rows FLOPs\n\n";

    text += "| config | cell | threads | BLAS core | cellgrad tok/s | LibTorch tok/s (best "
            "split) | split torch x BLAS | ratio | cellgrad GFLOP/s | sgemm GFLOP/s | % of "
            "sgemm | embedded rows tok/s | ratio | GFLOP/s | % of sgemm |\n";
    text += "|---|---|---:|---|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|\n";
    for (const Row& row : rows) {
        const double cellgrad_rate = row.tokens / row.cellgrad_seconds;
        const double embedded_rate = row.tokens / row.cellgrad_embedded_seconds;
        double best_rate = std::nan("");
        std::string best_split = "-";
        for (const auto& [split, seconds] : row.torch_seconds) {
            const double rate = row.tokens / seconds;
            if (!(rate <= best_rate)) {
                best_rate = rate;
                best_split = split;
            }
        }
        const auto ratio = [&](double rate) {
            return std::isfinite(best_rate) ? fmt::format("{:.2f}", rate / best_rate)
                                            : std::string("n/a");
        };
        const double cellgrad_gflops = row.projected_flops / row.cellgrad_seconds * 1e-9;
        const double sgemm_gflops = row.projected_flops / row.sgemm_projected_seconds * 1e-9;
        const double embedded_gflops = row.flops / row.cellgrad_embedded_seconds * 1e-9;
        const double embedded_sgemm_gflops = row.flops / row.sgemm_seconds * 1e-9;
        text += fmt::format("| {} | {} | {} | {} | {} | {} | {} | {} | {:.2f} | {:.2f} | {:.1f}% | "
                            "{} | {} | {:.2f} | {:.1f}% |\n",
                            row.config, row.cell, row.threads, core, format_rate(cellgrad_rate),
                            format_rate(best_rate), best_split, ratio(cellgrad_rate),
                            cellgrad_gflops, sgemm_gflops, 100.0 * cellgrad_gflops / sgemm_gflops,
                            format_rate(embedded_rate), ratio(embedded_rate), embedded_gflops,
                            100.0 * embedded_gflops / embedded_sgemm_gflops);
    }

    const bool any_variant = std::any_of(rows.begin(), rows.end(), [](const Row& row) {
        return row.cell.find("-lstm") != std::string::npos;
    });
    if (any_variant) {
        text += "\nVariant cells against the built-in LSTM of the same run (targets: peephole >= "
                "0.90, layer-norm >= 0.70 of its tok/s) and against LibTorch running the same cell "
                "as a torch::nn module looping over time steps (target >= 3x):\n\n";
        text += "| config | cell | threads | cellgrad tok/s | lstm tok/s | vs lstm | LibTorch "
                "looped tok/s (best split) | vs LibTorch |\n";
        text += "|---|---|---:|---:|---:|---:|---:|---:|\n";
        for (const Row& row : rows) {
            if (row.cell.find("-lstm") == std::string::npos) {
                continue;
            }
            const double rate = row.tokens / row.cellgrad_seconds;
            const auto lstm = std::find_if(rows.begin(), rows.end(), [&](const Row& other) {
                return other.cell == "lstm" && other.config == row.config &&
                       other.threads == row.threads;
            });
            const double lstm_rate =
                lstm == rows.end() ? std::nan("") : lstm->tokens / lstm->cellgrad_seconds;
            double torch_rate = std::nan("");
            for (const auto& [split, seconds] : row.torch_seconds) {
                torch_rate = std::isnan(torch_rate) ? row.tokens / seconds
                                                    : std::max(torch_rate, row.tokens / seconds);
            }
            text += fmt::format("| {} | {} | {} | {} | {} | {:.2f} | {} | {:.2f} |\n", row.config,
                                row.cell, row.threads, format_rate(rate), format_rate(lstm_rate),
                                rate / lstm_rate, format_rate(torch_rate), rate / torch_rate);
        }
    }

    if (with_onednn) {
        text += "\nAgainst oneDNN's fused RNN primitives (the same whole step). Every contender at "
                "its best: any thread count up to the row's, and the better timing (in the "
                "rounds, or back to back), named in the `at` columns; GFLOP/s as above, % of the "
                "measured FMA peak at the row's thread count; sgemm = the same shapes as bare "
                "OpenBLAS calls:\n\n";
        text += "| config | cell | threads | cellgrad tok/s | embedded rows tok/s | cellgrad at "
                "(token / embedded) | oneDNN tok/s | oneDNN at | ratio token | ratio embedded | "
                "cellgrad GFLOP/s (% peak) | embedded GFLOP/s (% peak) | oneDNN GFLOP/s (% peak) "
                "| sgemm GFLOP/s (% peak) |\n";
        text += "|---|---|---:|---:|---:|---|---:|---|---:|---:|---:|---:|---:|---:|\n";
        for (const Row& row : rows) {
            if (row.onednn_seconds.empty()) {
                continue;
            }
            double best = std::nan("");
            std::string at = "-";
            for (const auto& [name, rounds, back_to_back] : row.onednn_seconds) {
                for (const auto& [seconds, timing] :
                     {std::pair{rounds, "rounds"}, std::pair{back_to_back, "back to back"}}) {
                    if (!(seconds >= best)) {
                        best = seconds;
                        at = fmt::format("{} thread{}, {}", name.substr(name.find('-') + 1),
                                         name.ends_with("-1") ? "" : "s", timing);
                    }
                }
            }
            const double peak = fma_peak(row.threads);
            const auto rate = [&](double flops, double seconds) {
                const double gflops = flops / seconds * 1e-9;
                return fmt::format("{:.1f} ({:.0f}%)", gflops, 100.0 * gflops / peak);
            };
            const double token = row.cellgrad_best_seconds;
            const double embedded = row.cellgrad_embedded_best_seconds;
            text += fmt::format(
                "| {} | {} | {} | {} | {} | {} / {} | {} | {} | {:.2f} | {:.2f} | {} | {} | {} | "
                "{} |\n",
                row.config, row.cell, row.threads, format_rate(row.tokens / token),
                format_rate(row.tokens / embedded), row.cellgrad_best_at,
                row.cellgrad_embedded_best_at, format_rate(row.tokens / best), at, best / token,
                best / embedded, rate(row.projected_flops, token), rate(row.flops, embedded),
                rate(row.flops, best), rate(row.flops, row.sgemm_seconds));
        }
        text += "\noneDNN tokens/s by thread count (OpenMP threads), in the interleaved rounds and "
                "back to back:\n\n";
        text +=
            "| config | cell | threads | oneDNN threads | rounds tok/s | back to back tok/s |\n";
        text += "|---|---|---:|---:|---:|---:|\n";
        for (const Row& row : rows) {
            for (const auto& [name, rounds, back_to_back] : row.onednn_seconds) {
                text += fmt::format("| {} | {} | {} | {} | {} | {} |\n", row.config, row.cell,
                                    row.threads, name.substr(name.find('-') + 1),
                                    format_rate(row.tokens / rounds),
                                    format_rate(row.tokens / back_to_back));
            }
        }
    }

    const bool any_memory =
        std::any_of(rows.begin(), rows.end(), [](const Row& row) { return !row.memory.empty(); });
    if (any_memory) {
        text += "\nPeak memory of one training step, MB, each contender alone in a fresh process "
                "at 1 thread: VmHWM over 3 steps minus VmRSS before its model was built (weights, "
                "gradients, activations, workspace, allocator slack); in brackets cellgrad's "
                "tape arena (node values and gradients) and oneDNN's RNN workspace:\n\n";
        text += "| config | cell | cellgrad | embedded rows | LibTorch | oneDNN | cellgrad / "
                "LibTorch |\n";
        text += "|---|---|---:|---:|---:|---:|---:|\n";
        for (const Row& row : rows) {
            if (row.memory.empty()) {
                continue;
            }
            std::string cells[4] = {"-", "-", "-", "-"};
            double cellgrad_peak = std::nan(""), torch_peak = std::nan("");
            for (const auto& [name, figures] : row.memory) {
                const int column = name == "cellgrad"            ? 0
                                   : name == "cellgrad-embedded" ? 1
                                   : name == "LibTorch"          ? 2
                                                                 : 3;
                cells[column] = fmt::format("{:.1f}", figures.peak_bytes / 1e6);
                if (std::isfinite(figures.component_bytes)) {
                    cells[column] += fmt::format(" ({:.1f})", figures.component_bytes / 1e6);
                }
                if (name == "cellgrad") {
                    cellgrad_peak = figures.peak_bytes;
                } else if (name == "LibTorch") {
                    torch_peak = figures.peak_bytes;
                }
            }
            text += fmt::format("| {} | {} | {} | {} | {} | {} | {:.2f} |\n", row.config, row.cell,
                                cells[0], cells[1], cells[2], cells[3], cellgrad_peak / torch_peak);
        }
    }

    if (with_torch) {
        text += "\nLibTorch tokens/s by split (torch intra-op threads x OpenBLAS threads):\n\n";
        text += "| config | cell | threads | split | LibTorch tok/s | LibTorch GFLOP/s |\n";
        text += "|---|---|---:|---|---:|---:|\n";
        for (const Row& row : rows) {
            for (const auto& [split, seconds] : row.torch_seconds) {
                text += fmt::format("| {} | {} | {} | {} | {} | {:.2f} |\n", row.config, row.cell,
                                    row.threads, split, format_rate(row.tokens / seconds),
                                    row.flops / seconds * 1e-9);
            }
        }
    }
    return text;
}

/// --check-onednn: the oneDNN step, started from cellgrad's weights, must give cellgrad's loss and
/// gradients (relative 1e-4 of each tensor's largest gradient, float) and, after 3 SGD steps
/// each, the same loss. Shapes small enough to see a layout mistake, with T*B > V so that
/// cellgrad's token path projects the table. Returns 0 if every cell matches.
int check_onednn([[maybe_unused]] const Options& options) {
#ifdef CELLGRAD_BENCH_WITH_ONEDNN
    bool all_match = true;
    for (const std::string cell : {"lstm", "gru", "rnn"}) {
        const StepShape shape{cell, 3, 30, 7, 6, vocab_size};
        const auto [inputs, targets] = make_tokens(shape.batch * shape.steps, options.seed);
        CellgradStep reference(shape, inputs, targets, options.lr, options.seed, true);
        const double reference_loss = reference.loss_and_gradients();
        const bench::ModelTensors reference_grads = reference.tensors(true);
        const bench::ModelTensors weights = reference.tensors(false);
        const std::unique_ptr<bench::OnednnStep> onednn =
            bench::make_onednn_step(shape, inputs, targets, options.lr, &weights, options.seed);
        const double loss = onednn->loss_and_gradients();
        const bench::ModelTensors grads = onednn->gradients();
        bool match = std::abs(loss - reference_loss) <= 1e-5 * std::abs(reference_loss);
        std::string detail = fmt::format("loss {:.7f} vs {:.7f}", loss, reference_loss);
        for (std::size_t i = 0; i < reference_grads.names.size(); ++i) {
            const std::vector<float>& want = reference_grads.values[i];
            const std::vector<float>& got = grads.at(reference_grads.names[i]);
            double scale = 0, worst = 0;
            for (std::size_t k = 0; k < want.size(); ++k) {
                scale = std::max(scale, double(std::abs(want[k])));
                worst = std::max(worst, double(std::abs(got[k] - want[k])));
            }
            const double relative = worst / std::max(scale, 1e-30);
            match = match && got.size() == want.size() && relative <= 1e-4;
            detail += fmt::format("; {} {:.1e}", reference_grads.names[i], relative);
        }
        double stepped_reference = 0, stepped = 0;
        for (int round = 0; round < 3; ++round) {
            reference.step();
            onednn->step();
        }
        stepped_reference = reference.loss_and_gradients();
        stepped = onednn->loss_and_gradients();
        match = match && std::abs(stepped - stepped_reference) <= 1e-5 * stepped_reference;
        detail +=
            fmt::format("; after 3 SGD steps loss {:.7f} vs {:.7f}", stepped, stepped_reference);
        fmt::print("{} {}: {} ({})\n", cell, match ? "match" : "MISMATCH", detail,
                   onednn->implementation());
        all_match = all_match && match;
    }
    fmt::print("oneDNN check: {}\n",
               all_match ? "every cell matches cellgrad" : "a cell does not match (see above)");
    return all_match ? 0 : 1;
#else
    std::cerr << "bench_training: --check-onednn needs the oneDNN peer (libdnnl-dev)\n";
    return 1;
#endif
}

} // namespace

/// Parses the options, measures every (config, cell, threads) row and prints the report.
int main(int argc, char** argv) {
    Options options;
    CLI::App app{"bench_training: a full RNN training step, cellgrad vs LibTorch (tokens/s)"};
    app.set_version_flag("--version", cellgrad::version_line("bench_training"));
    app.add_option("--configs", options.configs, "configurations: small, medium, charrnn-b1, large")
        ->delimiter(',')
        ->capture_default_str();
    app.add_option("--cells", options.cells,
                   "cells: lstm, gru, rnn, peephole-lstm, layernorm-lstm (the variants' rows "
                   "compare with the lstm row of the same run and with a looped LibTorch module)")
        ->delimiter(',')
        ->capture_default_str();
    app.add_option("--threads", options.threads, "thread counts")
        ->delimiter(',')
        ->check(CLI::PositiveNumber)
        ->capture_default_str();
    app.add_option("--warmup", options.warmup, "untimed rounds")->capture_default_str();
    app.add_option("--steps", options.steps, "timed rounds (median)")
        ->check(CLI::PositiveNumber)
        ->capture_default_str();
    app.add_option("--large-warmup", options.large_warmup, "untimed rounds for 'large'")
        ->capture_default_str();
    app.add_option("--large-steps", options.large_steps, "timed rounds for 'large'")
        ->check(CLI::PositiveNumber)
        ->capture_default_str();
    app.add_option("--settle-ms", options.settle_ms,
                   "pause before each step of a multi-threaded row, so that threads left "
                   "spinning by the previous contender go idle")
        ->check(CLI::NonNegativeNumber)
        ->capture_default_str();
    app.add_option("--lr", options.lr, "SGD learning rate")->capture_default_str();
    app.add_option("--seed", options.seed, "seed of the data and the cellgrad init")
        ->capture_default_str();
    app.add_flag("!--no-torch", options.torch, "measure cellgrad and sgemm only");
    app.add_flag("!--no-onednn", options.onednn, "leave out the oneDNN peer");
    app.add_flag("!--no-memory", options.memory,
                 "skip the peak-memory probes (a child process per contender and row)");
    app.add_flag("--check-onednn", options.check_onednn,
                 "check that oneDNN's loss and gradients match cellgrad's on small shapes (lstm, "
                 "gru, rnn) and exit: 0 if they do");
    app.add_option("--memory-probe", options.memory_probe)->group(""); // the child's side
    app.add_option("--only", options.only,
                   "profile one contender (cellgrad, cellgrad-embedded, sgemm, sgemm-projected, "
                   "1x1, ...): runs --warmup + --steps rounds of it, prints its rate, no report");
    CLI11_PARSE(app, argc, argv);

    try {
        std::vector<Config> selected;
        for (const std::string& name : options.configs) {
            const auto found = std::find_if(known_configs.begin(), known_configs.end(),
                                            [&](const Config& c) { return c.name == name; });
            if (found == known_configs.end()) {
                throw cellgrad::Error(fmt::format(
                    "unknown config '{}': expected small, medium, charrnn-b1 or large", name));
            }
            selected.push_back(*found);
        }
        for (const std::string& cell : options.cells) {
            gate_count(cell);
        }
        if (options.steps < 10 || options.large_steps < 10) {
            std::cerr << "note: fewer than 10 timed rounds; medians will be noisy\n";
        }
#ifdef CELLGRAD_BENCH_WITH_TORCH
        const bool with_torch = options.torch;
#else
        const bool with_torch = false;
#endif
#ifdef CELLGRAD_BENCH_WITH_ONEDNN
        const bool with_onednn = options.onednn;
#else
        const bool with_onednn = false;
#endif
        if (!options.memory_probe.empty()) {
            return run_memory_probe(selected.front(), options.cells.front(), options);
        }
        if (options.check_onednn) {
            return check_onednn(options);
        }
        std::cerr << fmt::format("BLAS core {}, OPENBLAS_CORETYPE {}, GLIBC_TUNABLES {}\n",
                                 cellgrad::blas_core_name(), env_or_unset("OPENBLAS_CORETYPE"),
                                 env_or_unset("GLIBC_TUNABLES"));
        const std::string load_before = load_average();
        std::vector<Row> rows;
        for (const Config& config : selected) {
            for (const std::string& cell : options.cells) {
                for (const int threads : options.threads) {
                    rows.push_back(measure(config, cell, threads, options));
                }
            }
        }
        if (options.only.empty()) {
            std::cout << report(rows, options, with_torch, with_onednn, load_before) << std::flush;
        }
    } catch (const std::exception& e) {
        std::cerr << "bench_training: " << e.what() << "\n";
        return 1;
    }
    return 0;
}
