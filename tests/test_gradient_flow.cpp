// Exact gradient flow through time, read off the graph (RecurrentOutput::states[..][t][k].grad())
// and compared with values computed independently in plain loops:
//   (a) a linear RNN h_t = h_{t-1} W^T + x_t U^T: dL/dh_t = (W^T)^(T-1-t) dL/dh_{T-1};
//   (b) an LSTM whose hidden path into the gates is cut (h detached before the recurrent matmul),
//       loss on the last cell state: dL/dc_{t-1} = f_t * dL/dc_t exactly, so
//       dL/dc_t = dL/dc_{T-1} * prod_{s > t} f_s (the "constant error carousel" scaled by f).
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <memory>
#include <random>
#include <vector>

#include "cellgrad/cellgrad.hpp"
#include "cellgrad/nn.hpp"

using namespace cellgrad;
using namespace cellgrad::nn;

namespace {

using Matrix = std::vector<std::vector<double>>;

/// A user cell with no activation: h' = x U^T + h W^T (a linear RNN).
class LinearCell : public Cell<double> {
  public:
    /// U (H, in) and W (H, H) drawn from U(-bound, bound).
    LinearCell(std::size_t input, std::size_t hidden, double bound, std::mt19937_64& rng)
        : u("u", uniform_tensor<double>(hidden, input, bound, rng)),
          w("w", uniform_tensor<double>(hidden, hidden, bound, rng)), input_(input),
          hidden_(hidden) {}
    std::size_t input_size() const override { return input_; }
    std::size_t hidden_size() const override { return hidden_; }
    std::vector<Parameter<double>*> parameters() override { return {&u, &w}; }
    void attach(Tape<double>& tape) override {
        u_ = tape.param(u);
        w_ = tape.param(w);
    }
    Var<double> project_inputs(const Var<double>& x) override { return linear(x, u_); }
    std::vector<Var<double>> step(const StepInput<double>& event,
                                  std::span<const Var<double>> s) override {
        const Var<double> p = event.var();
        return {add(p, linear(s[0], w_))}; // (B, H)
    }

    Parameter<double> u, w;

  private:
    std::size_t input_, hidden_;
    Var<double> u_, w_;
};

/// An LSTM cell (PyTorch equations, gates i, f, g, o) whose gates see a detached copy of h:
/// no gradient flows from the gates back into h_{t-1}, only along c_{t-1} -> f_t * c_{t-1}.
class DetachedLSTMCell : public Cell<double> {
  public:
    /// The built-in LSTM's weights and init, plus `forget_bias` on bias_ih's f block.
    DetachedLSTMCell(std::size_t input, std::size_t hidden, double forget_bias,
                     std::mt19937_64& rng)
        : weights(input, hidden, 4, true, "", rng) {
        for (std::size_t j = hidden; j < 2 * hidden; ++j) {
            weights.bias_ih->value(0, j) += forget_bias;
        }
    }
    std::size_t input_size() const override { return weights.input_size; }
    std::size_t hidden_size() const override { return weights.hidden_size; }
    std::size_t state_size() const override { return 2; }
    std::vector<Parameter<double>*> parameters() override { return weights.parameters(); }
    void attach(Tape<double>& tape) override { weights.attach(tape); }
    Var<double> project_inputs(const Var<double>& x) override { return weights.project_inputs(x); }
    std::vector<Var<double>> step(const StepInput<double>& event,
                                  std::span<const Var<double>> s) override {
        const std::size_t H = weights.hidden_size;
        const Var<double> h = s[0].tape().detach(s[0]);    // the cut
        const Var<double> gates = weights.gates(event, h); // (B, 4H)
        const Var<double> i = sigmoid(slice_cols(gates, 0, H));
        const Var<double> f = sigmoid(slice_cols(gates, H, 2 * H));
        const Var<double> g = tanh(slice_cols(gates, 2 * H, 3 * H));
        const Var<double> o = sigmoid(slice_cols(gates, 3 * H, 4 * H));
        const Var<double> c = add(mul(f, s[1]), mul(i, g));
        return {mul(o, tanh(c)), c};
    }

