// The adding problem (Le, Jaitly & Hinton 2015; Arjovsky, Shah & Bengio 2016) and the small model
// that reads it: a one-layer RNN / LSTM / GRU with a Linear head on the last hidden state.
//
// Data: T steps, two channels. Channel 1: U[0, 1]. Channel 2: exactly two markers, the first at a
// uniform position in [0, T/2), the second at a uniform position in [T/2, T). Target: the sum of
// the two marked values, read at the last step only; loss: mean squared error. Predicting 1
// always gives MSE 1/6 = 0.1667 (the baseline); < 0.01 counts as solved.
// Shared by examples/adding_problem and examples/vanishing_gradients (header-only templates).
#pragma once

#include <cstddef>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "cellgrad/cellgrad.hpp"
#include "cellgrad/nn.hpp"

namespace adding {

/// MSE of always predicting the mean target 1 (Var(U1 + U2) = 1/6).
inline constexpr double baseline_mse = 1.0 / 6.0;

/// One batch: inputs (T*B, 2) time-major (row t*B + b is step t of sequence b), targets (B, 1).
template <class T>
struct Batch {
    cellgrad::Tensor<T> inputs;
    cellgrad::Tensor<T> targets;
    std::size_t steps = 0;
    std::size_t batch = 0;
};

/// Draws `batch` adding-problem sequences of `steps` steps (>= 2) from `rng`.
template <class T>
Batch<T> make_batch(std::size_t steps, std::size_t batch, std::mt19937_64& rng) {
    if (steps < 2 || batch == 0) {
        throw cellgrad::Error(fmt::format(
            "adding: need T >= 2 and batch >= 1, got T = {}, batch = {}", steps, batch));
    }
    Batch<T> result{cellgrad::Tensor<T>(steps * batch, 2), cellgrad::Tensor<T>(batch, 1), steps,
                    batch};
    std::uniform_real_distribution<double> value(0.0, 1.0);
    const std::size_t half = steps / 2;
    std::uniform_int_distribution<std::size_t> first_half(0, half - 1);
    std::uniform_int_distribution<std::size_t> second_half(half, steps - 1);
    for (std::size_t b = 0; b < batch; ++b) {
        std::vector<double> values(steps);
        for (std::size_t t = 0; t < steps; ++t) {
            values[t] = value(rng);
            result.inputs(t * batch + b, 0) = static_cast<T>(values[t]);
        }
        const std::size_t first = first_half(rng);
        const std::size_t second = second_half(rng);
        result.inputs(first * batch + b, 1) = T(1);
        result.inputs(second * batch + b, 1) = T(1);
        result.targets(b, 0) = static_cast<T>(values[first] + values[second]);
    }
    return result;
}

/// What a model is: a cell of nn::cell_names(), hidden size, forget-gate bias.
struct ModelSpec {
    std::string cell = "lstm";
    std::size_t hidden = 128;
    double forget_bias = 0.0;
};

/// A one-layer recurrent layer (PyTorch names and init) and a Linear(H, 1) head on h_T.
template <class T>
class Model {
  public:
    /// Builds the layer, then the head, drawing weights from `rng`; throws on an unknown cell.
    Model(const ModelSpec& spec, std::mt19937_64& rng) : spec_(spec) {
        cellgrad::nn::RecurrentOptions options;
        options.input_size = 2;
        options.hidden_size = spec.hidden;
        options.forget_bias = spec.forget_bias;
        options.parameter_prefix = "rnn.";
        rnn_ = cellgrad::nn::make_recurrent<T>(spec.cell, options, rng); // any cell_names()
        head_ = std::make_unique<cellgrad::nn::Linear<T>>(spec.hidden, 1, rng, true, "head.");
    }

    /// Every parameter: the recurrent layer's, then the head's.
    std::vector<cellgrad::Parameter<T>*> parameters() {
        std::vector<cellgrad::Parameter<T>*> list = rnn_->parameters();
        for (cellgrad::Parameter<T>* parameter : head_->parameters()) {
            list.push_back(parameter);
        }
        return list;
    }

    /// Runs the sequence on `tape`; `output` keeps every per-step state for gradient reads.
    /// Returns the prediction (B, 1) read from the last hidden state.
    cellgrad::Var<T> forward(cellgrad::Tape<T>& tape, const Batch<T>& batch,
                             cellgrad::nn::RecurrentOutput<T>& output) {
        output = rnn_->forward(tape.constant(batch.inputs), batch.batch);
        return head_->forward(output.steps.back()); // (B, 1)
    }

    /// Mean squared error of the model on `batch` without recording gradients.
    double evaluate(const Batch<T>& batch) {
        cellgrad::NoGradGuard no_grad;
        cellgrad::Tape<T> tape;
        cellgrad::nn::RecurrentOutput<T> output;
        const cellgrad::Var<T> prediction = forward(tape, batch, output);
        return double(cellgrad::mse_loss(prediction, tape.constant(batch.targets)).item());
    }

    /// The specification the model was built from.
    const ModelSpec& spec() const { return spec_; }

  private:
    ModelSpec spec_;
    std::unique_ptr<cellgrad::nn::Recurrent<T>> rnn_;
    std::unique_ptr<cellgrad::nn::Linear<T>> head_;
};

} // namespace adding
