// bench_checkpoint: memory and time of one training step on long sequences, with and without
// activation checkpointing (RecurrentOptions::checkpoint_steps). Each measurement runs in a
// fresh process of this program, so that its peak resident memory is its own.
//
// The step: embedding (V = 65, 64 wide) of B*T random tokens, one LSTM/GRU/RNN layer over all T
// steps, a linear decoder on every step, mean cross-entropy, backward, SGD; float32. Three runs
// per length: the full graph, RecurrentOptions::checkpoint_steps (the decoder and loss outside the
// segments) and nn::checkpointed_sequence_loss (the decoder and loss inside them). The report
// (markdown) goes to stdout. See bench/README.md.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <random>
#include <span>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>
#include <fmt/format.h>

#include "process_memory.hpp"
#include <cellgrad/cellgrad.hpp>
#include <cellgrad/nn.hpp>
#include <cellgrad/optim/sgd.hpp>

namespace {

namespace nn = cellgrad::nn;

constexpr std::size_t vocab_size = 65;
constexpr std::size_t embedding_size = 64;

/// Command-line options.
struct Options {
    std::vector<std::size_t> lengths = {1000, 10000};
    std::size_t hidden = 512;
    std::size_t batch = 32;
    std::string cell = "lstm";
    int threads = 2;
    std::size_t timed = 2;          ///< timed steps after one warm-up step (median)
    double max_full_gb = 8.0;       ///< skip a full-graph run whose estimate exceeds this
    std::size_t probe_steps = 0;    ///< internal: this process measures T = probe_steps
    std::size_t probe_k = 0;        ///< internal: with this checkpoint_steps (0: the full graph)
    bool probe_loss_inside = false; ///< internal: checkpointed_sequence_loss with segments of k
};

using cellgrad::bench::resident_bytes;

/// One measured configuration.
struct Figures {
    double peak_bytes = std::nan("");   ///< VmHWM - VmRSS before the model was built
    double tape_bytes = std::nan("");   ///< Tape::memory_bytes() after the steps
    double step_seconds = std::nan(""); ///< median over the timed steps
    double loss = std::nan("");
};

/// The child's side: builds the model, runs 1 + `timed` steps, prints "probe <figures>".
int run_probe(const Options& options) {
    cellgrad::set_num_threads(options.threads);
    const std::size_t tokens = options.probe_steps * options.batch;
    std::mt19937_64 rng(1);
    std::uniform_int_distribution<std::int32_t> draw(0, std::int32_t(vocab_size) - 1);
    std::vector<std::int32_t> inputs(tokens), targets(tokens);
    for (std::size_t i = 0; i < tokens; ++i) {
        inputs[i] = draw(rng);
        targets[i] = draw(rng);
    }
    std::ofstream("/proc/self/clear_refs") << "5" << std::flush; // VmHWM := VmRSS (if allowed)
    const double baseline = resident_bytes().first;
    nn::RecurrentOptions layer_options;
    layer_options.input_size = embedding_size;
    layer_options.hidden_size = options.hidden;
    layer_options.checkpoint_steps = options.probe_loss_inside ? 0 : options.probe_k;
    nn::Embedding<float> embedding(vocab_size, embedding_size, rng, "embedding.");
    const std::unique_ptr<nn::Recurrent<float>> layer =
        nn::make_recurrent<float>(options.cell, layer_options, rng);
    nn::Linear<float> decoder(options.hidden, vocab_size, rng, true, "decoder.");
    std::vector<cellgrad::Parameter<float>*> parameters = embedding.parameters();
    for (cellgrad::Parameter<float>* p : layer->parameters()) {
        parameters.push_back(p);
    }
    for (cellgrad::Parameter<float>* p : decoder.parameters()) {
        parameters.push_back(p);
    }
    cellgrad::SGD<float> sgd(parameters, cellgrad::SGDOptions{.lr = 0.01});
    cellgrad::Tape<float> tape;
    tape.reuse_gradient_memory(true); // as char_rnn and bench_training: only weights' grads read
    std::vector<double> seconds;
    Figures figures;
    for (std::size_t round = 0; round < 1 + options.timed; ++round) {
        const auto start = std::chrono::steady_clock::now();
        tape.clear();
        const cellgrad::Var<float> embedded = embedding.forward(tape, inputs);
        cellgrad::Var<float> loss;
        if (options.probe_loss_inside) {
            // The same mean cross-entropy, as a sum of the segments' parts.
            const double rows = double(targets.size());
            loss = nn::checkpointed_sequence_loss<float>(
                *layer, embedded, options.batch, options.probe_k,
                [&](const cellgrad::Var<float>& outputs, std::size_t first, std::size_t steps) {
                    const std::span<const std::int32_t> part(targets.data() + first * options.batch,
                                                             steps * options.batch);
                    return cellgrad::scale(cellgrad::cross_entropy<float>(decoder.forward(outputs),
                                                                          part, {},
                                                                          cellgrad::Reduction::sum),
                                           1.0 / rows);
                });
        } else {
            const nn::RecurrentOutput<float> out = layer->forward(embedded, options.batch);
            loss = cellgrad::cross_entropy<float>(decoder.forward(out.output), targets);
        }
        sgd.zero_grad();
        tape.backward(loss);
        sgd.step();
        figures.loss = loss.item();
        const std::chrono::duration<double> elapsed = std::chrono::steady_clock::now() - start;
        if (round > 0) {
            seconds.push_back(elapsed.count());
        }
    }
    std::sort(seconds.begin(), seconds.end());
    figures.step_seconds = seconds[seconds.size() / 2];
    figures.peak_bytes = resident_bytes().second - baseline;
    figures.tape_bytes = double(tape.memory_bytes());
    fmt::print("probe {:.0f} {:.0f} {:.6f} {:.6f}\n", figures.peak_bytes, figures.tape_bytes,
               figures.step_seconds, figures.loss);
    return 0;
}

/// Runs one configuration in a fresh process of this program and reads its figures.
Figures measure(const Options& options, std::size_t steps, std::size_t k, bool loss_inside) {
    const std::string self = std::filesystem::read_symlink("/proc/self/exe").string();
    const std::string command = fmt::format(
        "'{}' --probe-steps {} --probe-k {} --hidden {} --batch {} --cell {} --threads {} "
        "--timed {}{}",
        self, steps, k, options.hidden, options.batch, options.cell, options.threads, options.timed,
        loss_inside ? " --probe-loss-inside" : "");
    Figures figures;
    std::FILE* pipe = popen(command.c_str(), "r");
    if (pipe == nullptr) {
        return figures;
    }
    char line[256] = {};
    while (std::fgets(line, sizeof line, pipe) != nullptr) {
        std::sscanf(line, "probe %lf %lf %lf %lf", &figures.peak_bytes, &figures.tape_bytes,
                    &figures.step_seconds, &figures.loss);
    }
    if (pclose(pipe) != 0) {
        std::cerr << fmt::format("T = {}, k = {}: the measuring process failed\n", steps, k);
    }
    return figures;
}

/// The three load averages from /proc/loadavg.
std::string load_average() {
    std::ifstream file("/proc/loadavg");
    double one = 0, five = 0, fifteen = 0;
    file >> one >> five >> fifteen;
    return fmt::format("{:.2f} {:.2f} {:.2f}", one, five, fifteen);
}

} // namespace

