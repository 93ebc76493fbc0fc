// Deterministic parallelism: every parallel kernel gives bitwise-identical results at 1 and 2
// threads (fixed chunk boundaries, chunk partials added in chunk order).
#include <doctest/doctest.h>

#include <algorithm>
#include <array>
#include <cstdint>
#include <cstring>
#include <iterator>
#include <random>
#include <span>
#include <string>
#include <vector>

#include "cellgrad/ops.hpp"
#include "cellgrad/parallel.hpp"

using namespace cellgrad;

namespace {

using Outputs = std::vector<std::vector<float>>;

/// Restores the machine's default of 2 threads when the test ends, whatever happened.
struct RestoreThreads {
    RestoreThreads() = default;
    ~RestoreThreads() { set_num_threads(2); }
    RestoreThreads(const RestoreThreads&) = delete;
    RestoreThreads& operator=(const RestoreThreads&) = delete;
};

/// (rows, cols) float tensor of U(lo, hi) values from a fixed seed.
Tensor<float> random_tensor(std::size_t rows, std::size_t cols, std::uint64_t seed,
                            float lo = -1.0f, float hi = 1.0f) {
    std::mt19937_64 rng(seed);
    std::uniform_real_distribution<float> uniform(lo, hi);
    Tensor<float> t(rows, cols);
    for (std::size_t i = 0; i < t.size(); ++i) {
        t.data()[i] = uniform(rng);
    }
    return t;
}

/// Row-major copy of a (possibly strided) view.
std::vector<float> flatten(View<const float> view) {
    return Tensor<float>(view).to_vector();
}

/// Runs `compute` at `threads` threads and returns what it produced.
template <class F>
Outputs run_at(int threads, const F& compute) {
    set_num_threads(threads);
    REQUIRE(num_threads() == threads);
    return compute();
}

/// Checks that `compute` gives bitwise-identical outputs at 1 and 2 threads.
template <class F>
void check_identical_at_1_and_2_threads(const F& compute) {
    RestoreThreads restore;
    const Outputs serial = run_at(1, compute);
    const Outputs parallel = run_at(2, compute);
    REQUIRE(serial.size() == parallel.size());
    for (std::size_t i = 0; i < serial.size(); ++i) {
        INFO("output " << i << " of " << serial.size());
        REQUIRE(serial[i].size() == parallel[i].size());
        CHECK(!serial[i].empty());
        CHECK(std::memcmp(serial[i].data(), parallel[i].data(), serial[i].size() * sizeof(float)) ==
              0);
    }
}

/// sum(y * W) for a fixed random W, so that backward sees a non-uniform upstream gradient.
Var<float> weighted_sum(const Var<float>& y, std::uint64_t seed) {
    return sum(mul(y, y.tape().constant(random_tensor(y.rows(), y.cols(), seed))));
}

constexpr std::size_t big_rows = 1000;
constexpr std::size_t big_cols = 700;

} // namespace

TEST_CASE("parallel: the default thread count and set_num_threads") {
    RestoreThreads restore;
    CHECK(num_threads() >= 1);
    set_num_threads(1);
    CHECK(num_threads() == 1);
    CHECK_THROWS_WITH_AS(set_num_threads(0), doctest::Contains("set_num_threads: needs n >= 1"),
                         Error);
    CHECK(std::string(blas_core_name()).size() > 0);
}

TEST_CASE("parallel: parallel_chunks covers [0, n) once in fixed chunks; parallel_sum is exact") {
    RestoreThreads restore;
    for (const int threads : {1, 2}) {
        set_num_threads(threads);
        std::vector<int> hits(100003, 0);
        parallel_chunks(hits.size(), 1000, [&](std::size_t begin, std::size_t end) {
            CHECK(begin % 1000 == 0); // chunk boundaries depend on n and grain only
            CHECK((end - begin == 1000 || end == hits.size()));
            for (std::size_t i = begin; i < end; ++i) {
                ++hits[i];
            }
        });
        CHECK(std::count(hits.begin(), hits.end(), 1) == static_cast<long>(hits.size()));
    }
    const Tensor<float> values = random_tensor(1, 1 << 20, 3);
    auto total = [&] {
        return parallel_sum<float>(values.size(), 4096, [&](std::size_t begin, std::size_t end) {
            float partial = 0;
            for (std::size_t i = begin; i < end; ++i) {
                partial += values.data()[i];
            }
            return partial;
        });
    };
    check_identical_at_1_and_2_threads([&] { return Outputs{{total()}}; });
}

