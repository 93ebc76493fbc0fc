// Tests of the recurrent cells (nn/cells.hpp): one step of RNNCell, LSTMCell and GRUCell against
// PyTorch's equations written out in scalar C++, float64 gradient checks w.r.t. parameters, input
// and state, parameter names/shapes/init, and the LSTM forget-gate bias.
#include <doctest/doctest.h>

#include <cmath>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "cellgrad/cellgrad.hpp"
#include "cellgrad/nn.hpp"
#include "recurrent_reference.hpp"

using namespace cellgrad;
using namespace cellgrad::nn;

namespace {

constexpr std::size_t kInput = 3;
constexpr std::size_t kHidden = 4;
constexpr std::size_t kBatch = 3;

/// Copies `values` (row-major) into a parameter's value; the count must match.
void set_values(Parameter<double>& parameter, const std::vector<double>& values) {
    REQUIRE(values.size() == parameter.value.size());
    std::copy(values.begin(), values.end(), parameter.value.data());
}

/// Runs one step of `cell` on a fresh tape with (B, in) input and state tensors; returns the new
/// state's values.
std::vector<Tensor<double>> one_step(Cell<double>& cell, const Tensor<double>& x,
                                     const std::vector<Tensor<double>>& state) {
    Tape<double> tape;
    cell.attach(tape);
    std::vector<Var<double>> vars;
    for (const Tensor<double>& part : state) {
        vars.push_back(tape.constant(part));
    }
    const std::vector<Var<double>> next = cell.step(cell.project_inputs(tape.constant(x)), vars);
    std::vector<Tensor<double>> values;
    for (const Var<double>& part : next) {
        values.push_back(part.value_tensor());
    }
    return values;
}

/// Largest |a[b][j] - reference[b][j]| over a (B, H) tensor and per-row reference vectors.
double max_difference(const Tensor<double>& a, const std::vector<reference::Vec>& reference) {
    double worst = 0;
    for (std::size_t b = 0; b < a.rows(); ++b) {
        for (std::size_t j = 0; j < a.cols(); ++j) {
            worst = std::max(worst, std::abs(a(b, j) - reference[b][j]));
        }
    }
    return worst;
}

/// Compares one step of `cell` on random x and state with the scalar reference `step`.
void check_step_matches(Cell<double>& cell, const reference::StepFn& step, std::uint64_t seed) {
    std::mt19937_64 rng(seed);
    const Tensor<double> x = uniform_tensor<double>(kBatch, kInput, 1.5, rng);
    std::vector<Tensor<double>> state;
    for (std::size_t k = 0; k < cell.state_size(); ++k) {
        state.push_back(uniform_tensor<double>(kBatch, kHidden, 1.0, rng));
    }
    const std::vector<Tensor<double>> next = one_step(cell, x, state);
    REQUIRE(next.size() == cell.state_size());
    for (std::size_t k = 0; k < next.size(); ++k) {
        std::vector<reference::Vec> expected;
        for (std::size_t b = 0; b < kBatch; ++b) {
            reference::State s;
            for (const Tensor<double>& part : state) {
                s.push_back(reference::row_of(part.view(), b));
            }
            expected.push_back(step(0, reference::row_of(x.view(), b), s)[k]);
        }
        INFO("state tensor " << k);
        CHECK(max_difference(next[k], expected) < 1e-14);
    }
}

/// Grad-checks one step of `cell` w.r.t. its parameters, the input and every state tensor; the
/// loss weights every new state tensor with fixed random weights.
GradCheckReport check_cell_gradients(Cell<double>& cell, std::uint64_t seed) {
    std::mt19937_64 rng(seed);
    Parameter<double> x("x", uniform_tensor<double>(kBatch, kInput, 1.0, rng));
    std::vector<Parameter<double>> state;
    std::vector<Tensor<double>> weights;
    for (std::size_t k = 0; k < cell.state_size(); ++k) {
        state.emplace_back("state" + std::to_string(k),
                           uniform_tensor<double>(kBatch, kHidden, 1.0, rng));
        weights.push_back(uniform_tensor<double>(kBatch, kHidden, 1.0, rng));
    }
    std::vector<Parameter<double>*> targets = cell.parameters();
    targets.push_back(&x);
    for (Parameter<double>& part : state) {
        targets.push_back(&part);
    }
    const LossFunction loss = [&](Tape<double>& tape) {
        cell.attach(tape);
        std::vector<Var<double>> vars;
        for (Parameter<double>& part : state) {
            vars.push_back(tape.param(part));
        }
        const std::vector<Var<double>> next = cell.step(cell.project_inputs(tape.param(x)), vars);
        Var<double> total = sum(mul(next[0], tape.constant(weights[0])));
        for (std::size_t k = 1; k < next.size(); ++k) {
            total = add(total, sum(mul(next[k], tape.constant(weights[k]))));
        }
        return total;
    };
    return grad_check(loss, targets);
}

/// Checks names, shapes and the U(-1/sqrt(H), 1/sqrt(H)) init of a built-in cell with G gates.
void check_parameters(Cell<double>& cell, std::size_t gates) {
    const std::vector<Parameter<double>*> params = cell.parameters();
    REQUIRE(params.size() == 4);
    CHECK(params[0]->name == "weight_ih");
    CHECK(params[1]->name == "weight_hh");
    CHECK(params[2]->name == "bias_ih");
    CHECK(params[3]->name == "bias_hh");
    CHECK(params[0]->value.shape() == Shape{gates * kHidden, kInput});
    CHECK(params[1]->value.shape() == Shape{gates * kHidden, kHidden});
    CHECK(params[2]->value.shape() == Shape{1, gates * kHidden});
    CHECK(params[0]->export_shape == std::vector<std::size_t>{gates * kHidden, kInput});
    CHECK(params[2]->export_shape == std::vector<std::size_t>{gates * kHidden});
    CHECK(params[3]->export_shape == std::vector<std::size_t>{gates * kHidden});
    const double bound = 1.0 / std::sqrt(double(kHidden));
    for (Parameter<double>* parameter : params) {
        double largest = 0;
        for (double v : parameter->value.to_vector()) {
            largest = std::max(largest, std::abs(v));
        }
        INFO(parameter->name);
        CHECK(largest <= bound);
        CHECK(largest > 0.5 * bound); // really drawn from the whole range, not left at zero
    }
}

} // namespace

