// Fused gate nodes equal the composed cells (forward and gradients, to float64 rounding), pass
// gradient checks, and the float fast-math functions stay within 1e-6 of the C library.
#include <doctest/doctest.h>

#include <cmath>
#include <random>

#include "../src/fast_math.hpp"
#include "cellgrad/cellgrad.hpp"
#include "cellgrad/fused.hpp"
#include "cellgrad/nn.hpp"

using namespace cellgrad;

namespace {

Tensor<double> random_tensor(std::size_t rows, std::size_t cols, std::mt19937_64& rng,
                             double scale = 1.0) {
    std::normal_distribution<double> normal(0.0, scale);
    Tensor<double> tensor(rows, cols);
    for (std::size_t i = 0; i < tensor.size(); ++i) {
        tensor.data()[i] = normal(rng);
    }
    return tensor;
}

/// Runs `layer` over x with h0 (and c0), loss = sum(out * weights) + sum(final h); returns the
/// loss value and leaves gradients in the parameters.
template <class Layer>
double run_layer(Layer& layer, Parameter<double>& x, std::vector<Parameter<double>>& initial,
                 const Tensor<double>& weights, std::size_t batch,
                 std::span<const std::int32_t> lengths) {
    Tape<double> tape;
    nn::RecurrentState<double> state(initial.size() / layer.state_size());
    for (std::size_t i = 0; i < initial.size(); ++i) {
        state[i / layer.state_size()].push_back(tape.param(initial[i]));
    }
    const nn::RecurrentOutput<double> out = layer.forward(tape.param(x), batch, state, lengths);
    Var<double> loss =
        add(sum(mul(out.output, tape.constant(weights))), sum(out.final_state.back().back()));
    tape.backward(loss);
    return loss.item();
}

} // namespace

TEST_CASE("fused LSTM and GRU layers equal the composed cells, values and gradients") {
    for (const std::string kind : {"lstm", "gru"}) {
        CAPTURE(kind);
        nn::RecurrentOptions options;
        options.input_size = 3;
        options.hidden_size = 5;
        options.num_layers = 2;
        options.bidirectional = true;
        std::mt19937_64 rng_fused(7);
        std::mt19937_64 rng_composed(7);
        std::unique_ptr<nn::Recurrent<double>> fused;
        std::unique_ptr<nn::Recurrent<double>> composed;
        options.fused_gates = true;
        if (kind == "lstm") {
            fused = std::make_unique<nn::LSTM<double>>(options, rng_fused);
        } else {
            fused = std::make_unique<nn::GRU<double>>(options, rng_fused);
        }
        options.fused_gates = false;
        if (kind == "lstm") {
            composed = std::make_unique<nn::LSTM<double>>(options, rng_composed);
        } else {
            composed = std::make_unique<nn::GRU<double>>(options, rng_composed);
        }
        const std::size_t batch = 3;
        const std::size_t steps = 6;
        std::mt19937_64 data_rng(1);
        const Tensor<double> input = random_tensor(steps * batch, 3, data_rng);
        const Tensor<double> weights = random_tensor(steps * batch, 10, data_rng);
        const std::int32_t lengths[] = {6, 2, 4};
        const std::size_t state_count = fused->state_size() * 4;
        std::vector<Parameter<double>> initial_fused;
        std::vector<Parameter<double>> initial_composed;
        for (std::size_t i = 0; i < state_count; ++i) {
            const Tensor<double> value = random_tensor(batch, 5, data_rng, 0.5);
            initial_fused.emplace_back(fmt::format("s{}", i), value);
            initial_composed.emplace_back(fmt::format("s{}", i), value);
        }
        Parameter<double> x_fused("x", input);
        Parameter<double> x_composed("x", input);
        const double loss_fused =
            run_layer(*fused, x_fused, initial_fused, weights, batch, lengths);
        const double loss_composed =
            run_layer(*composed, x_composed, initial_composed, weights, batch, lengths);
        CHECK(loss_fused == doctest::Approx(loss_composed).epsilon(1e-13));
        auto pf = fused->parameters();
        auto pc = composed->parameters();
        REQUIRE(pf.size() == pc.size());
        for (std::size_t i = 0; i < pf.size(); ++i) {
            CAPTURE(pf[i]->name);
            CHECK(max_abs_difference<double>(pf[i]->grad.view(), pc[i]->grad.view()) < 1e-12);
        }
        CHECK(max_abs_difference<double>(x_fused.grad.view(), x_composed.grad.view()) < 1e-12);
        for (std::size_t i = 0; i < state_count; ++i) {
            CHECK(max_abs_difference<double>(initial_fused[i].grad.view(),
                                             initial_composed[i].grad.view()) < 1e-12);
        }
    }
}