TEST_CASE("parallel: elementwise unary ops, forward and backward, on a big tensor") {
    const Tensor<float> x = random_tensor(big_rows, big_cols, 11, -2.0f, 2.0f);
    const Tensor<float> positive = random_tensor(big_rows, big_cols, 12, 0.1f, 3.0f);
    check_identical_at_1_and_2_threads([&] {
        Outputs out;
        Tape<float> tape;
        const Var<float> a = tape.input(x);
        const Var<float> b = tape.input(positive);
        const Var<float> ys[] = {tanh(a), sigmoid(a), exp(a), relu(a), affine(a, 1.5, -0.25),
                                 log(b)};
        Var<float> loss = weighted_sum(ys[0], 100);
        for (std::size_t i = 1; i < std::size(ys); ++i) {
            loss = loss + weighted_sum(ys[i], 100 + i);
        }
        loss.backward();
        for (const Var<float>& y : ys) {
            out.push_back(flatten(y.value()));
        }
        out.push_back(a.grad().to_vector());
        out.push_back(b.grad().to_vector());
        out.push_back({loss.item()});
        return out;
    });
}

TEST_CASE("parallel: elementwise binary ops and broadcast backward reductions") {
    const Tensor<float> x = random_tensor(big_rows, big_cols, 21);
    const Tensor<float> z = random_tensor(big_rows, big_cols, 22, 0.5f, 1.5f);
    const Tensor<float> row = random_tensor(1, big_cols, 23, 0.5f, 1.5f);
    const Tensor<float> column = random_tensor(big_rows, 1, 24, 0.5f, 1.5f);
    const Tensor<float> scalar(1, 1, 0.75f);
    check_identical_at_1_and_2_threads([&] {
        Outputs out;
        Tape<float> tape;
        const Var<float> a = tape.input(x);
        const Var<float> b = tape.input(z);
        const Var<float> r = tape.input(row);    // gradient: column sums of (1000, 700)
        const Var<float> c = tape.input(column); // gradient: row sums
        const Var<float> s = tape.input(scalar); // gradient: sum of everything
        const Var<float> ys[] = {add(a, b), sub(a, b), mul(a, b), div(a, b), add(a, r), sub(r, a),
                                 mul(a, r), div(a, r), add(a, c), sub(c, a), mul(a, c), div(a, c),
                                 add(a, s), sub(s, a), mul(a, s), div(a, s)};
        Var<float> loss = weighted_sum(ys[0], 200);
        for (std::size_t i = 1; i < std::size(ys); ++i) {
            loss = loss + weighted_sum(ys[i], 200 + i);
        }
        loss.backward();
        for (const Var<float>& y : ys) {
            out.push_back(flatten(y.value()));
        }
        for (const Var<float>& v : {a, b, r, c, s}) {
            out.push_back(v.grad().to_vector());
        }
        return out;
    });
}

TEST_CASE("parallel: linear forward and backward, bias gradient = column sums of dY") {
    const Tensor<float> x = random_tensor(4000, 64, 31);
    const Tensor<float> w = random_tensor(300, 64, 32);
    const Tensor<float> b = random_tensor(1, 300, 33);
    check_identical_at_1_and_2_threads([&] {
        Parameter<float> weight("w", w);
        Parameter<float> bias("b", b, true);
        Tape<float> tape;
        const Var<float> input = tape.input(x);
        const Var<float> y = linear(input, tape.param(weight), tape.param(bias));
        weighted_sum(tanh(y), 300).backward();
        return Outputs{flatten(y.value()), input.grad().to_vector(), weight.grad.to_vector(),
                       bias.grad.to_vector()};
    });
}

