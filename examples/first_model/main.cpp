// first_model: the README's "Using it" example, a whole program (the part between the readme
// markers is quoted there verbatim; tests/readme_sync.cmake keeps the two equal).
// [readme]
// A small LSTM learns to echo its input 6 steps late: at step t it must output the number it read
// at step t - 6, so it has to hold the last six numbers in memory.
#include <chrono>
#include <random>
#include <string_view>
#include <vector>

#include <fmt/format.h>

#include <cellgrad/cellgrad.hpp> // Tensor, Tape, Var, ops, grad_check, version
#include <cellgrad/nn.hpp>       // nn::LSTM, nn::Linear
#include <cellgrad/optim/optim.hpp>

using namespace cellgrad;

constexpr std::size_t T = 16; // time steps
constexpr std::size_t B = 32; // sequences per batch
constexpr std::size_t D = 6;  // delay of the echo, in steps

/// A batch: inputs (T*B, 1) time-major (rows t*B .. t*B+B-1 are step t) drawn from U(-1, 1);
/// targets ((T-D)*B, 1) for steps D .. T-1 are the inputs of steps 0 .. T-D-1.
template <class S>
void make_batch(std::mt19937_64& rng, Tensor<S>& inputs, Tensor<S>& targets) {
    std::uniform_real_distribution<double> uniform(-1.0, 1.0);
    inputs = Tensor<S>(T * B, 1);
    targets = Tensor<S>((T - D) * B, 1);
    for (std::size_t row = 0; row < T * B; ++row) {
        inputs(row, 0) = S(uniform(rng));
    }
    for (std::size_t row = 0; row < (T - D) * B; ++row) {
        targets(row, 0) = inputs(row, 0);
    }
}

/// An LSTM layer and a linear read-out of its hidden state at every step; S = float or double.
template <class S>
struct Model {
    nn::LSTM<S> lstm;
    nn::Linear<S> head;

    /// Weights drawn from `rng` with PyTorch's init; parameter names as in a PyTorch state dict.
    Model(std::size_t hidden, std::mt19937_64& rng)
        : lstm({.input_size = 1, .hidden_size = hidden, .parameter_prefix = "lstm."}, rng),
          head(hidden, 1, rng, true, "head.") {}

    /// Mean squared error of the predictions for one batch, recorded on `tape`.
    Var<S> loss(Tape<S>& tape, const Tensor<S>& inputs, const Tensor<S>& targets) {
        nn::RecurrentOutput<S> out = lstm.forward(tape.constant(inputs), B); // out.output: (T*B, H)
        Var<S> prediction = head.forward(out.output);                        // (T*B, 1)
        Var<S> echoed = slice_rows(prediction, D * B, T * B);                // steps D .. T-1
        return mse_loss(echoed, tape.constant(targets));
    }

    /// The LSTM's weights and biases, then the head's.
    std::vector<Parameter<S>*> parameters() {
        std::vector<Parameter<S>*> all = lstm.parameters();
        for (Parameter<S>* p : head.parameters()) {
            all.push_back(p);
        }
        return all;
    }
};

int main(int argc, char** argv) {
    if (argc > 1 && std::string_view(argv[1]) == "--version") {
        fmt::print("{}\n", version_line("first_model"));
        return 0;
    }
    std::mt19937_64 rng(0);

    // 1. Check the gradients in float64: the tape's against central differences.
    Model<double> small(4, rng);
    Tensor<double> check_inputs, check_targets;
    make_batch(rng, check_inputs, check_targets);
    GradCheckReport report = grad_check(
        [&](Tape<double>& tape) { return small.loss(tape, check_inputs, check_targets); },
        small.parameters());
    fmt::print("gradient check: {}\n", report.summary());
    if (!report.passed) {
        return 1;
    }

    // 2. Train in float with Adam; one tape per step, cleared and reused. Guessing 0 scores 1/3
    //    (the variance of U(-1, 1)); an LSTM that remembers scores near 0.
    Model<float> model(32, rng);
    Adam<float> adam(model.parameters(), {.lr = 1e-2});
    Tape<float> tape;
    Tensor<float> inputs, targets;
    const auto start = std::chrono::steady_clock::now();
    double recent = 0; // mean loss of the last 100 steps
    for (int step = 1; step <= 1500; ++step) {
        make_batch(rng, inputs, targets);
        Var<float> loss = model.loss(tape, inputs, targets);
        adam.zero_grad();
        tape.backward(loss); // one reverse loop over the tape
        clip_grad_norm(adam.parameters(), 1.0);
        adam.step();
        recent += loss.item() / 100;
        if (step == 1) {
            fmt::print("step   1  loss {:.4f}\n", loss.item());
        }
        tape.clear();
        if (step % 100 == 0) {
            const std::chrono::duration<double> seconds = std::chrono::steady_clock::now() - start;
            fmt::print("step {:3}  loss {:.4f}  ({:.1f} s)\n", step, recent, seconds.count());
            recent = 0;
        }
    }
    return 0;
}
// [/readme]
