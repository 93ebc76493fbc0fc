// Ops: for every op, known values computed in the test from the equations, a float64 gradient
// check, and errors for bad input that name the op and the shapes.
#include <doctest/doctest.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <initializer_list>
#include <memory>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "cellgrad/grad_check.hpp"
#include "cellgrad/ops.hpp"

using namespace cellgrad;

namespace {

using Matrix = Tensor<double>;

/// (rows, cols) tensor of U(lo, hi) values from a fixed seed.
Matrix random_matrix(std::size_t rows, std::size_t cols, std::uint64_t seed, double lo = -1.0,
                     double hi = 1.0) {
    std::mt19937_64 rng(seed);
    std::uniform_real_distribution<double> uniform(lo, hi);
    Matrix m(rows, cols);
    for (std::size_t i = 0; i < m.size(); ++i) {
        m.data()[i] = uniform(rng);
    }
    return m;
}

/// Like random_matrix but |value| in [0.2, 1.2] with a random sign (no kinks, no zero divisors).
Matrix away_from_zero(std::size_t rows, std::size_t cols, std::uint64_t seed) {
    Matrix m = random_matrix(rows, cols, seed, 0.2, 1.2);
    std::mt19937_64 rng(seed + 1000);
    for (std::size_t i = 0; i < m.size(); ++i) {
        if (rng() % 2 == 0) {
            m.data()[i] = -m.data()[i];
        }
    }
    return m;
}

/// sum(y * W) for a fixed random W: every output element gets its own upstream gradient.
template <class T>
Var<T> weighted_sum(const Var<T>& y, std::uint64_t seed = 99) {
    const Matrix w = random_matrix(y.rows(), y.cols(), seed);
    Tensor<T> weights(y.rows(), y.cols());
    for (std::size_t i = 0; i < weights.size(); ++i) {
        weights.data()[i] = static_cast<T>(w.data()[i]);
    }
    return sum(mul(y, y.tape().constant(weights)));
}

/// Runs grad_check and checks that it passed to 1e-6 relative error on every element.
void check_gradients(const LossFunction& loss, std::initializer_list<Parameter<double>*> targets) {
    const GradCheckReport report = grad_check(loss, targets);
    std::size_t elements = 0;
    for (const Parameter<double>* target : targets) {
        elements += target->value.size();
    }
    INFO(report.summary());
    CHECK(report.passed);
    CHECK(report.max_rel_error < 1e-6);
    CHECK(report.checked == elements);
}

/// Checks `actual` against `expected` element by element.
template <class T>
void check_values(View<const T> actual, const Tensor<double>& expected, double tolerance = 1e-12) {
    REQUIRE(actual.shape() == expected.shape());
    for (std::size_t r = 0; r < expected.rows(); ++r) {
        for (std::size_t c = 0; c < expected.cols(); ++c) {
            INFO("element (" << r << ", " << c << ")");
            CHECK(static_cast<double>(actual(r, c)) ==
                  doctest::Approx(expected(r, c)).epsilon(tolerance));
        }
    }
}

/// Checks that `f` throws an Error whose message contains every one of `parts`.
template <class F>
void check_error(const F& f, std::initializer_list<std::string> parts) {
    std::string message;
    try {
        f();
    } catch (const Error& error) {
        message = error.what();
    }
    INFO("message: " << message);
    REQUIRE_FALSE(message.empty());
    for (const std::string& part : parts) {
        INFO("expected to contain: " << part);
        CHECK(message.find(part) != std::string::npos);
    }
}

/// Element (r, c) of `m` broadcast to a larger shape (extent 1 repeats).
double broadcast_at(const Matrix& m, std::size_t r, std::size_t c) {
    return m(m.rows() == 1 ? 0 : r, m.cols() == 1 ? 0 : c);
}

using BinaryOp = Var<double> (*)(const Var<double>&, const Var<double>&);

struct BinaryCase {
    const char* name;
    BinaryOp op;
    double (*equation)(double, double);
};

const BinaryCase binary_cases[] = {
    {"add", &add<double>, [](double x, double y) { return x + y; }},
    {"sub", &sub<double>, [](double x, double y) { return x - y; }},
    {"mul", &mul<double>, [](double x, double y) { return x * y; }},
    {"div", &div<double>, [](double x, double y) { return x / y; }},
};

/// Operand shapes of every broadcast mode, on either side.
const std::pair<Shape, Shape> broadcast_modes[] = {
    {{3, 4}, {3, 4}}, // same shape
    {{3, 4}, {1, 4}}, // b is a row
    {{3, 4}, {3, 1}}, // b is a column
    {{3, 4}, {1, 1}}, // b is a scalar
    {{1, 4}, {3, 4}}, // a is a row
    {{3, 1}, {3, 4}}, // a is a column
    {{1, 1}, {3, 4}}, // a is a scalar
    {{1, 4}, {3, 1}}, // row against column: both broadcast
};

} // namespace

// ---- elementwise binary ----------------------------------------------------------------------

TEST_CASE("add/sub/mul/div: hand-computed broadcasts") {
    Tape<double> tape;
    const Var<double> m = tape.constant(Matrix(2, 2, {1, 2, 3, 4}));
    const Var<double> row = tape.constant(Matrix(1, 2, {10, 20}));
    const Var<double> column = tape.constant(Matrix(2, 1, {1, 10}));
    const Var<double> scalar = tape.constant(Matrix(1, 1, {2}));
    check_values(add(m, row).value(), Matrix(2, 2, {11, 22, 13, 24}));
    check_values(add(row, m).value(), Matrix(2, 2, {11, 22, 13, 24}));
    check_values(sub(m, column).value(), Matrix(2, 2, {0, 1, -7, -6}));
    check_values(sub(column, m).value(), Matrix(2, 2, {0, -1, 7, 6}));
    check_values(mul(m, scalar).value(), Matrix(2, 2, {2, 4, 6, 8}));
    check_values(div(scalar, m).value(), Matrix(2, 2, {2, 1, 2.0 / 3.0, 0.5}));
    check_values(div(m, row).value(), Matrix(2, 2, {0.1, 0.1, 0.3, 0.2}));
    check_values(mul(row, column).value(), Matrix(2, 2, {10, 20, 100, 200}));
}