TEST_CASE("cells: parameter names, PyTorch shapes and init bounds") {
    std::mt19937_64 rng(7);
    RNNCell<double> rnn(kInput, kHidden, rng);
    LSTMCell<double> lstm(kInput, kHidden, rng);
    GRUCell<double> gru(kInput, kHidden, rng);
    check_parameters(rnn, 1);
    check_parameters(lstm, 4);
    check_parameters(gru, 3);
    CHECK(rnn.state_size() == 1);
    CHECK(lstm.state_size() == 2);
    CHECK(gru.state_size() == 1);
    CHECK(lstm.parameter_count() == 4 * kHidden * (kInput + kHidden + 2));

    RNNCell<double> no_bias(kInput, kHidden, rng, Nonlinearity::tanh, false, "_l3");
    REQUIRE(no_bias.parameters().size() == 2);
    CHECK(no_bias.parameters()[0]->name == "weight_ih_l3");
    CHECK(no_bias.parameters()[1]->name == "weight_hh_l3");
}

TEST_CASE("cells: LSTM forget_bias adds to bias_ih's [H, 2H) block only") {
    std::mt19937_64 rng_a(11);
    std::mt19937_64 rng_b(11);
    LSTMCell<double> plain(kInput, kHidden, rng_a);
    LSTMCell<double> biased(kInput, kHidden, rng_b, true, 1.0);
    const Tensor<double>& a = plain.weights().bias_ih->value;
    const Tensor<double>& b = biased.weights().bias_ih->value;
    for (std::size_t j = 0; j < 4 * kHidden; ++j) {
        const bool forget_block = j >= kHidden && j < 2 * kHidden;
        INFO("column " << j);
        CHECK(b(0, j) == a(0, j) + (forget_block ? 1.0 : 0.0));
    }
    CHECK(max_abs_difference<double>(plain.weights().bias_hh->value.view(),
                                     biased.weights().bias_hh->value.view()) == 0.0);
    CHECK(max_abs_difference<double>(plain.weights().weight_ih.value.view(),
                                     biased.weights().weight_ih.value.view()) == 0.0);
    std::mt19937_64 rng(1);
    CHECK_THROWS_AS(LSTMCell<double>(kInput, kHidden, rng, false, 1.0), Error);
}