TEST_CASE("parallel: matmul with every transpose combination, tall and wide outputs") {
    // (m, k) x (k, n) for a tall (600 x 200) and a wide (40 x 900) output, and a wide one with
    // a long inner dimension (computed transposed, in column blocks).
    for (const auto& mkn :
         {std::array<std::size_t, 3>{600, 300, 200}, std::array<std::size_t, 3>{40, 500, 900},
          std::array<std::size_t, 3>{40, 600, 2100}}) {
        // Plain names, not structured bindings: clang 14 cannot capture bindings in INFO's lambda.
        const std::size_t m = mkn[0], k = mkn[1], n = mkn[2];
        for (const bool ta : {false, true}) {
            for (const bool tb : {false, true}) {
                INFO("m " << m << " transpose_a " << ta << " transpose_b " << tb);
                const Tensor<float> a = ta ? random_tensor(k, m, 71) : random_tensor(m, k, 71);
                const Tensor<float> b = tb ? random_tensor(n, k, 72) : random_tensor(k, n, 72);
                check_identical_at_1_and_2_threads([&] {
                    Tape<float> tape;
                    const Var<float> va = tape.input(a);
                    const Var<float> vb = tape.input(b);
                    const Var<float> y = matmul(va, vb, ta, tb);
                    weighted_sum(y, 700).backward();
                    return Outputs{flatten(y.value()), va.grad().to_vector(),
                                   vb.grad().to_vector()};
                });
            }
        }
    }
}

TEST_CASE("parallel: sum and mean over everything and per axis, forward and backward") {
    const Tensor<float> x = random_tensor(big_rows, big_cols, 41);
    check_identical_at_1_and_2_threads([&] {
        Outputs out;
        Tape<float> tape;
        const Var<float> a = tape.input(x);
        const Var<float> ys[] = {sum(a), mean(a), sum(a, 0), sum(a, 1), mean(a, 0), mean(a, 1)};
        Var<float> loss = weighted_sum(ys[0], 400);
        for (std::size_t i = 1; i < std::size(ys); ++i) {
            loss = loss + weighted_sum(ys[i], 400 + i);
        }
        loss.backward();
        for (const Var<float>& y : ys) {
            out.push_back(flatten(y.value()));
        }
        out.push_back(a.grad().to_vector());
        return out;
    });
}

TEST_CASE("parallel: gather_rows scatter-add backward with repeated indices") {
    const Tensor<float> table = random_tensor(64, 1000, 51);
    std::mt19937_64 rng(52);
    std::vector<std::int32_t> indices(2000);
    for (std::int32_t& index : indices) {
        index = static_cast<std::int32_t>(rng() % 64); // ~30 repeats per row
    }
    check_identical_at_1_and_2_threads([&] {
        Parameter<float> embedding("embedding", table);
        Tape<float> tape;
        const Var<float> y = gather_rows(tape.param(embedding), indices);
        weighted_sum(y, 500).backward();
        return Outputs{flatten(y.value()), embedding.grad.to_vector()};
    });
}

TEST_CASE("parallel: cross_entropy forward and backward on (5000, 65)") {
    const Tensor<float> logits = random_tensor(5000, 65, 61, -3.0f, 3.0f);
    std::mt19937_64 rng(62);
    std::vector<std::int32_t> targets(5000);
    std::vector<float> mask(5000);
    for (std::size_t i = 0; i < targets.size(); ++i) {
        targets[i] = static_cast<std::int32_t>(rng() % 65);
        mask[i] = rng() % 4 == 0 ? 0.0f : 1.0f;
    }
    for (const bool masked : {false, true}) {
        for (const Reduction reduction : {Reduction::mean, Reduction::sum}) {
            INFO("masked " << masked << " sum " << (reduction == Reduction::sum));
            check_identical_at_1_and_2_threads([&] {
                Tape<float> tape;
                const Var<float> z = tape.input(logits);
                const Var<float> loss = cross_entropy<float>(
                    z, targets, masked ? std::span<const float>(mask) : std::span<const float>(),
                    reduction);
                loss.backward();
                return Outputs{{loss.item()}, z.grad().to_vector()};
            });
        }
    }
}