TEST_CASE("add/sub/mul/div: every broadcast mode on either operand, values and gradients") {
    for (const BinaryCase& op : binary_cases) {
        for (const auto& mode : broadcast_modes) {
            // Named copies: clang 14 cannot capture structured bindings in INFO's lambda.
            const Shape shape_a = mode.first, shape_b = mode.second;
            INFO(op.name << " a" << to_string(shape_a) << " b" << to_string(shape_b));
            Parameter<double> a("a", random_matrix(shape_a.rows, shape_a.cols, 1));
            // Keep divisors away from zero.
            Parameter<double> b("b", std::string(op.name) == "div"
                                         ? random_matrix(shape_b.rows, shape_b.cols, 2, 0.5, 1.5)
                                         : random_matrix(shape_b.rows, shape_b.cols, 2));
            const Shape out{std::max(shape_a.rows, shape_b.rows),
                            std::max(shape_a.cols, shape_b.cols)};
            Matrix expected(out.rows, out.cols);
            for (std::size_t r = 0; r < out.rows; ++r) {
                for (std::size_t c = 0; c < out.cols; ++c) {
                    expected(r, c) =
                        op.equation(broadcast_at(a.value, r, c), broadcast_at(b.value, r, c));
                }
            }
            Tape<double> tape;
            const Var<double> y = op.op(tape.param(a), tape.param(b));
            check_values(y.value(), expected);

            // Backward with dy = 1 everywhere: the broadcast operand's gradient is the sum over
            // the dimensions it was repeated along.
            sum(y).backward();
            if (std::string(op.name) == "add" || std::string(op.name) == "sub") {
                const double sign = std::string(op.name) == "sub" ? -1.0 : 1.0;
                const double repeats = double(out.size()) / double(shape_b.size());
                for (std::size_t i = 0; i < b.grad.size(); ++i) {
                    CHECK(b.grad.data()[i] == doctest::Approx(sign * repeats));
                }
                const double repeats_a = double(out.size()) / double(shape_a.size());
                for (std::size_t i = 0; i < a.grad.size(); ++i) {
                    CHECK(a.grad.data()[i] == doctest::Approx(repeats_a));
                }
            }
            check_gradients(
                [&](Tape<double>& t) { return weighted_sum(op.op(t.param(a), t.param(b))); },
                {&a, &b});
        }
    }
}

TEST_CASE("mul/div: gradients of a broadcast operand are summed by hand") {
    Parameter<double> a("a", Matrix(2, 3, {1, 2, 3, 4, 5, 6}));
    Parameter<double> row("row", Matrix(1, 3, {2, 4, 8}));
    Tape<double> tape;
    // y = a / row; dy = 1: da = 1 / row, drow_c = -sum_r a_rc / row_c^2.
    sum(div(tape.param(a), tape.param(row))).backward();
    check_values<double>(a.grad.view(), Matrix(2, 3, {0.5, 0.25, 0.125, 0.5, 0.25, 0.125}));
    check_values<double>(row.grad.view(), Matrix(1, 3, {-5.0 / 4, -7.0 / 16, -9.0 / 64}));
    a.zero_grad();
    row.zero_grad();
    tape.clear();
    // y = a * row: drow_c = sum_r a_rc.
    sum(mul(tape.param(a), tape.param(row))).backward();
    check_values<double>(row.grad.view(), Matrix(1, 3, {5, 7, 9}));
    check_values<double>(a.grad.view(), Matrix(2, 3, {2, 4, 8, 2, 4, 8}));
}

TEST_CASE("mul: x * x (the same node twice) has gradient 2x") {
    Parameter<double> x("x", Matrix(1, 3, {1.5, -2, 0.5}));
    Tape<double> tape;
    const Var<double> p = tape.param(x);
    sum(mul(p, p)).backward();
    check_values<double>(x.grad.view(), Matrix(1, 3, {3, -4, 1}));
    check_gradients([&](Tape<double>& t) { return weighted_sum(square(t.param(x))); }, {&x});
}

// ---- elementwise unary -----------------------------------------------------------------------

TEST_CASE("unary ops: hand-computed values") {
    Tape<double> tape;
    const Var<double> x = tape.constant(Matrix(1, 4, {-1, 0, 0.5, 2}));
    check_values(affine(x, 2.0, -1.0).value(), Matrix(1, 4, {-3, -1, 0, 3}));
    check_values(relu(x).value(), Matrix(1, 4, {0, 0, 0.5, 2}));
    check_values(sigmoid(x).value(), Matrix(1, 4,
                                            {1 / (1 + std::exp(1.0)), 0.5, 1 / (1 + std::exp(-0.5)),
                                             1 / (1 + std::exp(-2.0))}));
    // tanh(x) = (e^2x - 1) / (e^2x + 1)
    auto tanh_eq = [](double v) { return (std::exp(2 * v) - 1) / (std::exp(2 * v) + 1); };
    check_values(tanh(x).value(), Matrix(1, 4, {tanh_eq(-1), 0, tanh_eq(0.5), tanh_eq(2)}));
    check_values(exp(x).value(), Matrix(1, 4,
                                        {1 / std::exp(1.0), 1, std::sqrt(std::exp(1.0)),
                                         std::exp(1.0) * std::exp(1.0)}));
    const Var<double> positive = tape.constant(Matrix(1, 3, {1, std::exp(1.0), 0.25}));
    check_values(log(positive).value(), Matrix(1, 3, {0, 1, -2 * std::log(2.0)}));
}

TEST_CASE("unary ops: hand-computed gradients") {
    Parameter<double> x("x", Matrix(1, 3, {-1, 0.5, 2}));
    Tape<double> tape;
    auto grad_of = [&](auto op) {
        x.zero_grad();
        tape.clear();
        sum(op(tape.param(x))).backward();
        return x.grad;
    };
    check_values<double>(grad_of([](const Var<double>& v) { return affine(v, -3.0, 7.0); }).view(),
                         Matrix(1, 3, {-3, -3, -3}));
    check_values<double>(grad_of([](const Var<double>& v) { return relu(v); }).view(),
                         Matrix(1, 3, {0, 1, 1}));
    check_values<double>(grad_of([](const Var<double>& v) { return exp(v); }).view(),
                         Matrix(1, 3, {std::exp(-1.0), std::exp(0.5), std::exp(2.0)}));
    check_values<double>(grad_of([](const Var<double>& v) { return log(v * v); }).view(),
                         Matrix(1, 3, {-2, 4, 1})); // d/dx log(x^2) = 2 / x
    const double s = 1 / (1 + std::exp(-0.5));
    CHECK(grad_of([](const Var<double>& v) { return sigmoid(v); })(0, 1) ==
          doctest::Approx(s * (1 - s)));
    const double cosh2 = std::cosh(2.0);
    CHECK(grad_of([](const Var<double>& v) { return tanh(v); })(0, 2) ==
          doctest::Approx(1 / (cosh2 * cosh2)));
}

TEST_CASE("unary ops: float64 gradient checks") {
    Parameter<double> x("x", away_from_zero(3, 5, 7));
    Parameter<double> positive("positive", random_matrix(3, 5, 8, 0.3, 2.0));
    check_gradients([&](Tape<double>& t) { return weighted_sum(affine(t.param(x), -1.7, 0.3)); },
                    {&x});
    check_gradients([&](Tape<double>& t) { return weighted_sum(sigmoid(t.param(x))); }, {&x});
    check_gradients([&](Tape<double>& t) { return weighted_sum(tanh(t.param(x))); }, {&x});
    check_gradients([&](Tape<double>& t) { return weighted_sum(relu(t.param(x))); }, {&x});
    check_gradients([&](Tape<double>& t) { return weighted_sum(exp(t.param(x))); }, {&x});
    check_gradients([&](Tape<double>& t) { return weighted_sum(log(t.param(positive))); },
                    {&positive});
}

