// grad_check: passes on correct gradients, fails and names the culprit on wrong ones, samples
// large tensors plus a random direction, and reports in one line.
#include <doctest/doctest.h>

#include <cmath>
#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include "cellgrad/grad_check.hpp"
#include "cellgrad/ops.hpp"

using namespace cellgrad;

namespace {

/// (rows, cols) tensor of U(lo, hi) values from a fixed seed.
Tensor<double> random_matrix(std::size_t rows, std::size_t cols, std::uint64_t seed,
                             double lo = -1.0, double hi = 1.0) {
    std::mt19937_64 rng(seed);
    std::uniform_real_distribution<double> uniform(lo, hi);
    Tensor<double> m(rows, cols);
    for (std::size_t i = 0; i < m.size(); ++i) {
        m.data()[i] = uniform(rng);
    }
    return m;
}

/// True when `text` contains `part`.
bool contains(const std::string& text, const std::string& part) {
    return text.find(part) != std::string::npos;
}

} // namespace

TEST_CASE("grad_check: passes on correct gradients and restores the parameters") {
    Parameter<double> w("w", random_matrix(3, 4, 1));
    Parameter<double> b("b", random_matrix(1, 3, 2), true);
    const Tensor<double> x = random_matrix(5, 4, 3);
    const Tensor<double> w_before = w.value;
    // A stale gradient must not leak into the analytic one: grad_check zeroes it first.
    w.grad.fill(123.0);
    const LossFunction loss = [&](Tape<double>& t) {
        return mean(tanh(linear(t.constant(x), t.param(w), t.param(b))));
    };
    const GradCheckReport report = grad_check(loss, {&w, &b});
    INFO(report.summary());
    CHECK(report.passed);
    CHECK(report.checked == 12 + 3);
    CHECK(report.max_rel_error < 1e-6);
    CHECK(report.max_abs_error < 1e-9);
    CHECK(w.value.to_vector() == w_before.to_vector()); // perturbations undone exactly
    CHECK(w.grad(0, 0) != 123.0);                       // the analytic gradient is left in grad
    CHECK(contains(report.summary(), "grad_check passed: 15 comparisons"));
}

TEST_CASE("grad_check: a gradient that misses a term fails and names the worst element") {
    // loss = sum(v * K) + sum(v * stop(v * e)): the second term reads v[1, 2] through a constant
    // copy, so the tape's gradient there is K + v[1, 2] while the true one is K + 2 v[1, 2].
    Parameter<double> good("good", random_matrix(2, 2, 4));
    Parameter<double> v("v", random_matrix(2, 3, 5, 0.5, 1.5));
    const Tensor<double> k = random_matrix(2, 3, 6);
    const LossFunction loss = [&](Tape<double>& t) {
        Tensor<double> frozen(2, 3);
        frozen(1, 2) = v.value(1, 2);
        const Var<double> p = t.param(v);
        return sum(mul(p, t.constant(k))) + sum(mul(p, t.constant(frozen))) +
               sum(square(t.param(good)));
    };
    const GradCheckReport report = grad_check(loss, {&good, &v});
    INFO(report.summary());
    CHECK_FALSE(report.passed);
    CHECK(report.checked == 4 + 6);
    CHECK(report.worst.name == "v");
    CHECK(report.worst.row == 1);
    CHECK(report.worst.col == 2);
    CHECK_FALSE(report.worst.direction);
    const double value = v.value(1, 2);
    CHECK(report.worst.analytic == doctest::Approx(k(1, 2) + value));
    CHECK(report.worst.numeric == doctest::Approx(k(1, 2) + 2 * value).epsilon(1e-8));
    CHECK(report.worst.abs_error == doctest::Approx(value).epsilon(1e-6));
    CHECK(report.max_rel_error > 0.1);
    const std::string summary = report.summary();
    CHECK(contains(summary, "grad_check FAILED: 10 comparisons"));
    CHECK(contains(summary, "worst at v[1, 2]"));
    CHECK(contains(summary, fmt::format("analytic {:.12g}", report.worst.analytic)));
    CHECK(contains(summary, fmt::format("numeric {:.12g}", report.worst.numeric)));
}

