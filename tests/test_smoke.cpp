#include <doctest/doctest.h>

#include "cellgrad/cellgrad.hpp"

using namespace cellgrad;

TEST_CASE("smoke: tanh(x W^T + b) summed has the gradient of the equations") {
    Parameter<double> w("w", Tensor<double>(2, 3, {0.1, -0.2, 0.3, 0.4, 0.5, -0.6}));
    Parameter<double> b("b", Tensor<double>(1, 2, {0.05, -0.05}), true);
    Tape<double> tape;
    Var<double> x = tape.constant(Tensor<double>(1, 3, {1.0, 2.0, 3.0}));
    Var<double> y = sum(tanh(linear(x, tape.param(w), tape.param(b))));
    // pre-activations: 0.1-0.4+0.9+0.05 = 0.65, 0.4+1.0-1.8-0.05 = -0.45
    CHECK(y.item() == doctest::Approx(std::tanh(0.65) + std::tanh(-0.45)));
    y.backward();
    const double d0 = 1 - std::tanh(0.65) * std::tanh(0.65);
    CHECK(w.grad(0, 2) == doctest::Approx(3.0 * d0));
    CHECK(b.grad(0, 0) == doctest::Approx(d0));
    GradCheckReport report = grad_check(
        [&](Tape<double>& t) {
            Var<double> xx = t.constant(Tensor<double>(1, 3, {1.0, 2.0, 3.0}));
            return sum(tanh(linear(xx, t.param(w), t.param(b))));
        },
        {&w, &b});
    INFO(report.summary());
    CHECK(report.passed);
    CHECK(report.max_rel_error < 1e-6);
}