// ---- reductions ------------------------------------------------------------------------------

TEST_CASE("sum/mean: all elements and per axis, values") {
    Tape<double> tape;
    const Var<double> x = tape.constant(Matrix(2, 3, {1, 2, 3, 4, 5, 6}));
    CHECK(sum(x).item() == 21.0);
    CHECK(mean(x).item() == doctest::Approx(3.5));
    check_values(sum(x, 0).value(), Matrix(1, 3, {5, 7, 9}));
    check_values(sum(x, 1).value(), Matrix(2, 1, {6, 15}));
    check_values(mean(x, 0).value(), Matrix(1, 3, {2.5, 3.5, 4.5}));
    check_values(mean(x, 1).value(), Matrix(2, 1, {2, 5}));
    // A row and a column reduced over everything.
    CHECK(sum(tape.constant(Matrix(1, 4, {1, 2, 3, 4}))).item() == 10.0);
    CHECK(mean(tape.constant(Matrix(4, 1, {1, 2, 3, 4}))).item() == doctest::Approx(2.5));
}

TEST_CASE("sum/mean: values on a large tensor against a serial loop") {
    const Matrix big = random_matrix(300, 257, 5);
    double total = 0;
    std::vector<double> column_sums(257, 0.0);
    std::vector<double> row_sums(300, 0.0);
    for (std::size_t r = 0; r < 300; ++r) {
        for (std::size_t c = 0; c < 257; ++c) {
            total += big(r, c);
            column_sums[c] += big(r, c);
            row_sums[r] += big(r, c);
        }
    }
    Tape<double> tape;
    const Var<double> x = tape.constant(big);
    CHECK(sum(x).item() == doctest::Approx(total).epsilon(1e-12));
    CHECK(mean(x).item() == doctest::Approx(total / (300 * 257)).epsilon(1e-12));
    check_values(sum(x, 0).value(), Matrix(1, 257, column_sums), 1e-12);
    check_values(sum(x, 1).value(), Matrix(300, 1, row_sums), 1e-12);
}

TEST_CASE("sum/mean: gradients by hand and float64 gradient checks") {
    Parameter<double> x("x", random_matrix(3, 4, 11));
    Tape<double> tape;
    // d mean(x, 0) / dx with seed s (1, 4): dx_rc = s_c / 3.
    tape.backward(mean(tape.param(x), 0), Matrix(1, 4, {3, 6, 9, 12}));
    check_values<double>(x.grad.view(), Matrix(3, 4, {1, 2, 3, 4, 1, 2, 3, 4, 1, 2, 3, 4}));
    x.zero_grad();
    tape.clear();
    tape.backward(sum(tape.param(x), 1), Matrix(3, 1, {1, -1, 2}));
    check_values<double>(x.grad.view(), Matrix(3, 4, {1, 1, 1, 1, -1, -1, -1, -1, 2, 2, 2, 2}));
    x.zero_grad();
    tape.clear();
    mean(tape.param(x)).backward();
    for (std::size_t i = 0; i < x.grad.size(); ++i) {
        CHECK(x.grad.data()[i] == doctest::Approx(1.0 / 12));
    }

    check_gradients([&](Tape<double>& t) { return weighted_sum(sum(t.param(x))); }, {&x});
    check_gradients([&](Tape<double>& t) { return weighted_sum(mean(t.param(x))); }, {&x});
    for (int axis : {0, 1}) {
        INFO("axis " << axis);
        check_gradients([&](Tape<double>& t) { return weighted_sum(sum(t.param(x), axis)); }, {&x});
        check_gradients([&](Tape<double>& t) { return weighted_sum(mean(t.param(x), axis)); },
                        {&x});
    }
}

// ---- matrix products -------------------------------------------------------------------------

namespace {

/// Transpose of m.
Matrix transposed(const Matrix& m) {
    Matrix t(m.cols(), m.rows());
    for (std::size_t r = 0; r < m.rows(); ++r) {
        for (std::size_t c = 0; c < m.cols(); ++c) {
            t(c, r) = m(r, c);
        }
    }
    return t;
}

/// a b by the triple loop.
Matrix product(const Matrix& a, const Matrix& b) {
    Matrix y(a.rows(), b.cols());
    for (std::size_t i = 0; i < a.rows(); ++i) {
        for (std::size_t j = 0; j < b.cols(); ++j) {
            double total = 0;
            for (std::size_t k = 0; k < a.cols(); ++k) {
                total += a(i, k) * b(k, j);
            }
            y(i, j) = total;
        }
    }
    return y;
}

} // namespace

TEST_CASE("matmul: hand-computed product") {
    Tape<double> tape;
    const Var<double> a = tape.constant(Matrix(2, 2, {1, 2, 3, 4}));
    const Var<double> b = tape.constant(Matrix(2, 2, {5, 6, 7, 8}));
    check_values(matmul(a, b).value(), Matrix(2, 2, {19, 22, 43, 50}));
    check_values(matmul(a, b, true, false).value(), Matrix(2, 2, {26, 30, 38, 44}));
    check_values(matmul(a, b, false, true).value(), Matrix(2, 2, {17, 23, 39, 53}));
    check_values(matmul(a, b, true, true).value(), Matrix(2, 2, {23, 31, 34, 46}));
}

TEST_CASE("matmul: all four transpose combinations, values and gradients") {
    // Logical products (2, 3) x (3, 4), and (40, 600) x (600, 520): a short wide output with a
    // long inner dimension, which the GEMM kernel computes transposed (so are dA's products).
    for (const auto& sizes :
         {std::array<std::size_t, 3>{2, 3, 4}, std::array<std::size_t, 3>{40, 600, 520}}) {
        const std::size_t m = sizes[0], k = sizes[1], n = sizes[2]; // named for INFO (clang 14)
        const Matrix a_logical = random_matrix(m, k, 21);
        const Matrix b_logical = random_matrix(k, n, 22);
        const Matrix expected = product(a_logical, b_logical);
        for (const bool ta : {false, true}) {
            for (const bool tb : {false, true}) {
                INFO("m " << m << " transpose_a " << ta << " transpose_b " << tb);
                Parameter<double> a("a", ta ? transposed(a_logical) : a_logical);
                Parameter<double> b("b", tb ? transposed(b_logical) : b_logical);
                Tape<double> tape;
                const Var<double> y = matmul(tape.param(a), tape.param(b), ta, tb);
                check_values(y.value(), expected);
                // dA(logical) = dY B^T, dB(logical) = A^T dY; a second backward adds the same.
                const Matrix seed = random_matrix(m, n, 23);
                Matrix da = product(seed, transposed(b_logical));
                Matrix db = product(transposed(a_logical), seed);
                for (const double times : {1.0, 2.0}) {
                    tape.backward(y, seed);
                    Matrix da_times = ta ? transposed(da) : da;
                    Matrix db_times = tb ? transposed(db) : db;
                    for (Matrix* g : {&da_times, &db_times}) {
                        for (std::size_t i = 0; i < g->size(); ++i) {
                            g->data()[i] *= times;
                        }
                    }
                    check_values<double>(a.grad.view(), da_times, 1e-11);
                    check_values<double>(b.grad.view(), db_times, 1e-11);
                }
                if (m == 2) {
                    check_gradients(
                        [&](Tape<double>& t) {
                            return weighted_sum(matmul(t.param(a), t.param(b), ta, tb));
                        },
                        {&a, &b});
                }
            }
        }
    }
}

