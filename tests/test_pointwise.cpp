// Pointwise nodes (pointwise.hpp): a cell's math written once, its backward derived. Checked
// against the math written out in scalar C++, against the same math composed from primitive ops,
// by float64 gradient checks, and at 1 and 2 threads bit for bit. Also the float fast-math
// functions the math evaluates with.
#include <doctest/doctest.h>

#include <cmath>
#include <cstring>
#include <random>
#include <string_view>
#include <tuple>

#include "cellgrad/cellgrad.hpp"
#include "cellgrad/detail/fast_math.hpp"
#include "cellgrad/parallel.hpp"
#include "cellgrad/pointwise.hpp"

using namespace cellgrad;

namespace {

template <class T = double>
Tensor<T> random_tensor(std::size_t rows, std::size_t cols, std::uint64_t seed,
                        double scale = 1.0) {
    std::mt19937_64 rng(seed);
    std::normal_distribution<double> normal(0.0, scale);
    Tensor<T> tensor(rows, cols);
    for (std::size_t i = 0; i < tensor.size(); ++i) {
        tensor.data()[i] = static_cast<T>(normal(rng));
    }
    return tensor;
}

double sig(double v) {
    return 1.0 / (1.0 + std::exp(-v));
}

/// A math using every operation: two outputs of three arguments.
constexpr auto every_op = [](auto a, auto b, auto c) {
    auto gate = sigmoid(a) * tanh(b) - 0.5 * exp(-c) / (2.0 + relu(b));
    return std::tuple{gate, 1.0 - gate * c};
};

/// The LSTM gates with diagonal peepholes p_i, p_f (on c) and p_o (on c').
constexpr auto peephole_lstm = [](auto a_i, auto a_f, auto a_g, auto a_o, auto c, auto p_i,
                                  auto p_f, auto p_o) {
    auto c_new = sigmoid(a_f + p_f * c) * c + sigmoid(a_i + p_i * c) * tanh(a_g);
    return std::tuple{sigmoid(a_o + p_o * c_new) * tanh(c_new), c_new};
};

} // namespace

TEST_CASE("pointwise: known values from the equations written in scalar C++") {
    Tape<double> tape;
    const Tensor<double> a = random_tensor(2, 3, 1), b = random_tensor(2, 3, 2),
                         c = random_tensor(2, 3, 3);
    const auto [y, z] =
        pointwise("every_op", every_op, tape.constant(a), tape.constant(b), tape.constant(c));
    for (std::size_t r = 0; r < 2; ++r) {
        for (std::size_t j = 0; j < 3; ++j) {
            const double gate = sig(a(r, j)) * std::tanh(b(r, j)) -
                                0.5 * std::exp(-c(r, j)) / (2.0 + std::max(b(r, j), 0.0));
            CHECK(y.value()(r, j) == doctest::Approx(gate).epsilon(1e-15));
            CHECK(z.value()(r, j) == doctest::Approx(1.0 - gate * c(r, j)).epsilon(1e-15));
        }
    }
    // One node and a column view per output; the outputs live in the node's (B, 2H) value.
    CHECK(tape.size() == 3 + 1 + 2);
    CHECK(y.value().data + 3 == z.value().data);
    CHECK(std::string_view(tape.node(y.id()).op) == "every_op");
}

