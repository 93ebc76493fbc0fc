// The packed-weight GEMM (src/packed_gemm.hpp): float linear and linear_add_rows of 4 to 128 rows
// multiply by a weight the tape packed once. Its results are checked against float64 products of
// the same float inputs with the rounding bound of a k-term sum, against the OpenBLAS path, at 1
// and 2 threads, and through a whole LSTM/GRU/RNN layer. On a CPU without AVX-512F the kernel
// cannot run; the cases then check that the BLAS path is taken and say so.
#include <doctest/doctest.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "../src/ops/weight_products.hpp"
#include "cellgrad/nn/recurrent.hpp"
#include "cellgrad/ops.hpp"
#include "cellgrad/parallel.hpp"

using namespace cellgrad;
using namespace cellgrad::nn;

namespace {

/// Turns the packed GEMM back on and restores 2 threads when a case ends, whatever happened.
struct RestoreDefaults {
    RestoreDefaults() = default;
    ~RestoreDefaults() {
        set_packed_weight_gemm(true);
        set_num_threads(2);
    }
    RestoreDefaults(const RestoreDefaults&) = delete;
    RestoreDefaults& operator=(const RestoreDefaults&) = delete;
};

/// (rows, cols) float tensor of U(-1, 1) values from a fixed seed.
Tensor<float> random_tensor(std::size_t rows, std::size_t cols, std::uint64_t seed) {
    std::mt19937_64 rng(seed);
    std::uniform_real_distribution<float> uniform(-1.0f, 1.0f);
    Tensor<float> t(rows, cols);
    for (std::size_t i = 0; i < t.size(); ++i) {
        t.data()[i] = uniform(rng);
    }
    return t;
}

/// float64 product of float operands, (m, n) = a (m, k) times b^T (b is (n, k)) when
/// `b_transposed`, else times b (k, n); `magnitude` gets sum_k |a||b| per element (the scale of
/// the rounding error of a k-term float sum).
std::vector<double> reference_product(View<const float> a, View<const float> b, bool b_transposed,
                                      std::vector<double>& magnitude) {
    const std::size_t m = a.rows, k = a.cols, n = b_transposed ? b.rows : b.cols;
    std::vector<double> product(m * n, 0.0);
    magnitude.assign(m * n, 0.0);
    for (std::size_t i = 0; i < m; ++i) {
        for (std::size_t j = 0; j < n; ++j) {
            double sum = 0.0, size = 0.0;
            for (std::size_t p = 0; p < k; ++p) {
                const double term = double(a(i, p)) * double(b_transposed ? b(j, p) : b(p, j));
                sum += term;
                size += std::fabs(term);
            }
            product[i * n + j] = sum;
            magnitude[i * n + j] = size;
        }
    }
    return product;
}

/// Largest |actual - expected| / bound over all elements, bound = (k + 2) * 2^-24 * magnitude +
/// 2^-24 * |expected| (a k-term float sum plus the final rounding); <= 1 passes.
double worst_against_bound(View<const float> actual, const std::vector<double>& expected,
                           const std::vector<double>& magnitude, std::size_t k) {
    const double unit = std::ldexp(1.0, -24);
    double worst = 0.0;
    for (std::size_t i = 0; i < actual.rows; ++i) {
        for (std::size_t j = 0; j < actual.cols; ++j) {
            const std::size_t e = i * actual.cols + j;
            const double bound =
                (double(k) + 2.0) * unit * magnitude[e] + unit * std::fabs(expected[e]) + 1e-30;
            worst = std::max(worst, std::fabs(double(actual(i, j)) - expected[e]) / bound);
        }
    }
    return worst;
}

/// Shapes that cover the kernel's edges: rows around its 8-row tile, columns around its
/// 48-column panels (forward: out; backward: in), and an inner length past its 1024 slice.
struct ProductShape {
    std::size_t rows, in, out;
};
const ProductShape edge_shapes[] = {
    {4, 130, 130},   {5, 1100, 49},   {8, 97, 200},   {9, 49, 1100},
    {13, 300, 2100}, {64, 256, 1024}, {128, 200, 96},
};

} // namespace