TEST_CASE("linear: with and without bias, values and gradients") {
    Parameter<double> x("x", random_matrix(4, 3, 31));
    Parameter<double> w("w", random_matrix(5, 3, 32));
    Parameter<double> b("b", random_matrix(1, 5, 33), true);
    Matrix expected = product(x.value, transposed(w.value)); // (4, 5)
    Tape<double> tape;
    check_values(linear(tape.param(x), tape.param(w)).value(), expected);
    for (std::size_t r = 0; r < 4; ++r) {
        for (std::size_t c = 0; c < 5; ++c) {
            expected(r, c) += b.value(0, c);
        }
    }
    const Var<double> y = linear(tape.param(x), tape.param(w), tape.param(b));
    check_values(y.value(), expected);
    // Hand-computed: x (1, 2), W (2, 2), b (1, 2).
    const Var<double> small =
        linear(tape.constant(Matrix(1, 2, {1, 2})), tape.constant(Matrix(2, 2, {1, 0, -1, 3})),
               tape.constant(Matrix(1, 2, {0.5, -0.5})));
    check_values(small.value(), Matrix(1, 2, {1.5, 4.5}));
    // Bias gradient is the column sum of dY.
    tape.backward(y, Matrix(4, 5, 1.0));
    check_values<double>(b.grad.view(), Matrix(1, 5, 4.0));

    check_gradients(
        [&](Tape<double>& t) { return weighted_sum(linear(t.param(x), t.param(w), t.param(b))); },
        {&x, &w, &b});
    check_gradients([&](Tape<double>& t) { return weighted_sum(linear(t.param(x), t.param(w))); },
                    {&x, &w});
}

TEST_CASE("linear: a weight shared by many uses gets the sum of every use's dY^T X") {
    // W feeds four linears (summed in one stacked GEMM at W's leaf), a matmul (added directly)
    // and, through V = 2W, two more linears (summed at V's node before V's own backward).
    Parameter<double> w("w", random_matrix(5, 3, 41));
    std::vector<std::unique_ptr<Parameter<double>>> xs;
    for (const std::size_t rows : {2, 1, 3, 2, 4, 1, 2}) {
        xs.push_back(std::make_unique<Parameter<double>>(fmt::format("x{}", xs.size()),
                                                         random_matrix(rows, 3, 50 + xs.size())));
    }
    Matrix expected(5, 3);
    // d/dW of sum(R .* y) for y = x W^T is R^T x; for y = x (2W)^T it is 2 R^T x.
    const auto add_product = [&](std::size_t i, std::uint64_t seed, double factor) {
        const Matrix& x = xs[i]->value;
        const Matrix r = random_matrix(x.rows(), 5, seed);
        for (std::size_t o = 0; o < 5; ++o) {
            for (std::size_t c = 0; c < 3; ++c) {
                for (std::size_t k = 0; k < x.rows(); ++k) {
                    expected(o, c) += factor * r(k, o) * x(k, c);
                }
            }
        }
    };
    Tape<double> tape;
    const Var<double> weight = tape.param(w);
    const Var<double> doubled = scale(weight, 2.0);
    Var<double> loss = weighted_sum(matmul(tape.param(*xs[4]), weight, false, true), 104);
    add_product(4, 104, 1.0);
    for (const std::size_t i : {0, 1, 2, 3}) {
        loss = add(loss, weighted_sum(linear(tape.param(*xs[i]), weight), 100 + i));
        add_product(i, 100 + i, 1.0);
    }
    for (const std::size_t i : {5, 6}) {
        loss = add(loss, weighted_sum(linear(tape.param(*xs[i]), doubled), 100 + i));
        add_product(i, 100 + i, 2.0);
    }
    tape.backward(loss);
    check_values<double>(w.grad.view(), expected);
    // A second backward adds the same again into the parameter's gradient.
    tape.backward(loss);
    for (std::size_t i = 0; i < expected.size(); ++i) {
        expected.data()[i] *= 2.0;
    }
    check_values<double>(w.grad.view(), expected);

    std::vector<Parameter<double>*> targets{&w};
    for (const auto& x : xs) {
        targets.push_back(x.get());
    }
    const GradCheckReport report = grad_check(
        [&](Tape<double>& t) {
            const Var<double> shared = t.param(w);
            Var<double> total = sum(linear(t.param(*xs[0]), shared));
            for (std::size_t i = 1; i < xs.size(); ++i) {
                total = add(total, weighted_sum(linear(t.param(*xs[i]), shared), 200 + i));
            }
            return total;
        },
        targets);
    INFO(report.summary());
    CHECK(report.passed);
    CHECK(report.max_rel_error < 1e-6);
}

TEST_CASE("linear_add_rows: x W^T + b + picked addend rows, values, gradients, errors") {
    Parameter<double> x("x", random_matrix(4, 3, 61));
    Parameter<double> w("w", random_matrix(5, 3, 62));
    Parameter<double> b("b", random_matrix(1, 5, 63), true);
    Parameter<double> a("a", random_matrix(6, 5, 64));
    const std::vector<std::int32_t> rows{2, 5, 2, 0}; // row 2 twice: its gradient sums both
    const Matrix xw = product(x.value, transposed(w.value));
    for (const bool indexed : {true, false}) {
        for (const bool with_bias : {true, false}) {
            INFO("indexed " << indexed << " bias " << with_bias);
            const auto run = [&](Tape<double>& t) {
                const Var<double> bias = with_bias ? t.param(b) : Var<double>{};
                return indexed ? linear_add_rows(t.param(x), t.param(w), bias, t.param(a), rows)
                               : linear_add_rows(t.param(x), t.param(w), bias, t.param(a),
                                                 std::size_t(1));
            };
            Matrix expected = xw;
            for (std::size_t r = 0; r < 4; ++r) {
                const std::size_t source = indexed ? std::size_t(rows[r]) : 1 + r;
                for (std::size_t c = 0; c < 5; ++c) {
                    expected(r, c) += a.value(source, c) + (with_bias ? b.value(0, c) : 0.0);
                }
            }
            a.zero_grad();
            Tape<double> tape;
            const Var<double> y = run(tape);
            check_values(y.value(), expected);
            // da[source(r)] += dY[r]: with dY = all ones, row 2 gets 2 (indexed) and row 0 of the
            // contiguous window [1, 5) gets nothing.
            tape.backward(y, Matrix(4, 5, 1.0));
            for (std::size_t r = 0; r < 6; ++r) {
                const double uses =
                    indexed ? double(std::count(rows.begin(), rows.end(), std::int32_t(r)))
                            : (r >= 1 && r < 5 ? 1.0 : 0.0);
                CHECK(a.grad(r, 0) == uses);
            }
            if (with_bias) {
                check_gradients([&](Tape<double>& t) { return weighted_sum(run(t)); },
                                {&x, &w, &b, &a});
            } else {
                check_gradients([&](Tape<double>& t) { return weighted_sum(run(t)); },
                                {&x, &w, &a});
            }
        }
    }
    Tape<double> tape;
    const Var<double> vx = tape.param(x), vw = tape.param(w), va = tape.param(a);
    check_error([&] { linear_add_rows(vx, vw, Var<double>{}, va, std::size_t(3)); },
                {"linear_add_rows", "[3, 7)", "(6, 5)"});
    const std::vector<std::int32_t> outside{0, 1, 6, 2}, three{0, 1, 2};
    check_error([&] { linear_add_rows(vx, vw, Var<double>{}, va, outside); },
                {"linear_add_rows", "row 6 at position 2", "(6, 5)"});
    check_error([&] { linear_add_rows(vx, vw, Var<double>{}, va, three); },
                {"linear_add_rows", "3 rows", "(4, 3)"});
    check_error([&] { linear_add_rows(vx, vw, Var<double>{}, tape.param(x), std::size_t(0)); },
                {"linear_add_rows", "(4, 3)", "(5, 3)", "a (m, out)"});
}