/// Parses the options and prints the table (or, with --probe-steps, measures one run).
int main(int argc, char** argv) {
    Options options;
    CLI::App app{"bench_checkpoint: memory and time of a long-sequence training step with and "
                 "without activation checkpointing"};
    app.set_version_flag("--version", cellgrad::version_line("bench_checkpoint"));
    app.add_option("--lengths", options.lengths, "sequence lengths T")
        ->delimiter(',')
        ->check(CLI::PositiveNumber)
        ->capture_default_str();
    app.add_option("--hidden", options.hidden, "hidden size")->capture_default_str();
    app.add_option("--batch", options.batch, "sequences per batch")->capture_default_str();
    app.add_option("--cell", options.cell, "lstm, gru, rnn or a variant")->capture_default_str();
    app.add_option("--threads", options.threads, "threads")
        ->check(CLI::PositiveNumber)
        ->capture_default_str();
    app.add_option("--timed", options.timed, "timed steps after one warm-up step (median)")
        ->check(CLI::PositiveNumber)
        ->capture_default_str();
    app.add_option("--max-full-gb", options.max_full_gb,
                   "skip a full-graph run whose memory, extrapolated from the shortest length, "
                   "exceeds this many GB")
        ->capture_default_str();
    app.add_option("--probe-steps", options.probe_steps)->group("");
    app.add_option("--probe-k", options.probe_k)->group("");
    app.add_flag("--probe-loss-inside", options.probe_loss_inside)->group("");
    CLI11_PARSE(app, argc, argv);
    try {
        if (options.probe_steps > 0) {
            return run_probe(options);
        }
        const std::string load_before = load_average();
        const auto start = std::chrono::steady_clock::now();
        std::string rows;
        double full_bytes_per_step = std::nan("");
        for (const std::size_t steps : options.lengths) {
            const auto k = std::size_t(std::max(1.0, std::round(std::sqrt(double(steps)))));
            Figures full;
            const double estimate = full_bytes_per_step * double(steps);
            std::string full_note;
            if (std::isfinite(estimate) && estimate > options.max_full_gb * 1e9) {
                full_note = fmt::format("not run: about {:.1f} GB (linear in T from the shorter "
                                        "run) exceeds --max-full-gb {}",
                                        estimate / 1e9, options.max_full_gb);
            } else {
                full = measure(options, steps, 0, false);
                full_bytes_per_step = full.peak_bytes / double(steps);
            }
            const Figures checkpointed = measure(options, steps, k, false);
            const Figures inside = measure(options, steps, k, true);
            std::cerr << fmt::format("T = {}: full {:.0f} MB {:.2f} s, k = {} {:.0f} MB {:.2f} s, "
                                     "loss inside {:.0f} MB {:.2f} s [load {}]\n",
                                     steps, full.peak_bytes / 1e6, full.step_seconds, k,
                                     checkpointed.peak_bytes / 1e6, checkpointed.step_seconds,
                                     inside.peak_bytes / 1e6, inside.step_seconds, load_average());
            const auto mb = [](double bytes) { return fmt::format("{:.0f}", bytes / 1e6); };
            rows += fmt::format("| {} | full graph | {} | {} | {} | {} |\n", steps,
                                full_note.empty() ? mb(full.peak_bytes) : full_note,
                                full_note.empty() ? mb(full.tape_bytes) : "-",
                                full_note.empty() ? fmt::format("{:.2f}", full.step_seconds) : "-",
                                full_note.empty() ? fmt::format("{:.4f}", full.loss) : "-");
            rows += fmt::format("| {} | checkpoint_steps = {} | {} | {} | {:.2f} | {:.4f} |\n",
                                steps, k, mb(checkpointed.peak_bytes), mb(checkpointed.tape_bytes),
                                checkpointed.step_seconds, checkpointed.loss);
            rows += fmt::format("| {} | checkpointed_sequence_loss, k = {} | {} | {} | {:.2f} | "
                                "{:.4f} |\n",
                                steps, k, mb(inside.peak_bytes), mb(inside.tape_bytes),
                                inside.step_seconds, inside.loss);
        }
        const std::chrono::duration<double> wall = std::chrono::steady_clock::now() - start;
        fmt::print("## Long sequences: activation checkpointing\n\n");
        fmt::print("- step: embedding ({} x {}) of B*T tokens, one {} layer (hidden {}), decoder "
                   "on every step, mean cross-entropy, backward, SGD; batch {}; {} thread(s); "
                   "median of {} steps after one warm-up; each row in a fresh process\n",
                   vocab_size, embedding_size, options.cell, options.hidden, options.batch,
                   options.threads, options.timed);
        fmt::print("- peak MB = VmHWM over the steps - VmRSS before the model was built; tape MB "
                   "= Tape::memory_bytes() (arenas, the checkpointing scratch tape included)\n");
        fmt::print("- k = round(sqrt(T)); load average before {}, after {}; wall {:.0f} s\n\n",
                   load_before, load_average(), wall.count());
        fmt::print("| T | run | peak MB | tape MB | s / step | loss |\n|---:|---|---:|---:|---:|"
                   "---:|\n{}",
                   rows);
    } catch (const std::exception& e) {
        std::cerr << "bench_checkpoint: " << e.what() << "\n";
        return 1;
    }
    return 0;
}