TEST_CASE("lstm_cell_state, lstm_hidden_state and gru_gates pass float64 gradient checks") {
    std::mt19937_64 rng(3);
    Parameter<double> a("pre_activations", random_tensor(4, 12, rng));
    Parameter<double> c("c", random_tensor(4, 3, rng));
    const Tensor<double> weights = random_tensor(4, 3, rng);
    const Tensor<double> cell_weights = random_tensor(4, 3, rng);
    GradCheckReport lstm_report = grad_check(
        [&](Tape<double>& tape) {
            const Var<double> gates = tape.param(a);
            const Var<double> c_new = lstm_cell_state(gates, tape.param(c));
            const Var<double> h_new = lstm_hidden_state(gates, c_new);
            return add(sum(mul(h_new, tape.constant(weights))),
                       sum(mul(c_new, tape.constant(cell_weights))));
        },
        {&a, &c});
    INFO(lstm_report.summary());
    CHECK(lstm_report.passed);
    CHECK(lstm_report.max_rel_error < 1e-6);

    Parameter<double> x("x", random_tensor(4, 9, rng));
    Parameter<double> p("p", random_tensor(4, 9, rng));
    Parameter<double> h("h", random_tensor(4, 3, rng));
    const Tensor<double> gru_weights = random_tensor(4, 3, rng);
    GradCheckReport gru_report = grad_check(
        [&](Tape<double>& tape) {
            return sum(mul(gru_gates(tape.param(x), tape.param(p), tape.param(h)),
                           tape.constant(gru_weights)));
        },
        {&x, &p, &h});
    INFO(gru_report.summary());
    CHECK(gru_report.passed);
    CHECK(gru_report.max_rel_error < 1e-6);
}

TEST_CASE("lstm_cell_state and lstm_hidden_state: known values from the equations") {
    Tape<double> tape;
    // One row, H = 1: a = [a_i, a_f, a_g, a_o], c = 0.5.
    const Var<double> a = tape.constant(Tensor<double>(1, 4, {0.2, -0.3, 0.7, 1.1}));
    const Var<double> c = tape.constant(Tensor<double>(1, 1, {0.5}));
    const Var<double> cell = lstm_cell_state(a, c);
    const Var<double> hidden = lstm_hidden_state(a, cell);
    auto sig = [](double v) { return 1.0 / (1.0 + std::exp(-v)); };
    const double c_new = sig(-0.3) * 0.5 + sig(0.2) * std::tanh(0.7);
    CHECK(cell.value()(0, 0) == doctest::Approx(c_new).epsilon(1e-15));
    CHECK(hidden.value()(0, 0) == doctest::Approx(sig(1.1) * std::tanh(c_new)).epsilon(1e-15));
}

TEST_CASE("fused gate ops reject bad shapes naming the op") {
    Tape<double> tape;
    const Var<double> a = tape.constant(Tensor<double>(2, 8));
    const Var<double> c = tape.constant(Tensor<double>(2, 3));
    CHECK_THROWS_WITH_AS(lstm_cell_state(a, c), doctest::Contains("lstm_cell_state"), Error);
    CHECK_THROWS_WITH_AS(lstm_hidden_state(a, c), doctest::Contains("lstm_hidden_state"), Error);
    CHECK_THROWS_WITH_AS(gru_gates(a, a, c), doctest::Contains("gru_gates"), Error);
}