// ---- slicing, concatenation, gathering -------------------------------------------------------

TEST_CASE("slice_cols/slice_rows: values, zero-copy views and gradients") {
    Parameter<double> x("x", Matrix(3, 4, {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11}));
    Tape<double> tape;
    const Var<double> p = tape.param(x);
    const Var<double> cols = slice_cols(p, 1, 3);
    check_values(cols.value(), Matrix(3, 2, {1, 2, 5, 6, 9, 10}));
    CHECK(cols.value().stride == 4);
    CHECK(cols.value().data == x.value.data() + 1); // a view, not a copy
    const Var<double> rows = slice_rows(p, 1, 3);
    check_values(rows.value(), Matrix(2, 4, {4, 5, 6, 7, 8, 9, 10, 11}));
    CHECK(slice_cols(p, 2, 2).value().shape() == Shape{3, 0});

    // Gradient lands in the sliced window only.
    tape.backward(cols, Matrix(3, 2, {1, 2, 3, 4, 5, 6}));
    check_values<double>(x.grad.view(), Matrix(3, 4, {0, 1, 2, 0, 0, 3, 4, 0, 0, 5, 6, 0}));
    x.zero_grad();
    tape.backward(rows, Matrix(2, 4, 1.0));
    check_values<double>(x.grad.view(), Matrix(3, 4, {0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1}));

    Parameter<double> y("y", random_matrix(5, 6, 41));
    check_gradients([&](Tape<double>& t) { return weighted_sum(slice_cols(t.param(y), 2, 5)); },
                    {&y});
    check_gradients([&](Tape<double>& t) { return weighted_sum(slice_rows(t.param(y), 1, 4)); },
                    {&y});
}

TEST_CASE("slices of slices: values and gradients") {
    Parameter<double> x(
        "x", Matrix(4, 5, {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19}));
    Tape<double> tape;
    const Var<double> p = tape.param(x);
    // Columns 1..4, then rows 1..3 of that, then columns 1..3 of that: x[1:3, 2:4].
    const Var<double> inner = slice_cols(slice_rows(slice_cols(p, 1, 5), 1, 3), 1, 3);
    check_values(inner.value(), Matrix(2, 2, {7, 8, 12, 13}));
    CHECK(inner.value().stride == 5);
    // Both orders of row and column slicing agree.
    const Var<double> other = slice_rows(slice_cols(slice_rows(p, 1, 4), 2, 4), 0, 2);
    check_values(other.value(), Matrix(2, 2, {7, 8, 12, 13}));
    tape.backward(inner, Matrix(2, 2, {1, 2, 3, 4}));
    Matrix expected(4, 5);
    expected(1, 2) = 1;
    expected(1, 3) = 2;
    expected(2, 2) = 3;
    expected(2, 3) = 4;
    check_values<double>(x.grad.view(), expected);
    // An op on a strided slice reads the right elements.
    check_values(tanh(inner).value(),
                 Matrix(2, 2, {std::tanh(7.0), std::tanh(8.0), std::tanh(12.0), std::tanh(13.0)}));
    check_values(add(inner, slice_rows(slice_cols(p, 0, 2), 0, 2)).value(),
                 Matrix(2, 2, {7, 9, 17, 19}));

    Parameter<double> y("y", random_matrix(6, 7, 42));
    check_gradients(
        [&](Tape<double>& t) {
            const Var<double> v = t.param(y);
            return weighted_sum(
                mul(slice_rows(slice_cols(v, 1, 6), 2, 5), slice_cols(slice_rows(v, 0, 3), 0, 5)));
        },
        {&y});
}

TEST_CASE("matmul and linear on a strided column slice") {
    Parameter<double> x("x", random_matrix(4, 7, 51));
    Parameter<double> b("b", random_matrix(3, 2, 52));
    Parameter<double> c("c", random_matrix(4, 2, 53));
    Parameter<double> e("e", random_matrix(2, 3, 54));
    // x[:, 2:5] is (4, 3) with stride 7.
    Matrix window(4, 3);
    for (std::size_t r = 0; r < 4; ++r) {
        for (std::size_t k = 0; k < 3; ++k) {
            window(r, k) = x.value(r, k + 2);
        }
    }
    Tape<double> tape;
    const Var<double> slice = slice_cols(tape.param(x), 2, 5);
    CHECK(slice.value().stride == 7);
    check_values(matmul(slice, tape.param(b)).value(), product(window, b.value)); // (4, 2)
    check_values(matmul(slice, tape.param(c), true, false).value(),
                 product(transposed(window), c.value)); // (3, 2)
    check_values(matmul(tape.param(e), slice, false, true).value(),
                 product(e.value, transposed(window))); // (2, 4)
    check_values(linear(slice, tape.param(e)).value(), product(window, transposed(e.value)));

    auto window_of = [](Tape<double>& t, Parameter<double>& p) {
        return slice_cols(t.param(p), 2, 5);
    };
    check_gradients(
        [&](Tape<double>& t) { return weighted_sum(matmul(window_of(t, x), t.param(b))); },
        {&x, &b});
    check_gradients(
        [&](Tape<double>& t) {
            return weighted_sum(matmul(window_of(t, x), t.param(c), true, false));
        },
        {&x, &c});
    check_gradients(
        [&](Tape<double>& t) {
            return weighted_sum(matmul(t.param(e), window_of(t, x), false, true));
        },
        {&x, &e});
    check_gradients(
        [&](Tape<double>& t) { return weighted_sum(linear(window_of(t, x), t.param(e))); },
        {&x, &e});
}