TEST_CASE("packed gemm: linear forward and backward within float rounding of float64 products") {
    RestoreDefaults restore;
    const bool active = packed_weight_gemm_active();
    if (!active) {
        MESSAGE("this CPU has no AVX-512F: checking the BLAS path only");
    }
    for (const ProductShape& shape : edge_shapes) {
        CAPTURE(shape.rows);
        CAPTURE(shape.in);
        CAPTURE(shape.out);
        // x is a column slice of a wider tensor, so the kernel reads it with a stride.
        const Tensor<float> wide = random_tensor(shape.rows, shape.in + 3, 11 + shape.rows);
        Parameter<float> weight("weight", random_tensor(shape.out, shape.in, 12 + shape.in));
        Parameter<float> bias("bias", random_tensor(1, shape.out, 13), true);
        const Tensor<float> seed = random_tensor(shape.rows, shape.out, 14 + shape.out);
        Tape<float> tape;
        const Var<float> source = tape.input(wide);
        const Var<float> x = slice_cols(source, 1, 1 + shape.in);
        const Var<float> w = tape.param(weight);
        const Var<float> y = linear(x, w, tape.param(bias));
        // The packed copy exists exactly when the packed kernel ran (W^T for forward).
        CHECK((tape.extension<WeightProducts<float>>().packed_copy(w.id(), true) != nullptr) ==
              active);

        std::vector<double> magnitude;
        std::vector<double> expected =
            reference_product(x.value(), weight.value.view(), true, magnitude);
        for (std::size_t i = 0; i < shape.rows; ++i) {
            for (std::size_t j = 0; j < shape.out; ++j) {
                expected[i * shape.out + j] += double(bias.value(0, j));
                magnitude[i * shape.out + j] += std::fabs(double(bias.value(0, j)));
            }
        }
        CHECK(worst_against_bound(y.value(), expected, magnitude, shape.in + 1) <= 1.0);

        tape.backward(y, seed);
        CHECK((tape.extension<WeightProducts<float>>().packed_copy(w.id(), false) != nullptr) ==
              active);
        const std::vector<double> expected_dx =
            reference_product(seed.view(), weight.value.view(), false, magnitude);
        const Tensor<float> dx(source.grad());
        const View<const float> dx_of_x{dx.data() + 1, shape.rows, shape.in, dx.cols()};
        CHECK(worst_against_bound(dx_of_x, expected_dx, magnitude, shape.out) <= 1.0);
        for (std::size_t i = 0; i < shape.rows; ++i) { // the columns outside the slice get 0
            CHECK(dx(i, 0) == 0.0f);
            CHECK(dx(i, shape.in + 1) == 0.0f);
            CHECK(dx(i, shape.in + 2) == 0.0f);
        }
    }
}

TEST_CASE("packed gemm: linear_add_rows and an accumulating input gradient match the BLAS path") {
    RestoreDefaults restore;
    const std::size_t rows = 12, in = 160, out = 4 * 160;
    const Tensor<float> x_value = random_tensor(rows, in, 21);
    Parameter<float> weight("weight", random_tensor(out, in, 22));
    Parameter<float> second("second", random_tensor(out, in, 23));
    Parameter<float> bias("bias", random_tensor(1, out, 24), true);
    const Tensor<float> addend_value = random_tensor(30, out, 25);
    const std::vector<std::int32_t> picked = {3, 29, 0, 7, 7, 12, 1, 28, 5, 6, 9, 2};

    // loss = sum(seed1 * linear_add_rows(x, W, b, a, picked)) + sum(seed2 * linear(x, W2)): x's
    // gradient is written by one product and accumulated (beta = 1) by the other.
    struct Result {
        Tensor<float> y1, y2, dx, daddend, dW, dW2, db;
    };
    auto run = [&](bool packed) {
        set_packed_weight_gemm(packed);
        weight.zero_grad();
        second.zero_grad();
        bias.zero_grad();
        Tape<float> tape;
        const Var<float> x = tape.input(x_value);
        const Var<float> addend = tape.input(addend_value);
        const Var<float> w = tape.param(weight);
        const Var<float> y1 =
            linear_add_rows(x, w, tape.param(bias), addend, std::span<const std::int32_t>(picked));
        const Var<float> y2 = linear(x, tape.param(second));
        const Var<float> loss = add(sum(mul(y1, tape.constant(random_tensor(rows, out, 26)))),
                                    sum(mul(y2, tape.constant(random_tensor(rows, out, 27)))));
        CHECK((tape.extension<WeightProducts<float>>().packed_copy(w.id(), true) != nullptr) ==
              (packed && packed_weight_gemm_active()));
        tape.backward(loss);
        return Result{y1.value_tensor(), y2.value_tensor(), x.grad(), addend.grad(),
                      weight.grad,       second.grad,       bias.grad};
    };
    const Result blas = run(false);
    const Result fast = run(true);
    auto close = [](const Tensor<float>& a, const Tensor<float>& b, double tolerance) {
        REQUIRE(a.shape() == b.shape());
        double worst = 0.0;
        for (std::size_t i = 0; i < a.size(); ++i) {
            worst = std::max(worst, double(std::fabs(a.data()[i] - b.data()[i])) /
                                        (1.0 + std::fabs(double(b.data()[i]))));
        }
        return worst <= tolerance;
    };
    // Sums of 160 or 640 products of values in [-1, 1]: the two summation orders differ by a few
    // float ulps of the sums' magnitude.
    CHECK(close(fast.y1, blas.y1, 2e-5));
    CHECK(close(fast.y2, blas.y2, 2e-5));
    CHECK(close(fast.dx, blas.dx, 5e-5));
    CHECK(close(fast.daddend, blas.daddend, 0.0)); // scattered seed rows, no product
    CHECK(close(fast.dW, blas.dW, 0.0));           // weight gradients stay with BLAS
    CHECK(close(fast.dW2, blas.dW2, 0.0));
    CHECK(close(fast.db, blas.db, 0.0));
    if (packed_weight_gemm_active()) {
        // The orders do differ: the comparison above is not of one path with itself.
        bool any_difference = false;
        for (std::size_t i = 0; i < fast.dx.size(); ++i) {
            any_difference = any_difference || fast.dx.data()[i] != blas.dx.data()[i];
        }
        CHECK(any_difference);
    }
}