TEST_CASE("grad_check: sampled mode checks `samples` elements plus a random direction") {
    Parameter<double> big("big", random_matrix(40, 30, 7)); // 1200 > full_check_limit = 512
    Parameter<double> small("small", random_matrix(2, 30, 8));
    const Tensor<double> x = random_matrix(5, 40, 9);
    const LossFunction loss = [&](Tape<double>& t) {
        return mean(
            sigmoid(matmul(matmul(t.constant(x), t.param(big)), t.param(small), false, true)));
    };
    SUBCASE("default options") {
        const GradCheckReport report = grad_check(loss, {&big, &small});
        INFO(report.summary());
        CHECK(report.passed);
        CHECK(report.checked == 64 + 1 + 60);
        CHECK(report.max_rel_error < 1e-6);
        // The same seed samples the same elements.
        const GradCheckReport again = grad_check(loss, {&big, &small});
        CHECK(again.summary() == report.summary());
    }
    SUBCASE("custom limit and sample count") {
        GradCheckOptions options;
        options.full_check_limit = 5;
        options.samples = 10;
        options.seed = 42;
        const GradCheckReport report = grad_check(loss, {&big, &small}, options);
        INFO(report.summary());
        CHECK(report.passed);
        CHECK(report.checked == (10 + 1) + (10 + 1)); // small (60 > 5) is sampled too
        options.random_direction = false;
        CHECK(grad_check(loss, {&big, &small}, options).checked == 10 + 10);
    }
    SUBCASE("a wrong gradient is caught by the random direction alone") {
        // loss = sum(big * stop(big)): analytic big, true 2 big; no element is sampled.
        const LossFunction wrong = [&](Tape<double>& t) {
            return sum(mul(t.param(big), t.constant(big.value)));
        };
        GradCheckOptions options;
        options.samples = 0;
        const GradCheckReport report = grad_check(wrong, {&big}, options);
        INFO(report.summary());
        CHECK(report.checked == 1);
        CHECK_FALSE(report.passed);
        CHECK(report.worst.direction);
        CHECK(report.worst.name == "big");
        CHECK(report.worst.numeric == doctest::Approx(2 * report.worst.analytic).epsilon(1e-6));
        CHECK(contains(report.summary(), "worst at big (random direction)"));
    }
}

TEST_CASE("grad_check: more samples than elements checks each element once") {
    Parameter<double> p("p", random_matrix(4, 5, 10)); // 20 elements
    GradCheckOptions options;
    options.full_check_limit = 10;
    options.samples = 100;
    const GradCheckReport report =
        grad_check([&](Tape<double>& t) { return sum(exp(t.param(p))); }, {&p}, options);
    INFO(report.summary());
    CHECK(report.passed);
    CHECK(report.checked == 20 + 1);
}

TEST_CASE("grad_check: a non-scalar loss is an error") {
    Parameter<double> p("p", random_matrix(2, 3, 11));
    CHECK_THROWS_WITH_AS(grad_check([&](Tape<double>& t) { return tanh(t.param(p)); }, {&p}),
                         doctest::Contains("grad_check: the loss must be (1, 1), got (2, 3)"),
                         Error);
}

TEST_CASE("grad_check: summary() of a passing report") {
    Parameter<double> p("weight", Tensor<double>(1, 1, {2.0}));
    const GradCheckReport report =
        grad_check([&](Tape<double>& t) { return square(t.param(p)); }, {&p});
    // One element: analytic 2p = 4, numeric (central difference of a quadratic) = 4.
    CHECK(report.passed);
    CHECK(report.checked == 1);
    CHECK(report.worst.analytic == 4.0);
    CHECK(report.worst.numeric == doctest::Approx(4.0).epsilon(1e-9));
    const std::string summary = report.summary();
    INFO(summary);
    CHECK(summary.rfind("grad_check passed: 1 comparisons; max rel error ", 0) == 0);
    CHECK(contains(summary, "worst at weight[0, 0]: analytic 4, numeric "));
}