TEST_CASE("concat_cols/concat_rows: values and gradients") {
    Tape<double> tape;
    const Var<double> a = tape.constant(Matrix(2, 1, {1, 2}));
    const Var<double> b = tape.constant(Matrix(2, 2, {3, 4, 5, 6}));
    const Var<double> side[] = {a, b, a};
    check_values(concat_cols<double>(side).value(), Matrix(2, 4, {1, 3, 4, 1, 2, 5, 6, 2}));
    const Var<double> r0 = tape.constant(Matrix(1, 2, {1, 2}));
    const Var<double> stacked[] = {r0, b};
    check_values(concat_rows<double>(stacked).value(), Matrix(3, 2, {1, 2, 3, 4, 5, 6}));

    Parameter<double> p("p", random_matrix(3, 2, 61));
    Parameter<double> q("q", random_matrix(3, 3, 62));
    Parameter<double> s("s", random_matrix(2, 3, 63));
    // Hand-computed backward: each part receives its window of dY.
    const Var<double> parts[] = {tape.param(p), tape.param(q)};
    Matrix seed(3, 5);
    for (std::size_t i = 0; i < seed.size(); ++i) {
        seed.data()[i] = double(i);
    }
    tape.backward(concat_cols<double>(parts), seed);
    check_values<double>(p.grad.view(), Matrix(3, 2, {0, 1, 5, 6, 10, 11}));
    check_values<double>(q.grad.view(), Matrix(3, 3, {2, 3, 4, 7, 8, 9, 12, 13, 14}));

    check_gradients(
        [&](Tape<double>& t) {
            const Var<double> pieces[] = {t.param(p), t.constant(Matrix(3, 1, 0.5)), t.param(q),
                                          t.param(p)};
            return weighted_sum(concat_cols<double>(pieces));
        },
        {&p, &q});
    check_gradients(
        [&](Tape<double>& t) {
            const Var<double> pieces[] = {t.param(q), t.param(s), t.param(q)};
            return weighted_sum(concat_rows<double>(pieces));
        },
        {&q, &s});
}

TEST_CASE("gather_rows: repeated indices gather and scatter-add") {
    Parameter<double> table("table", Matrix(4, 2, {0, 1, 10, 11, 20, 21, 30, 31}));
    const std::vector<std::int32_t> indices = {3, 0, 3, 1, 3};
    Tape<double> tape;
    const Var<double> y = gather_rows(tape.param(table), indices);
    check_values(y.value(), Matrix(5, 2, {30, 31, 0, 1, 30, 31, 10, 11, 30, 31}));
    tape.backward(y, Matrix(5, 2, {1, 2, 3, 4, 5, 6, 7, 8, 9, 10}));
    // Row 3 collects rows 0, 2 and 4 of dY; row 2 is never gathered.
    check_values<double>(table.grad.view(), Matrix(4, 2, {3, 4, 7, 8, 0, 0, 15, 18}));
    CHECK(gather_rows(tape.param(table), std::vector<std::int32_t>{}).value().shape() ==
          Shape{0, 2});

    Parameter<double> embedding("embedding", random_matrix(6, 3, 71));
    check_gradients(
        [&](Tape<double>& t) {
            const std::vector<std::int32_t> ids = {5, 2, 2, 0, 5, 5, 1};
            return weighted_sum(tanh(gather_rows(t.param(embedding), ids)));
        },
        {&embedding});
}

// ---- loss ------------------------------------------------------------------------------------

namespace {

/// Per-row log-softmax NLL, log(sum exp z) - z[t], straight from the equation.
std::vector<double> row_losses(const Matrix& z, const std::vector<std::int32_t>& targets) {
    std::vector<double> losses;
    for (std::size_t r = 0; r < z.rows(); ++r) {
        double total = 0;
        for (std::size_t c = 0; c < z.cols(); ++c) {
            total += std::exp(z(r, c));
        }
        losses.push_back(std::log(total) - z(r, static_cast<std::size_t>(targets[r])));
    }
    return losses;
}

} // namespace

TEST_CASE("cross_entropy: hand-computed value for uniform logits") {
    Tape<double> tape;
    // Equal logits: every row loses log(V).
    const Var<double> z = tape.constant(Matrix(2, 4, 0.7));
    const std::vector<std::int32_t> targets = {1, 3};
    CHECK(cross_entropy(z, targets).item() == doctest::Approx(std::log(4.0)));
    CHECK(cross_entropy<double>(z, targets, {}, Reduction::sum).item() ==
          doctest::Approx(2 * std::log(4.0)));
    // Logits [0, ln 3]: softmax [1/4, 3/4].
    const Var<double> z2 = tape.constant(Matrix(1, 2, {0.0, std::log(3.0)}));
    CHECK(cross_entropy(z2, std::vector<std::int32_t>{1}).item() ==
          doctest::Approx(std::log(4.0 / 3.0)));
}

TEST_CASE("cross_entropy: with and without mask, both reductions, values and gradients") {
    Parameter<double> logits("logits", random_matrix(4, 5, 81, -2.0, 2.0));
    const std::vector<std::int32_t> targets = {0, 3, 3, 4};
    const std::vector<double> no_mask;
    const std::vector<double> mask = {1, 0, 1, 1};
    const std::vector<double> losses = row_losses(logits.value, targets);
    for (const bool masked : {false, true}) {
        for (const Reduction reduction : {Reduction::mean, Reduction::sum}) {
            INFO("masked " << masked << " reduction "
                           << (reduction == Reduction::mean ? "mean" : "sum"));
            const std::vector<double>& m = masked ? mask : no_mask;
            double weighted = 0;
            double total_weight = 0;
            for (std::size_t r = 0; r < 4; ++r) {
                const double w = masked ? mask[r] : 1.0;
                weighted += w * losses[r];
                total_weight += w;
            }
            const double expected =
                reduction == Reduction::mean ? weighted / total_weight : weighted;
            Tape<double> tape;
            logits.zero_grad();
            const Var<double> loss =
                cross_entropy<double>(tape.param(logits), targets, m, reduction);
            CHECK(loss.item() == doctest::Approx(expected).epsilon(1e-12));
            loss.backward();
            // dz = w / W (softmax(z) - onehot(t)).
            for (std::size_t r = 0; r < 4; ++r) {
                double total = 0;
                for (std::size_t c = 0; c < 5; ++c) {
                    total += std::exp(logits.value(r, c));
                }
                const double w =
                    (masked ? mask[r] : 1.0) / (reduction == Reduction::mean ? total_weight : 1.0);
                for (std::size_t c = 0; c < 5; ++c) {
                    const double p = std::exp(logits.value(r, c)) / total;
                    const double onehot = c == static_cast<std::size_t>(targets[r]) ? 1.0 : 0.0;
                    CHECK(logits.grad(r, c) == doctest::Approx(w * (p - onehot)).epsilon(1e-12));
                }
            }
            check_gradients(
                [&](Tape<double>& t) {
                    return cross_entropy<double>(t.param(logits), targets, m, reduction);
                },
                {&logits});
        }
    }
}