TEST_CASE("packed gemm: bitwise the same at 1 and 2 threads") {
    RestoreDefaults restore;
    const std::size_t rows = 64, in = 512, out = 2048;
    const Tensor<float> x_value = random_tensor(rows, in, 31);
    Parameter<float> weight("weight", random_tensor(out, in, 32));
    const Tensor<float> seed = random_tensor(rows, out, 33);
    auto run = [&](int threads) {
        set_num_threads(threads);
        Tape<float> tape;
        const Var<float> x = tape.input(x_value);
        const Var<float> y = linear(x, tape.param(weight));
        tape.backward(y, seed);
        return std::make_pair(y.value_tensor(), x.grad());
    };
    const auto one = run(1);
    const auto two = run(2);
    CHECK(std::memcmp(one.first.data(), two.first.data(), one.first.size() * sizeof(float)) == 0);
    CHECK(std::memcmp(one.second.data(), two.second.data(), one.second.size() * sizeof(float)) ==
          0);
}

TEST_CASE("packed gemm: LSTM, GRU and RNN layers give the BLAS path's outputs and gradients") {
    RestoreDefaults restore;
    RecurrentOptions options;
    options.input_size = 24;
    options.hidden_size = 128; // every W_hh and the upper W_ih reach packed_min_weight
    options.num_layers = 2;
    const std::size_t batch = 6, steps = 12;
    const Tensor<float> input = random_tensor(steps * batch, options.input_size, 41);
    for (const std::string kind : {"lstm", "gru", "rnn"}) {
        CAPTURE(kind);
        std::mt19937_64 rng(42);
        std::unique_ptr<Recurrent<float>> layer;
        if (kind == "lstm") {
            layer = std::make_unique<LSTM<float>>(options, rng);
        } else if (kind == "gru") {
            layer = std::make_unique<GRU<float>>(options, rng);
        } else {
            layer = std::make_unique<RNN<float>>(options, rng);
        }
        auto run = [&](bool packed) {
            set_packed_weight_gemm(packed);
            for (Parameter<float>* parameter : layer->parameters()) {
                parameter->zero_grad();
            }
            Tape<float> tape;
            const Var<float> x = tape.input(input);
            const RecurrentOutput<float> out = layer->forward(x, batch);
            const Var<float> loss = sum(mul(out.output, out.output));
            tape.backward(loss);
            std::size_t packed_nodes = 0;
            for (NodeId id = 0; id < tape.size(); ++id) {
                packed_nodes +=
                    tape.extension<WeightProducts<float>>().packed_copy(id, false) != nullptr;
            }
            CHECK((packed_nodes > 0) == (packed && packed_weight_gemm_active()));
            std::vector<Tensor<float>> results = {out.output.value_tensor(), x.grad()};
            for (Parameter<float>* parameter : layer->parameters()) {
                results.push_back(parameter->grad);
            }
            return results;
        };
        const auto blas = run(false);
        const auto fast = run(true);
        REQUIRE(blas.size() == fast.size());
        double worst = 0.0;
        for (std::size_t t = 0; t < blas.size(); ++t) {
            for (std::size_t i = 0; i < blas[t].size(); ++i) {
                worst = std::max(worst, double(std::fabs(fast[t].data()[i] - blas[t].data()[i])) /
                                            (1.0 + std::fabs(double(blas[t].data()[i]))));
            }
        }
        CAPTURE(worst);
        CHECK(worst <= 1e-4); // 12 steps of float rounding in two summation orders
    }
}

TEST_CASE("packed gemm: float only, and the switch turns it off") {
    RestoreDefaults restore;
    Tape<double> tape;
    const Var<double> w = tape.input(Tensor<double>(200, 100, 0.5));
    CHECK_THROWS_WITH_AS(tape.extension<WeightProducts<double>>().packed(tape, w.id(), true),
                         doctest::Contains("the packed-weight GEMM is float only"), Error);
    set_packed_weight_gemm(false);
    CHECK_FALSE(packed_weight_gemm_active());
    Tape<float> float_tape;
    const Var<float> x = float_tape.input(random_tensor(8, 200, 51));
    const Var<float> weight = float_tape.input(random_tensor(300, 200, 52));
    linear(x, weight);
    CHECK(float_tape.extension<WeightProducts<float>>().packed_copy(weight.id(), true) == nullptr);
    CHECK_THROWS_WITH_AS(
        float_tape.extension<WeightProducts<float>>().packed(float_tape, weight.id(), true),
        doctest::Contains("needs an AVX-512F CPU"), Error);
}