TEST_CASE("cells: known values with hand-picked weights (PyTorch's gate order)") {
    std::mt19937_64 rng(3);
    SUBCASE("RNN tanh and relu") {
        // in = 2, H = 1, h = 0.5 for both rows; pre-activations written out below.
        for (const Nonlinearity act : {Nonlinearity::tanh, Nonlinearity::relu}) {
            RNNCell<double> cell(2, 1, rng, act);
            set_values(cell.weights().weight_ih, {0.5, -0.25});
            set_values(cell.weights().weight_hh, {0.8});
            set_values(*cell.weights().bias_ih, {0.1});
            set_values(*cell.weights().bias_hh, {-0.2});
            const auto next = one_step(cell, Tensor<double>(2, 2, {1.0, 2.0, 1.0, -2.0}),
                                       {Tensor<double>(2, 1, {0.5, 0.5})});
            const double a0 = 0.5 * 1 - 0.25 * 2 + 0.1 + 0.8 * 0.5 - 0.2; // 0.3
            const double a1 = 0.5 * 1 + 0.25 * 2 + 0.1 + 0.8 * 0.5 - 0.2; // 1.3
            const bool is_tanh = act == Nonlinearity::tanh;
            CHECK(next[0](0, 0) == doctest::Approx(is_tanh ? std::tanh(a0) : a0).epsilon(1e-14));
            CHECK(next[0](1, 0) == doctest::Approx(is_tanh ? std::tanh(a1) : a1).epsilon(1e-14));
        }
        RNNCell<double> relu(1, 1, rng, Nonlinearity::relu, false);
        set_values(relu.weights().weight_ih, {1.0});
        set_values(relu.weights().weight_hh, {1.0});
        CHECK(one_step(relu, Tensor<double>(1, 1, {-2.0}),
                       {Tensor<double>(1, 1, {0.5})})[0](0, 0) == 0.0);
    }
    SUBCASE("LSTM: rows i, f, g, o; c' = f c + i g, h' = o tanh(c')") {
        LSTMCell<double> cell(1, 1, rng);
        set_values(cell.weights().weight_ih, {0.5, -0.5, 1.0, 0.25}); // i, f, g, o
        set_values(cell.weights().weight_hh, {0.1, 0.2, 0.3, 0.4});
        set_values(*cell.weights().bias_ih, {0.0, 0.3, 0.0, 0.0});
        set_values(*cell.weights().bias_hh, {0.05, 0.0, -0.1, 0.0});
        // x = 1, h = 0.5, c = 0.2
        const auto next = one_step(cell, Tensor<double>(1, 1, {1.0}),
                                   {Tensor<double>(1, 1, {0.5}), Tensor<double>(1, 1, {0.2})});
        const double i = reference::sigmoid(0.5 + 0.05 + 0.05);
        const double f = reference::sigmoid(-0.5 + 0.3 + 0.1);
        const double g = std::tanh(1.0 + 0.15 - 0.1);
        const double o = reference::sigmoid(0.25 + 0.2);
        const double c = f * 0.2 + i * g;
        CHECK(next[1](0, 0) == doctest::Approx(c).epsilon(1e-14));
        CHECK(next[0](0, 0) == doctest::Approx(o * std::tanh(c)).epsilon(1e-14));
    }
    SUBCASE("GRU: rows r, z, n; b_hn inside r * (...); h' = (1 - z) n + z h") {
        GRUCell<double> cell(1, 1, rng);
        set_values(cell.weights().weight_ih, {0.5, -0.5, 1.0}); // r, z, n
        set_values(cell.weights().weight_hh, {0.1, 0.2, 0.3});
        set_values(*cell.weights().bias_ih, {0.0, 0.1, 0.2});
        set_values(*cell.weights().bias_hh, {0.0, 0.0, 0.4});
        // x = 1, h = 0.5
        const auto next =
            one_step(cell, Tensor<double>(1, 1, {1.0}), {Tensor<double>(1, 1, {0.5})});
        const double r = reference::sigmoid(0.5 + 0.05);
        const double z = reference::sigmoid(-0.5 + 0.1 + 0.1);
        const double n = std::tanh(1.0 + 0.2 + r * (0.3 * 0.5 + 0.4));
        CHECK(next[0](0, 0) == doctest::Approx((1 - z) * n + z * 0.5).epsilon(1e-14));
    }
}