TEST_CASE("cross_entropy: stable for huge logits; an all-zero mask gives zero loss") {
    Tape<double> tape;
    const Var<double> z = tape.constant(Matrix(1, 3, {1000.0, 0.0, -1000.0}));
    CHECK(cross_entropy(z, std::vector<std::int32_t>{0}).item() == doctest::Approx(0.0));
    CHECK(cross_entropy(z, std::vector<std::int32_t>{1}).item() == doctest::Approx(1000.0));
    const Var<double> z2 = tape.input(Matrix(2, 3, 0.5));
    const std::vector<double> zeros = {0.0, 0.0};
    const Var<double> loss =
        cross_entropy<double>(z2, std::vector<std::int32_t>{0, 1}, zeros, Reduction::mean);
    CHECK(loss.item() == 0.0);
    loss.backward();
    CHECK(z2.grad().to_vector() == std::vector<double>(6, 0.0));
}

// ---- dropout ---------------------------------------------------------------------------------

TEST_CASE("dropout: statistics, scaling, identity at p = 0, bad p") {
    const double p = 0.3;
    std::mt19937_64 rng(123);
    Tape<double> tape;
    const Var<double> x = tape.input(Matrix(200, 500, 2.0));
    const Var<double> y = dropout(x, p, rng);
    const View<const double> v = y.value();
    std::size_t dropped = 0;
    double total = 0;
    for (std::size_t r = 0; r < v.rows; ++r) {
        for (std::size_t c = 0; c < v.cols; ++c) {
            const double value = v(r, c);
            // Every element is either dropped or scaled by 1 / (1 - p).
            const bool ok = value == 0.0 || value == doctest::Approx(2.0 / (1.0 - p));
            if (!ok) {
                FAIL_CHECK("element (" << r << ", " << c << ") = " << value);
            }
            dropped += value == 0.0 ? 1 : 0;
            total += value;
        }
    }
    const double n = 200.0 * 500.0;
    // Binomial(1e5, 0.3): standard deviation of the fraction is about 0.00145.
    CHECK(double(dropped) / n == doctest::Approx(p).epsilon(0.02));
    // Inverted dropout keeps the mean: E[y] = x.
    CHECK(total / n == doctest::Approx(2.0).epsilon(0.01));
    // Backward: dx = mask / (1 - p) = y / x.
    tape.backward(y, Matrix(200, 500, 1.0));
    const Tensor<double> dx = x.grad();
    for (std::size_t i = 0; i < dx.size(); i += 997) {
        CHECK(dx.data()[i] == doctest::Approx(v.data[i] / 2.0));
    }

    // Same seed, same mask.
    std::mt19937_64 again(123);
    check_values(dropout(x, p, again).value(), Matrix(y.value()));

    // p = 0 is the identity and draws nothing.
    std::mt19937_64 untouched(5);
    const Var<double> same = dropout(x, 0.0, untouched);
    CHECK(same.id() == x.id());
    CHECK(untouched() == std::mt19937_64(5)());

    check_error([&] { dropout(x, 1.0, rng); }, {"dropout", "[0, 1)", "got 1"});
    check_error([&] { dropout(x, -0.1, rng); }, {"dropout", "got -0.1"});

    Parameter<double> w("w", random_matrix(6, 7, 91));
    check_gradients(
        [&](Tape<double>& t) {
            std::mt19937_64 fixed(7); // the same mask in every evaluation
            return weighted_sum(dropout(tanh(t.param(w)), 0.4, fixed));
        },
        {&w});
}

// ---- composed ops ----------------------------------------------------------------------------

TEST_CASE("composed: mse_loss, blend, one_minus, neg, scale, square and operators") {
    Tape<double> tape;
    const Var<double> a = tape.constant(Matrix(2, 2, {1, 2, 3, 4}));
    const Var<double> b = tape.constant(Matrix(2, 2, {0.5, -1, 2, 8}));
    // ((0.5)^2 + 3^2 + 1^2 + (-4)^2) / 4
    CHECK(mse_loss(a, b).item() == doctest::Approx((0.25 + 9 + 1 + 16) / 4));
    const Var<double> mask = tape.constant(Matrix(2, 1, {1, 0}));
    check_values(blend(mask, a, b).value(), Matrix(2, 2, {1, 2, 2, 8}));
    const Var<double> full_mask = tape.constant(Matrix(2, 2, {0, 1, 1, 0}));
    check_values(blend(full_mask, a, b).value(), Matrix(2, 2, {0.5, 2, 3, 8}));
    check_values(one_minus(b).value(), Matrix(2, 2, {0.5, 2, -1, -7}));
    check_values(neg(a).value(), Matrix(2, 2, {-1, -2, -3, -4}));
    check_values(scale(a, 0.5).value(), Matrix(2, 2, {0.5, 1, 1.5, 2}));
    check_values(square(b).value(), Matrix(2, 2, {0.25, 1, 4, 64}));
    check_values((a + b).value(), Matrix(2, 2, {1.5, 1, 5, 12}));
    check_values((a - b).value(), Matrix(2, 2, {0.5, 3, 1, -4}));
    check_values((a * b).value(), Matrix(2, 2, {0.5, -2, 6, 32}));
    check_values((a / b).value(), Matrix(2, 2, {2, -2, 1.5, 0.5}));
    check_values((-a).value(), Matrix(2, 2, {-1, -2, -3, -4}));
    check_values((2.0 * a).value(), Matrix(2, 2, {2, 4, 6, 8}));
    check_values((a * 3.0).value(), Matrix(2, 2, {3, 6, 9, 12}));
    check_values((a + 0.5).value(), Matrix(2, 2, {1.5, 2.5, 3.5, 4.5}));
}

TEST_CASE("composed: float64 gradient checks") {
    Parameter<double> p("p", random_matrix(3, 4, 101));
    Parameter<double> q("q", random_matrix(3, 4, 102));
    Parameter<double> gate("gate", random_matrix(3, 1, 103, 0.1, 0.9));
    Parameter<double> d("d", random_matrix(3, 4, 104, 0.5, 1.5));
    check_gradients([&](Tape<double>& t) { return mse_loss(t.param(p), t.param(q)); }, {&p, &q});
    check_gradients(
        [&](Tape<double>& t) { return weighted_sum(blend(t.param(gate), t.param(p), t.param(q))); },
        {&gate, &p, &q});
    check_gradients([&](Tape<double>& t) { return weighted_sum(one_minus(sigmoid(t.param(p)))); },
                    {&p});
    check_gradients(
        [&](Tape<double>& t) {
            const Var<double> x = t.param(p);
            const Var<double> y = t.param(q);
            const Var<double> z = t.param(d);
            return weighted_sum((x + y) * (x - y) / z + (-x) * 0.5 + 2.0 * y + (z + 1.0));
        },
        {&p, &q, &d});
}

// ---- float32 against float64 -----------------------------------------------------------------

