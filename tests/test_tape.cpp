// Tape: the reverse loop, gradient accumulation, parameters across tapes, arena reuse, no-grad,
// detach, dumps, labels, anomaly mode and misuse errors.
#include <doctest/doctest.h>

#include <cmath>
#include <limits>
#include <string>
#include <vector>

#include "cellgrad/grad_check.hpp"
#include "cellgrad/ops.hpp"
#include "cellgrad/tape.hpp"

using namespace cellgrad;

namespace {

/// Turns anomaly detection on for a scope and restores the previous setting.
class AnomalyScope {
  public:
    AnomalyScope() : previous_(anomaly_detection()) { set_anomaly_detection(true); }
    ~AnomalyScope() { set_anomaly_detection(previous_); }
    AnomalyScope(const AnomalyScope&) = delete;
    AnomalyScope& operator=(const AnomalyScope&) = delete;

  private:
    bool previous_;
};

/// True when `text` contains `part`.
bool contains(const std::string& text, const std::string& part) {
    return text.find(part) != std::string::npos;
}

/// The message of the Error thrown by `f`, or "" if nothing was thrown.
template <class F>
std::string error_message(const F& f) {
    try {
        f();
    } catch (const Error& error) {
        return error.what();
    }
    return "";
}

} // namespace

TEST_CASE("tape: a 100,000-node tanh chain runs backward as a loop with the exact gradient") {
    constexpr std::size_t depth = 100000;
    const std::vector<double> start = {0.9, -0.3, 2.0, 0.05};
    Tape<double> tape;
    const Var<double> x = tape.input(Tensor<double>(1, 4, start));
    Var<double> y = x;
    for (std::size_t t = 0; t < depth; ++t) {
        y = tanh(y);
    }
    const Var<double> loss = sum(y);
    CHECK(tape.size() == depth + 2);
    loss.backward();
    const Tensor<double> dx = x.grad();

    // Independently: y_t = tanh(y_{t-1}), dy_T/dx = prod_t (1 - y_t^2), per element.
    for (std::size_t c = 0; c < 4; ++c) {
        double value = start[c];
        double product = 1.0;
        for (std::size_t t = 0; t < depth; ++t) {
            value = std::tanh(value);
            product *= 1.0 - value * value;
        }
        CHECK(y.value()(0, c) == doctest::Approx(value).epsilon(1e-12));
        CHECK(dx(0, c) == doctest::Approx(product).epsilon(1e-9));
        CHECK(dx(0, c) > 0.0);
        CHECK(dx(0, c) < 1e-3); // the chain really vanishes: about (y_T / y_0)^3
    }
}

TEST_CASE("tape: parameter gradients accumulate across backward calls, intermediates reset") {
    Parameter<double> w("w", Tensor<double>(1, 2, {0.5, -1.5}));
    Tape<double> tape;
    const Var<double> x = tape.constant(Tensor<double>(1, 2, {2.0, 3.0}));
    const Var<double> h = mul(tape.param(w), x);
    const Var<double> loss = sum(tanh(h));
    loss.backward();
    const double d0 = 1 - std::tanh(1.0) * std::tanh(1.0);
    const double d1 = 1 - std::tanh(-4.5) * std::tanh(-4.5);
    CHECK(w.grad(0, 0) == doctest::Approx(2.0 * d0));
    CHECK(w.grad(0, 1) == doctest::Approx(3.0 * d1));
    // The intermediate Var's gradient is readable after backward.
    const Tensor<double> dh = h.grad();
    CHECK(dh(0, 0) == doctest::Approx(d0));
    CHECK(dh(0, 1) == doctest::Approx(d1));

    tape.backward(loss);
    CHECK(w.grad(0, 0) == doctest::Approx(4.0 * d0));
    CHECK(w.grad(0, 1) == doctest::Approx(6.0 * d1));
    // Intermediate gradients start from zero in every pass.
    CHECK(h.grad()(0, 0) == doctest::Approx(d0));

    w.zero_grad();
    CHECK(w.grad.to_vector() == std::vector<double>{0.0, 0.0});
}