TEST_CASE("float fast exp, sigmoid and tanh stay within 1e-6 relative of the C library") {
    double worst_exp = 0;
    double worst_sigmoid = 0;
    double worst_tanh = 0;
    for (int k = -200000; k <= 200000; ++k) {
        const float x = static_cast<float>(k) * 4e-4f; // [-80, 80]
        const double e = std::exp(double(x));
        worst_exp = std::max(worst_exp, std::abs(fast_math::exp<float>(x) - e) / e);
        const double s = 1.0 / (1.0 + std::exp(-double(x)));
        worst_sigmoid = std::max(worst_sigmoid, std::abs(fast_math::sigmoid<float>(x) - s) / s);
        const double t = std::tanh(double(x));
        if (t != 0) {
            worst_tanh =
                std::max(worst_tanh, std::abs(fast_math::tanh<float>(x) - t) / std::abs(t));
        }
    }
    CHECK(worst_exp < 1e-6);
    CHECK(worst_sigmoid < 1e-6);
    CHECK(worst_tanh < 1e-6);
    CHECK(fast_math::tanh<float>(1e-20f) == 1e-20f);
    CHECK(fast_math::sigmoid<float>(-200.0f) >= 0.0f);
    CHECK(fast_math::sigmoid<float>(200.0f) == 1.0f);
}

TEST_CASE("fused LSTM: per-step dL/dh_t and dL/dc_t equal the composed cell's") {
    nn::RecurrentOptions options;
    options.input_size = 2;
    options.hidden_size = 3;
    std::mt19937_64 rng_a(5);
    std::mt19937_64 rng_b(5);
    nn::LSTM<double> fused(options, rng_a);
    options.fused_gates = false;
    nn::LSTM<double> composed(options, rng_b);
    std::mt19937_64 data_rng(2);
    const Tensor<double> input = random_tensor(5 * 2, 2, data_rng);
    const Tensor<double> weights = random_tensor(2, 3, data_rng);
    Tape<double> tape_a;
    Tape<double> tape_b;
    const nn::RecurrentOutput<double> out_a = fused.forward(tape_a.constant(input), 2);
    const nn::RecurrentOutput<double> out_b = composed.forward(tape_b.constant(input), 2);
    tape_a.backward(sum(mul(out_a.steps.back(), tape_a.constant(weights))));
    tape_b.backward(sum(mul(out_b.steps.back(), tape_b.constant(weights))));
    for (std::size_t t = 0; t < 5; ++t) {
        for (std::size_t k = 0; k < 2; ++k) {
            CAPTURE(t);
            CAPTURE(k);
            const Tensor<double> ga = out_a.states[0][t][k].grad();
            const Tensor<double> gb = out_b.states[0][t][k].grad();
            CHECK(max_abs_difference<double>(ga.view(), gb.view()) < 1e-14);
        }
    }
    // The last step's dL/dc_T is not zero: it flows through h_T = o * tanh(c_T).
    CHECK(std::abs(out_a.states[0][4][1].grad()(0, 0)) > 1e-6);
}

TEST_CASE("float fast exp overflows to +inf like the C library, and NaN stays NaN") {
    CHECK(std::isinf(fast_math::exp<float>(89.0f)));
    CHECK(std::isinf(fast_math::exp<float>(1000.0f)));
    CHECK(std::isnan(fast_math::exp<float>(std::nanf(""))));
    CHECK(std::isnan(fast_math::tanh<float>(std::nanf(""))));
    CHECK(fast_math::exp<float>(88.0f) == doctest::Approx(std::exp(88.0)).epsilon(1e-6));
}