TEST_CASE("float32 and float64 agree on values and gradients") {
    const Matrix x64 = random_matrix(5, 6, 111);
    const Matrix w64 = random_matrix(4, 6, 112);
    Tensor<float> x32(5, 6);
    Tensor<float> w32(4, 6);
    for (std::size_t i = 0; i < x32.size(); ++i) {
        x32.data()[i] = static_cast<float>(x64.data()[i]);
    }
    for (std::size_t i = 0; i < w32.size(); ++i) {
        w32.data()[i] = static_cast<float>(w64.data()[i]);
    }
    Parameter<double> pw64("w", w64);
    Parameter<float> pw32("w", w32);
    const std::vector<std::int32_t> targets = {0, 3, 2, 1, 3};
    // A small network through linear, tanh, sigmoid, sum and cross_entropy.
    auto run = [&](auto& tape, auto& x, auto& w) {
        const auto h = tanh(linear(tape.constant(x), tape.param(w)));
        const auto loss = cross_entropy(mul(h, sigmoid(h)), targets) + sum(exp(h)) * 0.01;
        loss.backward();
        return loss.item();
    };
    Tape<double> tape64;
    Tape<float> tape32;
    const double loss64 = run(tape64, x64, pw64);
    const float loss32 = run(tape32, x32, pw32);
    CHECK(double(loss32) == doctest::Approx(loss64).epsilon(1e-5));
    for (std::size_t i = 0; i < pw64.grad.size(); ++i) {
        INFO("gradient element " << i);
        CHECK(double(pw32.grad.data()[i]) ==
              doctest::Approx(pw64.grad.data()[i]).epsilon(1e-4).scale(1.0));
    }
    // Elementwise ops and reductions too.
    const Var<float> a32 = tape32.constant(x32);
    const Var<double> a64 = tape64.constant(x64);
    check_values(mean(exp(a32), 0).value(), Matrix(mean(exp(a64), 0).value()), 1e-6);
    check_values(div(sigmoid(a32), relu(a32) + 1.0).value(),
                 Matrix(div(sigmoid(a64), relu(a64) + 1.0).value()), 1e-6);
}

// ---- bad input -------------------------------------------------------------------------------

TEST_CASE("bad input: every shape mismatch and out-of-range argument names the op and shapes") {
    Tape<double> tape;
    const Var<double> a = tape.input(Matrix(2, 3, 1.0));
    const Var<double> b = tape.input(Matrix(3, 2, 1.0));
    const Var<double> c = tape.input(Matrix(2, 4, 1.0));
    const Var<double> row = tape.input(Matrix(1, 2, 1.0));
    SUBCASE("elementwise broadcasts") {
        check_error([&] { add(a, b); }, {"add:", "(2, 3)", "(3, 2)", "do not broadcast"});
        check_error([&] { sub(a, c); }, {"sub:", "(2, 3)", "(2, 4)"});
        check_error([&] { mul(row, a); }, {"mul:", "(1, 2)", "(2, 3)"});
        check_error([&] { div(a, tape.input(Matrix(3, 1, 1.0))); }, {"div:", "(2, 3)", "(3, 1)"});
        check_error([&] { a + c; }, {"add:", "(2, 3)", "(2, 4)"});
    }
    SUBCASE("matmul inner dimensions, every transpose combination") {
        check_error([&] { matmul(a, c); }, {"matmul:", "a (2, 3)", "b (2, 4)", "inner"});
        check_error([&] { matmul(a, b, true, false); }, {"matmul:", "a^T (2, 3)", "b (3, 2)"});
        check_error([&] { matmul(a, c, false, true); }, {"matmul:", "a (2, 3)", "b^T (2, 4)"});
        check_error([&] { matmul(a, c, true, true); }, {"matmul:", "a^T (2, 3)", "b^T (2, 4)"});
        CHECK_NOTHROW(matmul(a, b, true, true)); // (2, 3)^T (3, 2)^T: inner 2 == 2
    }
    SUBCASE("linear") {
        const Var<double> w = tape.input(Matrix(4, 5, 1.0));
        check_error([&] { linear(a, w); }, {"linear:", "(2, 3)", "(4, 5)"});
        const Var<double> w_ok = tape.input(Matrix(4, 3, 1.0));
        check_error([&] { linear(a, w_ok, tape.input(Matrix(1, 3, 1.0))); },
                    {"linear:", "bias", "(1, 3)", "(1, 4)", "(4, 3)"});
        check_error([&] { linear(a, w_ok, tape.input(Matrix(4, 1, 1.0))); },
                    {"linear:", "(4, 1)", "(1, 4)"});
    }
    SUBCASE("slices") {
        check_error([&] { slice_cols(a, 1, 4); }, {"slice_cols:", "[1, 4)", "(2, 3)"});
        check_error([&] { slice_cols(a, 2, 1); }, {"slice_cols:", "[2, 1)", "(2, 3)"});
        check_error([&] { slice_rows(a, 0, 3); }, {"slice_rows:", "[0, 3)", "(2, 3)"});
        check_error([&] { slice_rows(a, 2, 1); }, {"slice_rows:", "[2, 1)", "(2, 3)"});
    }
    SUBCASE("concatenation") {
        const Var<double> side[] = {a, b};
        check_error([&] { concat_cols<double>(side); },
                    {"concat_cols:", "(3, 2)", "(2, 3)", "rows"});
        const Var<double> stacked[] = {a, c};
        check_error([&] { concat_rows<double>(stacked); },
                    {"concat_rows:", "(2, 4)", "(2, 3)", "columns"});
        check_error([&] { concat_cols<double>(std::span<const Var<double>>{}); },
                    {"concat_cols:", "at least one"});
    }
    SUBCASE("gather_rows index out of range") {
        check_error(
            [&] {
                gather_rows(a, std::vector<std::int32_t>{0, 2});
            },
            {"gather_rows:", "index 2", "position 1", "(2, 3)"});
        check_error([&] { gather_rows(a, std::vector<std::int32_t>{-1}); },
                    {"gather_rows:", "index -1", "(2, 3)"});
    }
    SUBCASE("cross_entropy") {
        check_error([&] { cross_entropy(a, std::vector<std::int32_t>{0}); },
                    {"cross_entropy:", "1 targets", "(2, 3)"});
        check_error(
            [&] {
                cross_entropy(a, std::vector<std::int32_t>{0, 3});
            },
            {"cross_entropy:", "target 3", "row 1", "(2, 3)"});
        check_error(
            [&] {
                cross_entropy(a, std::vector<std::int32_t>{-1, 0});
            },
            {"cross_entropy:", "target -1", "(2, 3)"});
        const std::vector<double> mask = {1, 1, 1};
        check_error(
            [&] {
                cross_entropy<double>(a, std::vector<std::int32_t>{0, 1}, mask, Reduction::mean);
            },
            {"cross_entropy:", "mask has 3 entries", "(2, 3)"});
    }
    SUBCASE("bad axis") {
        check_error([&] { sum(a, 2); }, {"sum:", "axis", "got 2", "(2, 3)"});
        check_error([&] { mean(a, -1); }, {"mean:", "axis", "got -1", "(2, 3)"});
    }
}