TEST_CASE("tape: a parameter used twice on one tape receives both contributions") {
    Parameter<double> w("w", Tensor<double>(1, 1, {3.0}));
    Tape<double> tape;
    // loss = w * w through two separate leaves: dL/dw = 2w.
    const Var<double> loss = mul(tape.param(w), tape.param(w));
    loss.backward();
    CHECK(w.grad.item() == doctest::Approx(6.0));
}

TEST_CASE("tape: explicit seed gradient for a non-scalar output") {
    Tape<double> tape;
    const Var<double> x = tape.input(Tensor<double>(1, 3, {1.0, 2.0, 3.0}));
    const Var<double> y = affine(x, 2.0, 1.0);
    tape.backward(y, Tensor<double>(1, 3, {1.0, 10.0, 100.0}));
    CHECK(x.grad().to_vector() == std::vector<double>{2.0, 20.0, 200.0});
}

TEST_CASE("tape: parameters outlive tapes; a cleared tape is reused for the next step") {
    Parameter<float> w("w", Tensor<float>(1, 1, {2.0f}));
    {
        Tape<float> scratch;
        const Var<float> loss =
            mul(scratch.param(w), scratch.constant(Tensor<float>(1, 1, {5.0f})));
        loss.backward();
    } // the tape is gone, the parameter and its gradient stay
    CHECK(w.grad.item() == 5.0f);
    CHECK(w.value.item() == 2.0f);

    Tape<float> tape;
    for (int step = 0; step < 3; ++step) {
        tape.clear();
        const Var<float> loss = mul(tape.param(w), tape.param(w)); // dL/dw = 2w = 4
        CHECK(loss.item() == 4.0f);
        loss.backward();
        CHECK(tape.size() == 3);
    }
    CHECK(w.grad.item() == 5.0f + 3 * 4.0f);
}

TEST_CASE("tape: after clear() the same step reuses the arena without growing it") {
    Parameter<float> w("w", Tensor<float>(64, 64, 0.01f));
    Parameter<float> b("b", Tensor<float>(1, 64, 0.1f), true);
    Tensor<float> input(32, 64, 0.5f);
    Tape<float> tape;
    // ~100 (32, 64) nodes plus gradients: well over one 65536-element block.
    auto step = [&]() {
        Var<float> h = tape.constant(input);
        for (int t = 0; t < 50; ++t) {
            h = tanh(linear(h, tape.param(w), tape.param(b)));
        }
        const Var<float> loss = mean(h);
        loss.backward();
        return loss.item();
    };
    const float first = step();
    const std::size_t grown = tape.arena_capacity(); // doubling blocks, their tails unused
    tape.clear();
    // The blocks are merged into one of the round's high-water mark: at least every value and
    // gradient, no more than the blocks it replaces.
    const std::size_t capacity = tape.arena_capacity();
    CHECK(capacity >= 2 * 50 * 32 * 64);
    CHECK(capacity < grown);
    const float second = step();
    CHECK(tape.arena_capacity() == capacity);
    CHECK(second == first);
    for (int i = 0; i < 3; ++i) {
        tape.clear();
        step();
    }
    CHECK(tape.arena_capacity() == capacity);
}

TEST_CASE("tape: NoGradGuard records nodes that need no gradient") {
    Parameter<double> w("w", Tensor<double>(1, 2, {1.0, 2.0}));
    Tape<double> tape;
    CHECK(grad_enabled());
    {
        NoGradGuard guard;
        CHECK_FALSE(grad_enabled());
        {
            NoGradGuard nested;
            CHECK_FALSE(grad_enabled());
        }
        CHECK_FALSE(grad_enabled());
        const Var<double> p = tape.param(w);
        const Var<double> loss = sum(tanh(p));
        CHECK_FALSE(p.requires_grad());
        CHECK_FALSE(loss.requires_grad());
        CHECK(loss.item() == doctest::Approx(std::tanh(1.0) + std::tanh(2.0)));
        CHECK_THROWS_WITH_AS(loss.backward(), doctest::Contains("does not require grad"), Error);
        CHECK_THROWS_WITH_AS(loss.grad(), doctest::Contains("does not require grad"), Error);
    }
    CHECK(grad_enabled());
    const Var<double> loss = sum(tape.param(w));
    CHECK(loss.requires_grad());
    loss.backward();
    CHECK(w.grad.to_vector() == std::vector<double>{1.0, 1.0});
}