TEST_CASE("pointwise: float64 gradient checks of the derived backward") {
    constexpr std::size_t B = 3, H = 4;
    Parameter<double> gates("gates", random_tensor(B, 4 * H, 4));
    Parameter<double> c("c", random_tensor(B, H, 5));
    Parameter<double> peepholes("peepholes", random_tensor(1, 3 * H, 6));
    Parameter<double> a("a", random_tensor(B, H, 7)), b("b", random_tensor(B, H, 8)),
        x("x", random_tensor(B, H, 9));
    const Tensor<double> w1 = random_tensor(B, H, 10), w2 = random_tensor(B, H, 11);
    SUBCASE("column blocks, a state and broadcast per-unit parameters") {
        const auto loss = [&](Tape<double>& tape) {
            const auto [a_i, a_f, a_g, a_o] = split_columns<4>(tape.param(gates));
            const auto [p_i, p_f, p_o] = split_columns<3>(tape.param(peepholes));
            const auto [h, c_new] = pointwise("peephole_lstm", peephole_lstm, a_i, a_f, a_g, a_o,
                                              Columns<double>(tape.param(c)), p_i, p_f, p_o);
            return add(sum(mul(h, tape.constant(w1))), sum(mul(c_new, tape.constant(w2))));
        };
        const GradCheckReport report = grad_check(loss, {&gates, &c, &peepholes});
        INFO(report.summary());
        CHECK(report.passed);
        CHECK(report.max_rel_error < 1e-6);
        CHECK(report.checked == B * 4 * H + B * H + 3 * H);
    }
    SUBCASE("every operation, and one Var passed twice") {
        const auto loss = [&](Tape<double>& tape) {
            const Var<double> av = tape.param(a);
            const auto [y, z] = pointwise("every_op", every_op, av, tape.param(b), av);
            return add(sum(mul(y, tape.constant(w1))), sum(mul(z, tape.constant(w2))));
        };
        const GradCheckReport report = grad_check(loss, {&a, &b});
        INFO(report.summary());
        CHECK(report.passed);
        CHECK(report.max_rel_error < 1e-6);
    }
    SUBCASE("only one output used; an operand without gradient") {
        const auto loss = [&](Tape<double>& tape) {
            const auto [y, z] = pointwise("every_op", every_op, tape.param(a),
                                          tape.constant(b.value), tape.param(x));
            return sum(mul(z, tape.constant(w2)));
        };
        const GradCheckReport report = grad_check(loss, {&a, &x});
        INFO(report.summary());
        CHECK(report.passed);
        CHECK(report.max_rel_error < 1e-6);
    }
}

TEST_CASE("pointwise: gradients equal the same math composed from primitive ops") {
    constexpr std::size_t B = 5, H = 6;
    Tape<double> tape;
    const Var<double> gates = tape.input(random_tensor(B, 4 * H, 12));
    const Var<double> c = tape.input(random_tensor(B, H, 13));
    const Var<double> p = tape.input(random_tensor(1, 3 * H, 14));
    const auto [a_i, a_f, a_g, a_o] = split_columns<4>(gates);
    const auto [p_i, p_f, p_o] = split_columns<3>(p);
    const auto [h, c_new] = pointwise("peephole_lstm", peephole_lstm, a_i, a_f, a_g, a_o,
                                      Columns<double>(c), p_i, p_f, p_o);
    // The same cell from primitives.
    auto block = [&](const Var<double>& x, std::size_t k) {
        return slice_cols(x, k * H, (k + 1) * H);
    };
    const Var<double> c2 =
        add(mul(sigmoid(add(block(gates, 1), mul(block(p, 1), c))), c),
            mul(sigmoid(add(block(gates, 0), mul(block(p, 0), c))), tanh(block(gates, 2))));
    const Var<double> h2 = mul(sigmoid(add(block(gates, 3), mul(block(p, 2), c2))), tanh(c2));
    CHECK(max_abs_difference<double>(h.value(), h2.value()) < 1e-15);
    CHECK(max_abs_difference<double>(c_new.value(), c2.value()) < 1e-15);
    const Tensor<double> w = random_tensor(B, H, 15), v = random_tensor(B, H, 16);
    const Var<double> loss_fused =
        add(sum(mul(h, tape.constant(w))), sum(mul(c_new, tape.constant(v))));
    tape.backward(loss_fused);
    const Tensor<double> dgates = gates.grad(), dc = c.grad(), dp = p.grad(), dh = h.grad(),
                         dc_new = c_new.grad();
    const Var<double> loss_composed =
        add(sum(mul(h2, tape.constant(w))), sum(mul(c2, tape.constant(v))));
    tape.backward(loss_composed);
    CHECK(max_abs_difference<double>(dgates.view(), gates.grad().view()) < 1e-14);
    CHECK(max_abs_difference<double>(dc.view(), c.grad().view()) < 1e-14);
    CHECK(max_abs_difference<double>(dp.view(), p.grad().view()) < 1e-14);
    // Each output's own gradient: dL/dh = w, and dL/dc' = v plus what flows back from h.
    CHECK(max_abs_difference<double>(dh.view(), w.view()) == 0.0);
    CHECK(max_abs_difference<double>(dc_new.view(), c2.grad().view()) < 1e-14);
}

