// The copy-memory task (Hochreiter & Schmidhuber 1997; Arjovsky, Shah & Bengio 2016) and the model
// that reads it: a one-layer recurrent layer with a Linear(H, 10) head on every step.
//
// Data: 10 symbols drawn uniformly from {1..8}, then `delay` blanks (symbol 0), then the
// delimiter (symbol 9), then 9 more blanks: delay + 20 steps, one-hot over 10 classes. Targets:
// blank everywhere except the last 10 steps, which must reproduce the 10 symbols in order. Loss:
// mean cross-entropy over all delay + 20 steps. Emitting blanks and then guessing uniformly among
// the 8 symbols scores the memoryless baseline 10 ln 8 / (delay + 20).
// Shared by examples/adding_problem (--task copy) and tests/test_tasks.cpp (header-only).
#pragma once

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <random>
#include <span>
#include <string>
#include <vector>

#include "adding.hpp"
#include "cellgrad/cellgrad.hpp"
#include "cellgrad/nn.hpp"

namespace copy_task {

/// Symbols to remember, classes of the one-hot code, the blank and the delimiter.
inline constexpr std::size_t remembered = 10;
inline constexpr std::size_t classes = 10;
inline constexpr std::int32_t blank = 0;
inline constexpr std::int32_t delimiter = 9;

/// Steps of one sequence for a delay of `delay` blanks: 10 + delay + 1 + 9.
inline constexpr std::size_t sequence_length(std::size_t delay) {
    return delay + 2 * remembered;
}

/// Cross-entropy (nats per step) of the memoryless strategy: 10 ln 8 / (delay + 20).
inline double baseline_loss(std::size_t delay) {
    return double(remembered) * std::log(8.0) / double(sequence_length(delay));
}

/// One batch: inputs (L*B, 10) one-hot and time-major (row t*B + b is step t of sequence b),
/// targets L*B class indices in the same order; L = delay + 20.
template <class T>
struct Batch {
    cellgrad::Tensor<T> inputs;
    std::vector<std::int32_t> targets;
    std::size_t steps = 0;
    std::size_t batch = 0;
};

/// Draws `batch` copy-task sequences with `delay` blanks (>= 1) from `rng`.
template <class T>
Batch<T> make_batch(std::size_t delay, std::size_t batch, std::mt19937_64& rng) {
    if (delay == 0 || batch == 0) {
        throw cellgrad::Error(fmt::format(
            "copy task: need delay >= 1 and batch >= 1, got delay = {}, batch = {}", delay, batch));
    }
    const std::size_t steps = sequence_length(delay);
    Batch<T> result{cellgrad::Tensor<T>(steps * batch, classes),
                    std::vector<std::int32_t>(steps * batch, blank), steps, batch};
    std::uniform_int_distribution<std::int32_t> symbol(1, 8);
    for (std::size_t b = 0; b < batch; ++b) {
        std::vector<std::int32_t> input(steps, blank);
        for (std::size_t t = 0; t < remembered; ++t) {
            input[t] = symbol(rng);
            result.targets[(steps - remembered + t) * batch + b] = input[t];
        }
        input[remembered + delay] = delimiter;
        for (std::size_t t = 0; t < steps; ++t) {
            result.inputs(t * batch + b, std::size_t(input[t])) = T(1);
        }
    }
    return result;
}

/// Fraction of the 10 recalled symbols whose largest logit is the right one, over the batch;
/// `logits` is (L*B, 10) in the batch's row order.
template <class T>
double recall_accuracy(cellgrad::View<const T> logits, const Batch<T>& batch) {
    std::size_t right = 0;
    for (std::size_t row = (batch.steps - remembered) * batch.batch; row < logits.rows; ++row) {
        std::size_t best = 0;
        for (std::size_t k = 1; k < classes; ++k) {
            if (logits(row, k) > logits(row, best)) {
                best = k;
            }
        }
        right += std::int32_t(best) == batch.targets[row] ? 1 : 0;
    }
    return double(right) / double(remembered * batch.batch);
}

/// Loss and recall accuracy of a model on a batch.
struct Score {
    double loss = 0;
    double recall_accuracy = 0;
};

/// A one-layer recurrent layer (any cell of nn::cell_names(), PyTorch names and init) and a
/// Linear(H, 10) head on every step's hidden state.
template <class T>
class Model {
  public:
    /// Builds the layer, then the head, drawing weights from `rng`; throws on an unknown cell.
    Model(const adding::ModelSpec& spec, std::mt19937_64& rng) : spec_(spec) {
        cellgrad::nn::RecurrentOptions options;
        options.input_size = classes;
        options.hidden_size = spec.hidden;
        options.forget_bias = spec.forget_bias;
        options.parameter_prefix = "rnn.";
        rnn_ = cellgrad::nn::make_recurrent<T>(spec.cell, options, rng);
        head_ = std::make_unique<cellgrad::nn::Linear<T>>(spec.hidden, classes, rng, true, "head.");
    }

    /// Every parameter: the recurrent layer's, then the head's.
    std::vector<cellgrad::Parameter<T>*> parameters() {
        std::vector<cellgrad::Parameter<T>*> list = rnn_->parameters();
        for (cellgrad::Parameter<T>* parameter : head_->parameters()) {
            list.push_back(parameter);
        }
        return list;
    }

    /// Logits (L*B, 10) for every step of `batch`, recorded on `tape`.
    cellgrad::Var<T> forward(cellgrad::Tape<T>& tape, const Batch<T>& batch) {
        const cellgrad::nn::RecurrentOutput<T> output =
            rnn_->forward(tape.constant(batch.inputs), batch.batch);
        return head_->forward(output.output);
    }

    /// Mean cross-entropy over every step of `batch`, recorded on `tape`.
    cellgrad::Var<T> loss(cellgrad::Tape<T>& tape, const Batch<T>& batch) {
        return cellgrad::cross_entropy<T>(forward(tape, batch), batch.targets);
    }

    /// Loss and recall accuracy on `batch` without recording gradients.
    Score evaluate(const Batch<T>& batch) {
        cellgrad::NoGradGuard no_grad;
        cellgrad::Tape<T> tape;
        const cellgrad::Var<T> logits = forward(tape, batch);
        const double loss = double(cellgrad::cross_entropy<T>(logits, batch.targets).item());
        return {loss, recall_accuracy(logits.value(), batch)};
    }

  private:
    adding::ModelSpec spec_;
    std::unique_ptr<cellgrad::nn::Recurrent<T>> rnn_;
    std::unique_ptr<cellgrad::nn::Linear<T>> head_;
};

} // namespace copy_task