TEST_CASE("cells: random weights match the scalar reference equations") {
    std::mt19937_64 rng(5);
    RNNCell<double> rnn_tanh(kInput, kHidden, rng);
    RNNCell<double> rnn_relu(kInput, kHidden, rng, Nonlinearity::relu);
    LSTMCell<double> lstm(kInput, kHidden, rng, true, 0.5);
    GRUCell<double> gru(kInput, kHidden, rng);
    check_step_matches(
        rnn_tanh,
        [&](std::size_t, const reference::Vec& x, const reference::State& s) {
            return reference::rnn_step(rnn_tanh.weights(), false, x, s);
        },
        1);
    check_step_matches(
        rnn_relu,
        [&](std::size_t, const reference::Vec& x, const reference::State& s) {
            return reference::rnn_step(rnn_relu.weights(), true, x, s);
        },
        2);
    check_step_matches(
        lstm,
        [&](std::size_t, const reference::Vec& x, const reference::State& s) {
            return reference::lstm_step(lstm.weights(), x, s);
        },
        3);
    check_step_matches(
        gru,
        [&](std::size_t, const reference::Vec& x, const reference::State& s) {
            return reference::gru_step(gru.weights(), x, s);
        },
        4);
}

TEST_CASE("cells: float64 gradient check of one step w.r.t. parameters, input and state") {
    std::mt19937_64 rng(9);
    SUBCASE("RNN tanh") {
        RNNCell<double> cell(kInput, kHidden, rng);
        const GradCheckReport report = check_cell_gradients(cell, 21);
        INFO(report.summary());
        CHECK(report.passed);
        CHECK(report.max_rel_error < 1e-6);
        CHECK(report.checked == cell.parameter_count() + kBatch * (kInput + kHidden));
    }
    SUBCASE("RNN relu") {
        RNNCell<double> cell(kInput, kHidden, rng, Nonlinearity::relu);
        const GradCheckReport report = check_cell_gradients(cell, 22);
        INFO(report.summary());
        CHECK(report.passed);
        CHECK(report.max_rel_error < 1e-6);
    }
    SUBCASE("LSTM (h and c)") {
        LSTMCell<double> cell(kInput, kHidden, rng, true, 1.0);
        const GradCheckReport report = check_cell_gradients(cell, 23);
        INFO(report.summary());
        CHECK(report.passed);
        CHECK(report.max_rel_error < 1e-6);
        CHECK(report.checked == cell.parameter_count() + kBatch * (kInput + 2 * kHidden));
    }
    SUBCASE("GRU") {
        GRUCell<double> cell(kInput, kHidden, rng);
        const GradCheckReport report = check_cell_gradients(cell, 24);
        INFO(report.summary());
        CHECK(report.passed);
        CHECK(report.max_rel_error < 1e-6);
    }
    SUBCASE("cells without bias") {
        LSTMCell<double> lstm(kInput, kHidden, rng, false);
        GRUCell<double> gru(kInput, kHidden, rng, false);
        for (Cell<double>* cell :
             {static_cast<Cell<double>*>(&lstm), static_cast<Cell<double>*>(&gru)}) {
            const GradCheckReport report = check_cell_gradients(*cell, 25);
            INFO(report.summary());
            CHECK(report.passed);
            CHECK(report.max_rel_error < 1e-6);
        }
    }
}

TEST_CASE("cells: a wrong gradient is caught by the same check") {
    // Guards the cell gradient checks against passing vacuously: a loss whose tape gradient
    // disagrees with its value (the state enters through a detach) must fail.
    std::mt19937_64 rng(13);
    GRUCell<double> cell(kInput, kHidden, rng);
    Parameter<double> x("x", uniform_tensor<double>(kBatch, kInput, 1.0, rng));
    Parameter<double> h("h", uniform_tensor<double>(kBatch, kHidden, 1.0, rng));
    const GradCheckReport report = grad_check(
        [&](Tape<double>& tape) {
            cell.attach(tape);
            const Var<double> state[] = {tape.detach(tape.param(h))};
            return sum(cell.step(cell.project_inputs(tape.param(x)), state)[0]);
        },
        {&h});
    CHECK_FALSE(report.passed);
}