TEST_CASE("pointwise: 1 and 2 threads give the same bits, broadcast sums included") {
    constexpr std::size_t B = 64, H = 512; // several pieces per pass
    const Tensor<float> gates = random_tensor<float>(B, 4 * H, 17);
    const Tensor<float> c = random_tensor<float>(B, H, 18);
    const Tensor<float> p = random_tensor<float>(1, 3 * H, 19);
    const Tensor<float> w = random_tensor<float>(B, H, 20);
    std::vector<Tensor<float>> results[2];
    for (const int threads : {1, 2}) {
        set_num_threads(threads);
        Tape<float> tape;
        const Var<float> g = tape.input(gates), cv = tape.input(c), pv = tape.input(p);
        const auto [a_i, a_f, a_g, a_o] = split_columns<4>(g);
        const auto [p_i, p_f, p_o] = split_columns<3>(pv);
        const auto [h, c_new] = pointwise("peephole_lstm", peephole_lstm, a_i, a_f, a_g, a_o,
                                          Columns<float>(cv), p_i, p_f, p_o);
        tape.backward(add(sum(mul(h, tape.constant(w))), sum(c_new)));
        results[threads - 1] = {h.value_tensor(), c_new.value_tensor(), g.grad(), cv.grad(),
                                pv.grad()};
    }
    set_num_threads(2);
    for (std::size_t i = 0; i < results[0].size(); ++i) {
        INFO("result " << i);
        REQUIRE(results[0][i].shape() == results[1][i].shape());
        CHECK(std::memcmp(results[0][i].data(), results[1][i].data(),
                          sizeof(float) * results[0][i].size()) == 0);
    }
    // The broadcast gradient is the row sum of per-row contributions: not all zero.
    CHECK(max_abs_difference<float>(results[0][4].view(), Tensor<float>(1, 3 * H).view()) > 1e-3);
}