    GatedWeights<double> weights;
};

/// m^T as a new matrix.
Matrix transpose(const Matrix& m) {
    Matrix result(m[0].size(), std::vector<double>(m.size()));
    for (std::size_t i = 0; i < m.size(); ++i) {
        for (std::size_t j = 0; j < m[i].size(); ++j) {
            result[j][i] = m[i][j];
        }
    }
    return result;
}

/// a b for square matrices, in plain loops.
Matrix multiply(const Matrix& a, const Matrix& b) {
    const std::size_t n = a.size();
    Matrix result(n, std::vector<double>(n, 0.0));
    for (std::size_t i = 0; i < n; ++i) {
        for (std::size_t k = 0; k < n; ++k) {
            for (std::size_t j = 0; j < n; ++j) {
                result[i][j] += a[i][k] * b[k][j];
            }
        }
    }
    return result;
}

/// m v in plain loops.
std::vector<double> mat_vec(const Matrix& m, const std::vector<double>& v) {
    std::vector<double> result(m.size(), 0.0);
    for (std::size_t i = 0; i < m.size(); ++i) {
        for (std::size_t j = 0; j < v.size(); ++j) {
            result[i] += m[i][j] * v[j];
        }
    }
    return result;
}

/// A tensor as nested vectors.
Matrix to_matrix(const Tensor<double>& t) {
    Matrix result(t.rows(), std::vector<double>(t.cols()));
    for (std::size_t i = 0; i < t.rows(); ++i) {
        for (std::size_t j = 0; j < t.cols(); ++j) {
            result[i][j] = t(i, j);
        }
    }
    return result;
}

/// Options of a one-layer, one-direction layer.
RecurrentOptions options(std::size_t input, std::size_t hidden) {
    RecurrentOptions result;
    result.input_size = input;
    result.hidden_size = hidden;
    return result;
}

/// 1 / (1 + exp(-x)).
double logistic(double x) {
    return 1.0 / (1.0 + std::exp(-x));
}

} // namespace

TEST_CASE("gradient flow: linear RNN, dL/dh_t = (W^T)^(T-1-t) dL/dh_{T-1} to float64 precision") {
    const std::size_t input = 3, H = 6, T = 30, B = 3;
    std::mt19937_64 rng(2024);
    LinearCell* cell = nullptr;
    Recurrent<double> layer("linear", options(input, H), [&](std::size_t in, std::size_t, bool) {
        auto made = std::make_unique<LinearCell>(in, H, 0.6, rng);
        cell = made.get();
        return made;
    });
    REQUIRE(cell != nullptr);
    const Tensor<double> x = uniform_tensor<double>(T * B, input, 1.0, rng);
    const Tensor<double> r = uniform_tensor<double>(B, H, 1.0, rng); // dL/dh_{T-1}
    Tape<double> tape;
    const RecurrentOutput<double> out = layer.forward(tape.constant(x), B);
    tape.backward(sum(mul(out.steps.back(), tape.constant(r))));

    const Matrix w = to_matrix(cell->w.value);
    const Matrix wt = transpose(w);
    Matrix power(H, std::vector<double>(H, 0.0)); // (W^T)^k, starting at k = 0
    Matrix wrong = power;                         // W^k: what a missing transpose would give
    for (std::size_t i = 0; i < H; ++i) {
        power[i][i] = wrong[i][i] = 1.0;
    }
    double largest_wrong_gap = 0;
    for (std::size_t k = 0; k < T; ++k) {
        const std::size_t t = T - 1 - k;
        const Tensor<double> got = out.states[0][t][0].grad();
        for (std::size_t b = 0; b < B; ++b) {
            std::vector<double> seed(H);
            for (std::size_t j = 0; j < H; ++j) {
                seed[j] = r(b, j);
            }
            const std::vector<double> expected = mat_vec(power, seed);
            const std::vector<double> transposed_wrong = mat_vec(wrong, seed);
            double scale = 0, error = 0;
            for (std::size_t j = 0; j < H; ++j) {
                scale = std::max(scale, std::abs(expected[j]));
                error = std::max(error, std::abs(got(b, j) - expected[j]));
                largest_wrong_gap =
                    std::max(largest_wrong_gap, std::abs(transposed_wrong[j] - expected[j]));
            }
            INFO("t = " << t << ", b = " << b << ", |expected| = " << scale);
            REQUIRE(scale > 1e-3); // the signal neither vanished nor exploded over these lags
            REQUIRE(scale < 1e3);
            CHECK(error <= 1e-13 * scale);
        }
        power = multiply(wt, power);
        wrong = multiply(w, wrong);
    }
    // W is not symmetric, so the transpose matters: the check above can tell W^k from (W^T)^k.
    CHECK(largest_wrong_gap > 1e-2);
}