TEST_CASE("tape: detach stops the gradient") {
    Parameter<double> w("w", Tensor<double>(1, 1, {3.0}));
    Tape<double> tape;
    const Var<double> p = tape.param(w);
    const Var<double> y = mul(p, p);           // 9
    const Var<double> frozen = tape.detach(y); // same value, no link back
    CHECK(frozen.item() == 9.0);
    CHECK_FALSE(frozen.requires_grad());
    const Var<double> loss = mul(frozen, p); // d/dw = frozen = 9, not 3 w^2 = 27
    loss.backward();
    CHECK(w.grad.item() == doctest::Approx(9.0));
}

TEST_CASE("tape: constants need no gradient; inputs keep theirs") {
    Tape<double> tape;
    const Var<double> c = tape.constant(Tensor<double>(1, 2, {1.0, 2.0}));
    const Var<double> x = tape.input(Tensor<double>(1, 2, {3.0, 4.0}));
    CHECK_FALSE(c.requires_grad());
    CHECK(x.requires_grad());
    const Var<double> loss = sum(mul(c, x));
    loss.backward();
    CHECK(x.grad().to_vector() == std::vector<double>{1.0, 2.0});
    CHECK_THROWS_WITH_AS(c.grad(), doctest::Contains("'constant'"), Error);
    // A node that requires grad but that backward never reached reads as zeros.
    const Var<double> unused = tanh(x);
    CHECK(unused.grad().to_vector() == std::vector<double>{0.0, 0.0});
}

TEST_CASE("tape: dump() and to_dot() name the ops and parameters") {
    Parameter<double> weight("encoder.weight", Tensor<double>(2, 3, 0.1));
    Tape<double> tape;
    const Var<double> x = tape.constant(Tensor<double>(4, 3, 1.0));
    const Var<double> loss = mean(sigmoid(linear(x, tape.param(weight))));
    CHECK(loss.item() == doctest::Approx(1.0 / (1.0 + std::exp(-0.3))));
    const std::string dump = tape.dump();
    CHECK(contains(dump, "%0 = 'constant' (node 0)() (4, 3)"));
    CHECK(contains(dump, "param 'encoder.weight'"));
    CHECK(contains(dump, "'linear' (node 2)(0, 1) (4, 2) grad"));
    CHECK(contains(dump, "'sigmoid'"));
    CHECK(contains(dump, "'mean'"));
    const std::string dot = tape.to_dot();
    CHECK(contains(dot, "digraph tape {"));
    CHECK(contains(dot, "encoder.weight"));
    CHECK(contains(dot, "shape=box"));
    CHECK(contains(dot, "n0 -> n2;"));
    CHECK(contains(dot, "n1 -> n2;"));
    CHECK(contains(dot, "n3 -> n4;"));
    CHECK(contains(dot, "linear"));
}

TEST_CASE("tape: labels from LabelScope nest and appear in describe() and dump()") {
    Tape<double> tape;
    const Var<double> x = tape.input(Tensor<double>(1, 2, {0.1, 0.2}));
    Var<double> h;
    Var<double> g;
    {
        LabelScope<double> layer(tape, "lstm.l1");
        {
            LabelScope<double> step(tape, "t=37");
            h = tanh(x);
        }
        g = sigmoid(h);
    }
    const Var<double> plain = exp(g);
    CHECK(tape.describe(h.id()) == "'tanh' [lstm.l1 t=37] (node 1)");
    CHECK(tape.describe(g.id()) == "'sigmoid' [lstm.l1] (node 2)");
    CHECK(tape.describe(plain.id()) == "'exp' (node 3)");
    CHECK(contains(tape.dump(), "'tanh' [lstm.l1 t=37]"));
    CHECK(contains(tape.to_dot(), "lstm.l1 t=37"));
    CHECK(tape.label_text(0).empty());
    tape.clear();
    const Var<double> y = tape.input(Tensor<double>(1, 1, 1.0));
    CHECK(tape.describe(y.id()) == "'input' (node 0)");
}

