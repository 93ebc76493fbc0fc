// Plain scalar reference implementations of PyTorch's recurrent equations for the nn tests.
//
// Nothing here uses cellgrad ops: the cells are PyTorch's documented equations written out with
// loops over doubles, and the sequence runner processes each sequence on its own (no padding,
// no masks), so comparing against it checks cellgrad's batching, masking and stacking too.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <functional>
#include <optional>
#include <vector>

#include "cellgrad/nn.hpp"

namespace reference {

using Vec = std::vector<double>;
/// A state: its tensors (h, then c for an LSTM), each a vector of hidden_size values.
using State = std::vector<Vec>;

/// The logistic function.
inline double sigmoid(double v) {
    return 1.0 / (1.0 + std::exp(-v));
}

/// Row r of w times x, plus bias (1, n) entry r when given.
inline double row_dot(const cellgrad::Tensor<double>& w, std::size_t r, const Vec& x,
                      const cellgrad::Tensor<double>* bias = nullptr) {
    double total = bias != nullptr ? (*bias)(0, r) : 0.0;
    for (std::size_t c = 0; c < x.size(); ++c) {
        total += w(r, c) * x[c];
    }
    return total;
}

/// Pointer to an optional bias' value, or null.
inline const cellgrad::Tensor<double>*
bias_of(const std::optional<cellgrad::Parameter<double>>& bias) {
    return bias ? &bias->value : nullptr;
}

/// torch.nn.RNNCell: h' = act(W_ih x + b_ih + W_hh h + b_hh).
inline State rnn_step(cellgrad::nn::GatedWeights<double>& w, bool relu, const Vec& x,
                      const State& state) {
    const std::size_t H = w.hidden_size;
    Vec h(H);
    for (std::size_t j = 0; j < H; ++j) {
        const double a = row_dot(w.weight_ih.value, j, x, bias_of(w.bias_ih)) +
                         row_dot(w.weight_hh.value, j, state[0], bias_of(w.bias_hh));
        h[j] = relu ? std::max(a, 0.0) : std::tanh(a);
    }
    return {h};
}

/// torch.nn.LSTMCell, rows of W stacked i, f, g, o: c' = f c + i g, h' = o tanh(c').
inline State lstm_step(cellgrad::nn::GatedWeights<double>& w, const Vec& x, const State& state) {
    const std::size_t H = w.hidden_size;
    // Pre-activation of gate row r.
    auto pre = [&](std::size_t r) {
        return row_dot(w.weight_ih.value, r, x, bias_of(w.bias_ih)) +
               row_dot(w.weight_hh.value, r, state[0], bias_of(w.bias_hh));
    };
    Vec h(H), c(H);
    for (std::size_t j = 0; j < H; ++j) {
        const double i = sigmoid(pre(j));
        const double f = sigmoid(pre(H + j));
        const double g = std::tanh(pre(2 * H + j));
        const double o = sigmoid(pre(3 * H + j));
        c[j] = f * state[1][j] + i * g;
        h[j] = o * std::tanh(c[j]);
    }
    return {h, c};
}

/// torch.nn.GRUCell, rows stacked r, z, n: n = tanh(W_in x + b_in + r (W_hn h + b_hn)),
/// h' = (1 - z) n + z h.
inline State gru_step(cellgrad::nn::GatedWeights<double>& w, const Vec& x, const State& state) {
    const std::size_t H = w.hidden_size;
    // Input part and hidden part of gate row r.
    auto in = [&](std::size_t r) { return row_dot(w.weight_ih.value, r, x, bias_of(w.bias_ih)); };
    auto hid = [&](std::size_t r) {
        return row_dot(w.weight_hh.value, r, state[0], bias_of(w.bias_hh));
    };
    Vec h(H);
    for (std::size_t j = 0; j < H; ++j) {
        const double r = sigmoid(in(j) + hid(j));
        const double z = sigmoid(in(H + j) + hid(H + j));
        const double n = std::tanh(in(2 * H + j) + r * hid(2 * H + j));
        h[j] = (1 - z) * n + z * state[0][j];
    }
    return {h};
}

/// One step of the cell of layer/direction `index` for one sequence.
using StepFn = std::function<State(std::size_t index, const Vec& x, const State& state)>;

/// Outputs [t][b] (directions * H, zero past the sequence's end) and final states [index][b].
struct SequenceResult {
    std::vector<std::vector<Vec>> output;
    std::vector<std::vector<State>> final_state;
};

/// Stacked, optionally bidirectional run, each sequence alone over its own length: x[t][b],
/// initial[index][b] (index = layer * directions + direction).
inline SequenceResult run_sequence(const StepFn& step, std::size_t layers, bool bidirectional,
                                   std::size_t hidden, const std::vector<std::vector<Vec>>& x,
                                   const std::vector<int>& lengths,
                                   const std::vector<std::vector<State>>& initial) {
    const std::size_t steps = x.size();
    const std::size_t batch = lengths.size();
    const std::size_t directions = bidirectional ? 2 : 1;
    SequenceResult result;
    result.final_state.assign(layers * directions, std::vector<State>(batch));
    std::vector<std::vector<Vec>> layer_input = x;
    for (std::size_t layer = 0; layer < layers; ++layer) {
        std::vector<std::vector<Vec>> out(steps,
                                          std::vector<Vec>(batch, Vec(directions * hidden, 0.0)));
        for (std::size_t d = 0; d < directions; ++d) {
            const std::size_t index = layer * directions + d;
            for (std::size_t b = 0; b < batch; ++b) {
                State state = initial[index][b];
                const int length = lengths[b];
                for (int i = 0; i < length; ++i) {
                    const std::size_t t = std::size_t(d == 0 ? i : length - 1 - i);
                    state = step(index, layer_input[t][b], state);
                    for (std::size_t j = 0; j < hidden; ++j) {
                        out[t][b][d * hidden + j] = state[0][j];
                    }
                }
                result.final_state[index][b] = state;
            }
        }
        layer_input = out;
    }
    result.output = layer_input;
    return result;
}

/// Splits a time-major (T*B, F) matrix into [t][b] vectors.
inline std::vector<std::vector<Vec>> split_steps(cellgrad::View<const double> m,
                                                 std::size_t batch) {
    std::vector<std::vector<Vec>> steps(m.rows / batch, std::vector<Vec>(batch));
    for (std::size_t r = 0; r < m.rows; ++r) {
        steps[r / batch][r % batch] = Vec(m.row(r), m.row(r) + m.cols);
    }
    return steps;
}

/// Row b of a (B, H) matrix.
inline Vec row_of(cellgrad::View<const double> m, std::size_t b) {
    return Vec(m.row(b), m.row(b) + m.cols);
}

} // namespace reference
