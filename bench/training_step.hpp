// What every peer of bench_training shares, free of any framework's headers: the shape of a
// training step and the interface of a model + optimizer that runs one.
#pragma once

#include <cstddef>
#include <stdexcept>
#include <string>
#include <vector>

namespace bench {

/// One training-step configuration: cell "lstm" | "gru" | "rnn" | "peephole-lstm" |
/// "layernorm-lstm" and the sizes of the model.
struct StepShape {
    std::string cell;
    std::size_t batch = 0;
    std::size_t steps = 0;
    std::size_t input = 0;
    std::size_t hidden = 0;
    std::size_t vocab = 0;
};

/// Every tensor of a model in PyTorch's layouts and names, row-major: embedding.weight (V, E),
/// rnn.weight_ih_l0 (G*H, E), rnn.weight_hh_l0 (G*H, H), rnn.bias_ih_l0 (G*H), rnn.bias_hh_l0
/// (G*H), decoder.weight (V, H), decoder.bias (V); gates in PyTorch's order.
struct ModelTensors {
    std::vector<std::string> names;
    std::vector<std::vector<float>> values;
    /// The tensor called `name`; throws std::invalid_argument if there is none.
    const std::vector<float>& at(const std::string& name) const {
        for (std::size_t i = 0; i < names.size(); ++i) {
            if (names[i] == name) {
                return values[i];
            }
        }
        throw std::invalid_argument("ModelTensors: no tensor named '" + name + "'");
    }
};

/// A model plus optimizer that runs one full training step per call.
class TrainingStep {
  public:
    virtual ~TrainingStep() = default;
    /// Runs embedding -> sequence layer -> decoder -> cross-entropy -> backward -> SGD; returns
    /// the loss.
    virtual double step() = 0;
};

} // namespace bench