TEST_CASE("pointwise: operands that do not fit are refused naming the op and shapes") {
    Tape<double> tape;
    const Var<double> a = tape.constant(Tensor<double>(2, 3));
    const Var<double> wide = tape.constant(Tensor<double>(2, 4));
    const Var<double> rows3 = tape.constant(Tensor<double>(3, 3));
    const auto add_math = [](auto x, auto y) { return x + y; };
    CHECK_THROWS_WITH_AS(pointwise("sum2", add_math, a, wide),
                         doctest::Contains("sum2: operand 1 (columns [0, 4) of (2, 4))"), Error);
    CHECK_THROWS_WITH_AS(pointwise("sum2", add_math, a, rows3),
                         doctest::Contains("needs 3 columns of (3, .) or (1, .)"), Error);
    CHECK_THROWS_WITH_AS(
        split_columns<3>(wide),
        doctest::Contains("split_columns: 4 columns of (2, 4) do not split into 3"), Error);
    Tape<double> other;
    CHECK_THROWS_WITH_AS(pointwise("sum2", add_math, a, other.constant(Tensor<double>(2, 3))),
                         doctest::Contains("on one tape"), Error);
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

TEST_CASE("float fast exp overflows to +inf like the C library, and NaN stays NaN") {
    CHECK(std::isinf(fast_math::exp<float>(89.0f)));
    CHECK(std::isinf(fast_math::exp<float>(1000.0f)));
    CHECK(std::isnan(fast_math::exp<float>(std::nanf(""))));
    CHECK(std::isnan(fast_math::tanh<float>(std::nanf(""))));
    CHECK(fast_math::exp<float>(88.0f) == doctest::Approx(std::exp(88.0)).epsilon(1e-6));
}

TEST_CASE("pointwise: named intermediates are kept for inspection only when asked") {
    Tape<double> tape;
    const Tensor<double> a = random_tensor(2, 3, 21), c = random_tensor(2, 3, 22);
    const auto gates = [](auto a, auto c) {
        auto forget = named("forget", sigmoid(a));
        return std::tuple{forget * c, named("squashed", tanh(forget * c)) + forget};
    };
    pointwise("gates", gates, tape.constant(a), tape.constant(c));
    CHECK(tape.intermediates().empty());
    tape.keep_intermediates(true);
    {
        LabelScope<double> label(tape, "cell t=3");
        pointwise("gates", gates, tape.constant(a), tape.constant(c));
    }
    REQUIRE(tape.intermediates().size() == 2); // "forget" appears three times, kept once
    const Intermediate<double>& forget = tape.intermediates()[0];
    const Intermediate<double>& squashed = tape.intermediates()[1];
    CHECK(std::string_view(forget.name) == "forget");
    CHECK(std::string_view(squashed.name) == "squashed");
    CHECK(forget.label == "cell t=3");
    for (std::size_t r = 0; r < 2; ++r) {
        for (std::size_t j = 0; j < 3; ++j) {
            CHECK(forget.value(r, j) == doctest::Approx(sig(a(r, j))).epsilon(1e-15));
            CHECK(squashed.value(r, j) ==
                  doctest::Approx(std::tanh(sig(a(r, j)) * c(r, j))).epsilon(1e-15));
        }
    }
    tape.clear();
    CHECK(tape.intermediates().empty());
}

TEST_CASE("pointwise: a broadcast row's gradient is the sum over rows, short and long rows") {
    // H = 100 takes row groups with a partial row each; H = 5000 splits rows into column pieces.
    for (const std::size_t H : {std::size_t(100), std::size_t(5000)}) {
        constexpr std::size_t B = 37;
        Tape<double> tape;
        const Var<double> x = tape.input(random_tensor(B, H, 23));
        const Var<double> p = tape.input(random_tensor(1, H, 24));
        const Tensor<double> w = random_tensor(B, H, 25);
        const auto [y] = pointwise(
            "scale", [](auto x, auto p) { return p * x; }, x, p);
        tape.backward(sum(mul(y, tape.constant(w))));
        const Tensor<double> dp = p.grad();
        double worst = 0;
        for (std::size_t j = 0; j < H; ++j) {
            double expected = 0;
            for (std::size_t r = 0; r < B; ++r) {
                expected += w(r, j) * x.value()(r, j);
            }
            worst = std::max(worst, std::abs(dp(0, j) - expected));
        }
        INFO("H = " << H);
        CHECK(worst < 1e-12);
    }
}

TEST_CASE("pointwise: an output inside another is the same value, or the math is refused") {
    Tape<double> tape;
    const Var<double> a = tape.input(random_tensor(2, 3, 26));
    // 0.5 * a is output 1 and also stands inside output 0: output 0 gets it as an argument.
    const auto [y, z] = pointwise(
        "shared",
        [](auto a) {
            return std::tuple{tanh(0.5 * a), 0.5 * a};
        },
        a);
    tape.backward(add(sum(y), sum(z)));
    for (std::size_t j = 0; j < 3; ++j) {
        const double t = std::tanh(0.5 * a.value()(0, j));
        CHECK(a.grad()(0, j) == doctest::Approx(0.5 * (1 - t * t) + 0.5).epsilon(1e-14));
    }
    // Same shape, other constants: substituting would be wrong, so it is refused by name.
    CHECK_THROWS_WITH_AS(
        pointwise(
            "clash",
            [](auto a) {
                return std::tuple{tanh(0.3 * a), 0.5 * a};
            },
            a),
        doctest::Contains("clash: one output's expression appears inside another with other "
                          "constants"),
        Error);
}