TEST_CASE("tape: anomaly mode is off by default; non-finite values pass silently then") {
    CHECK_FALSE(anomaly_detection());
    Tape<double> tape;
    const Var<double> x = tape.input(Tensor<double>(1, 2, {-1.0, 0.0}));
    Var<double> y;
    CHECK_NOTHROW(y = log(x));
    CHECK(std::isnan(y.value()(0, 0)));
    CHECK(std::isinf(y.value()(0, 1)));
}

TEST_CASE("tape: anomaly mode throws on the first NaN/Inf naming op, label and shapes") {
    AnomalyScope anomaly;
    Tape<double> tape;
    SUBCASE("log of a negative number gives NaN in forward") {
        const Var<double> x = tape.input(Tensor<double>(1, 2, {-1.0, 2.0}));
        LabelScope<double> label(tape, "decoder t=5");
        const std::string message = error_message([&] { log(x); });
        INFO(message);
        CHECK(contains(message, "anomaly: forward of 'log' [decoder t=5]"));
        CHECK(contains(message, "inputs (1, 2), output (1, 2)"));
    }
    SUBCASE("log of 0 gives -Inf in forward") {
        const Var<double> x = tape.input(Tensor<double>(3, 1, {1.0, 0.0, 2.0}));
        const std::string message = error_message([&] { log(x); });
        INFO(message);
        CHECK(contains(message, "forward of 'log'"));
        CHECK(contains(message, "(3, 1)"));
    }
    SUBCASE("a finite forward whose backward overflows throws in backward") {
        // log(1e-310) is about -713.8 but its derivative 1 / 1e-310 overflows to Inf.
        const Var<double> x = tape.input(Tensor<double>(1, 1, {1e-310}));
        Var<double> y;
        {
            LabelScope<double> label(tape, "tiny");
            y = log(x);
        }
        CHECK(std::isfinite(y.item()));
        const std::string message = error_message([&] { y.backward(); });
        INFO(message);
        CHECK(contains(message, "anomaly: backward of 'log' [tiny]"));
        CHECK(contains(message, "'input' (node 0)"));
        CHECK(contains(message, "(1, 1)"));
    }
    SUBCASE("finite values pass") {
        const Var<double> x = tape.input(Tensor<double>(1, 2, {1.0, 2.0}));
        CHECK_NOTHROW(sum(log(x)).backward());
    }
}