TEST_CASE("gradient flow: LSTM cell path, dL/dc_{t-1} = f_t * dL/dc_t when the h path is cut") {
    const std::size_t input = 2, H = 5, T = 25, B = 3;
    const double forget_bias = 1.0;
    std::mt19937_64 rng(7);
    DetachedLSTMCell* cell = nullptr;
    Recurrent<double> layer("lstm_cut", options(input, H), [&](std::size_t in, std::size_t, bool) {
        auto made = std::make_unique<DetachedLSTMCell>(in, H, forget_bias, rng);
        cell = made.get();
        return made;
    });
    REQUIRE(cell != nullptr);
    const Tensor<double> x = uniform_tensor<double>(T * B, input, 1.0, rng);
    const Tensor<double> r = uniform_tensor<double>(B, H, 1.0, rng); // dL/dc_{T-1}
    Tape<double> tape;
    const RecurrentOutput<double> out = layer.forward(tape.constant(x), B);
    tape.backward(sum(mul(out.states[0][T - 1][1], tape.constant(r))));

    // The forward pass again in scalar loops, keeping every forget gate f_t (B, H).
    const GatedWeights<double>& w = cell->weights;
    std::vector<Matrix> forget(T, Matrix(B, std::vector<double>(H)));
    for (std::size_t b = 0; b < B; ++b) {
        std::vector<double> h(H, 0.0), c(H, 0.0);
        for (std::size_t t = 0; t < T; ++t) {
            std::vector<double> pre(4 * H);
            for (std::size_t row = 0; row < 4 * H; ++row) {
                double z = w.bias_ih->value(0, row) + w.bias_hh->value(0, row);
                for (std::size_t k = 0; k < input; ++k) {
                    z += w.weight_ih.value(row, k) * x(t * B + b, k);
                }
                for (std::size_t k = 0; k < H; ++k) {
                    z += w.weight_hh.value(row, k) * h[k];
                }
                pre[row] = z;
            }
            for (std::size_t j = 0; j < H; ++j) {
                const double i_gate = logistic(pre[j]);
                const double f_gate = logistic(pre[H + j]);
                const double g = std::tanh(pre[2 * H + j]);
                const double o_gate = logistic(pre[3 * H + j]);
                c[j] = f_gate * c[j] + i_gate * g;
                h[j] = o_gate * std::tanh(c[j]);
                forget[t][b][j] = f_gate;
            }
            // The independent forward agrees with the graph's states.
            for (std::size_t j = 0; j < H; ++j) {
                CHECK(out.states[0][t][1].value()(b, j) == doctest::Approx(c[j]).epsilon(1e-13));
            }
        }
    }

    Matrix expected = to_matrix(r); // dL/dc_t, walked back from t = T-1
    double smallest_f = 1, largest_f = 0;
    for (std::size_t t = T; t-- > 0;) {
        const Tensor<double> dc = out.states[0][t][1].grad();
        const Tensor<double> dh = out.states[0][t][0].grad();
        for (std::size_t b = 0; b < B; ++b) {
            for (std::size_t j = 0; j < H; ++j) {
                INFO("t = " << t << ", b = " << b << ", j = " << j);
                CHECK(dc(b, j) == doctest::Approx(expected[b][j]).epsilon(1e-13));
                CHECK(dh(b, j) == 0.0); // nothing reads h except through the cut
            }
        }
        if (t == 0) {
            break;
        }
        for (std::size_t b = 0; b < B; ++b) {
            for (std::size_t j = 0; j < H; ++j) {
                expected[b][j] *= forget[t][b][j];
                smallest_f = std::min(smallest_f, forget[t][b][j]);
                largest_f = std::max(largest_f, forget[t][b][j]);
            }
        }
    }
    // The gates are genuinely between 0 and 1, so the products decay and the check has teeth.
    CHECK(smallest_f < 0.7);
    CHECK(largest_f < 0.99);
}

TEST_CASE("gradient flow: without the cut, the hidden path adds to dL/dc_{t-1} (f_t alone is "
          "not enough)") {
    const std::size_t input = 2, H = 5, T = 10, B = 2;
    std::mt19937_64 rng(7);
    LSTMCell<double>* cell = nullptr;
    Recurrent<double> layer("lstm", options(input, H), [&](std::size_t in, std::size_t, bool) {
        auto made = std::make_unique<LSTMCell<double>>(in, H, rng);
        cell = made.get();
        return made;
    });
    const Tensor<double> x = uniform_tensor<double>(T * B, input, 1.0, rng);
    const Tensor<double> r = uniform_tensor<double>(B, H, 1.0, rng);
    Tape<double> tape;
    const RecurrentOutput<double> out = layer.forward(tape.constant(x), B);
    tape.backward(sum(mul(out.states[0][T - 1][1], tape.constant(r))));
    // f_{T-1} from the graph's own values: sigmoid of the f block of the last step's gates.
    const GatedWeights<double>& w = cell->weights();
    const View<const double> h_previous = out.states[0][T - 2][0].value();
    const Tensor<double> dc_last = out.states[0][T - 1][1].grad();
    const Tensor<double> dc_previous = out.states[0][T - 2][1].grad();
    double largest_gap = 0;
    for (std::size_t b = 0; b < B; ++b) {
        for (std::size_t j = 0; j < H; ++j) {
            double z = w.bias_ih->value(0, H + j) + w.bias_hh->value(0, H + j);
            for (std::size_t k = 0; k < input; ++k) {
                z += w.weight_ih.value(H + j, k) * x((T - 1) * B + b, k);
            }
            for (std::size_t k = 0; k < H; ++k) {
                z += w.weight_hh.value(H + j, k) * h_previous(b, k);
            }
            largest_gap =
                std::max(largest_gap, std::abs(dc_previous(b, j) - logistic(z) * dc_last(b, j)));
        }
    }
    CHECK(largest_gap > 1e-4);
}