TEST_CASE("tape: misuse errors") {
    Tape<double> tape;
    SUBCASE("a Var from a cleared tape") {
        const Var<double> x = tape.input(Tensor<double>(1, 1, 2.0));
        const Var<double> y = tanh(x);
        tape.clear();
        CHECK_THROWS_WITH_AS(y.value(), doctest::Contains("cleared"), Error);
        CHECK_THROWS_WITH_AS(tanh(y), doctest::Contains("cleared"), Error);
        CHECK_THROWS_WITH_AS(tape.backward(y), doctest::Contains("cleared"), Error);
        CHECK(tape.size() == 0);
    }
    SUBCASE("an empty Var") {
        const Var<double> empty;
        CHECK_FALSE(empty.valid());
        CHECK_THROWS_WITH_AS(empty.shape(), doctest::Contains("empty"), Error);
    }
    SUBCASE("backward on a non-scalar without a seed") {
        const Var<double> y = tanh(tape.input(Tensor<double>(2, 3, 0.5)));
        CHECK_THROWS_WITH_AS(y.backward(),
                             doctest::Contains("backward: needs a (1, 1) loss or an explicit seed "
                                               "gradient; got shape (2, 3) from 'tanh'"),
                             Error);
        CHECK_THROWS_WITH_AS(y.item(), doctest::Contains("needs shape (1, 1), got (2, 3)"), Error);
    }
    SUBCASE("seed of the wrong shape") {
        const Var<double> y = tanh(tape.input(Tensor<double>(2, 3, 0.5)));
        CHECK_THROWS_WITH_AS(tape.backward(y, Tensor<double>(3, 2, 1.0)),
                             doctest::Contains("seed gradient has shape (3, 2) but 'tanh' (node 1) "
                                               "has shape (2, 3)"),
                             Error);
    }
    SUBCASE("a Var from another tape mixed into an op") {
        Tape<double> other;
        const Var<double> a = tape.input(Tensor<double>(1, 2, 1.0));
        const Var<double> b = other.input(Tensor<double>(1, 2, 1.0));
        CHECK_THROWS_WITH_AS(add(a, b),
                             doctest::Contains("add: the two operands belong to "
                                               "different tapes"),
                             Error);
        CHECK_THROWS_WITH_AS(matmul(a, b, false, true), doctest::Contains("matmul"), Error);
        const Var<double> parts[] = {a, b};
        CHECK_THROWS_WITH_AS(concat_cols<double>(parts),
                             doctest::Contains("concat_cols: an input belongs to another tape"),
                             Error);
        CHECK_THROWS_WITH_AS(tape.backward(sum(b)),
                             doctest::Contains("backward: the output belongs to another tape"),
                             Error);
        CHECK_THROWS_WITH_AS(tape.detach(b), doctest::Contains("detach"), Error);
    }
}

TEST_CASE("first-contribution gradients are written, later ones added, in either order") {
    // x feeds a full-gradient op (tanh, which overwrites a fresh gradient) and a partial one
    // (a column slice, which must add into zeros); both orders of creation, plus a broadcast row.
    Parameter<double> x(
        "x",
        Tensor<double>(3, 4, {0.1, -0.2, 0.3, 0.4, 0.5, -0.6, 0.7, 0.8, -0.9, 1.0, 1.1, -1.2}));
    Parameter<double> row("row", Tensor<double>(1, 4, {0.3, -0.1, 0.2, 0.5}));
    for (const bool slice_first : {true, false}) {
        CAPTURE(slice_first);
        const Tensor<double> weights(
            3, 4, {0.5, 1.5, -0.5, 2.0, 1.0, -1.0, 0.25, 0.75, -2.0, 0.5, 1.25, -0.75});
        auto loss = [&](Tape<double>& tape) {
            const Var<double> xv = tape.constant(weights);
            const Var<double> leaf = tape.param(x);
            Var<double> part;
            Var<double> full;
            if (slice_first) {
                part = sum(slice_cols(leaf, 1, 3));
                full = sum(mul(tanh(add(leaf, tape.param(row))), xv));
            } else {
                full = sum(mul(tanh(add(leaf, tape.param(row))), xv));
                part = sum(slice_cols(leaf, 1, 3));
            }
            return add(full, scale(part, 0.5));
        };
        GradCheckReport report = grad_check(loss, {&x, &row});
        INFO(report.summary());
        CHECK(report.passed);
        CHECK(report.max_rel_error < 1e-6);
        // An intermediate's gradient: d/d(x + row) of sum(tanh(.) * w) = (1 - tanh^2) * w.
        Tape<double> tape;
        const Var<double> pre = add(tape.param(x), tape.param(row));
        const Var<double> out = sum(mul(tanh(pre), tape.constant(weights)));
        tape.backward(out);
        const Tensor<double> dpre = pre.grad();
        for (std::size_t r = 0; r < 3; ++r) {
            for (std::size_t c = 0; c < 4; ++c) {
                const double t = std::tanh(x.value(r, c) + row.value(0, c));
                CHECK(dpre(r, c) == doctest::Approx((1 - t * t) * weights(r, c)).epsilon(1e-14));
            }
        }
    }
}
