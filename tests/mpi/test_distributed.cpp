// cellgrad::distributed under mpirun -np N (N >= 2): sums exact on known values and the same bits
// on every rank, broadcasts, gathers of uneven row counts, refusals.
#include <cstring>
#include <numeric>
#include <vector>

#include <doctest/doctest.h>

#include "cellgrad/distributed.hpp"

namespace distributed = cellgrad::distributed;
using cellgrad::Parameter;
using cellgrad::Tensor;

namespace {

/// True on every rank when `values` has the same bytes on every rank.
template <class T>
bool same_on_every_rank(const std::vector<T>& values) {
    std::vector<T> copy = values;
    distributed::broadcast(std::span<T>(copy));
    double differs[1] = {
        std::memcmp(copy.data(), values.data(), values.size() * sizeof(T)) != 0 ? 1.0 : 0.0};
    distributed::allreduce_sum(std::span<double>(differs));
    return differs[0] == 0;
}

} // namespace

TEST_CASE("the job has at least two ranks and each knows its own") {
    REQUIRE(distributed::active());
    REQUIRE(distributed::world_size() >= 2);
    double ranks[1] = {double(distributed::rank())};
    distributed::allreduce_sum(std::span<double>(ranks));
    const double n = distributed::world_size();
    CHECK(ranks[0] == n * (n - 1) / 2); // 0 + 1 + ... + N-1: every rank counted once
}

TEST_CASE("allreduce_sum: exact sums of known integers, for lengths below, at and above N") {
    const int N = distributed::world_size();
    const int r = distributed::rank();
    for (const std::size_t length : {std::size_t(1), std::size_t(N - 1), std::size_t(N),
                                     std::size_t(7), std::size_t(1000), std::size_t(4099)}) {
        CAPTURE(length);
        std::vector<double> values(length);
        for (std::size_t i = 0; i < length; ++i) {
            values[i] = double((r + 1) * 1000) + double(i); // small integers: sums are exact
        }
        distributed::allreduce_sum(std::span<double>(values));
        for (std::size_t i = 0; i < length; ++i) {
            // sum over r of (r+1)*1000 + i = 1000 N(N+1)/2 + N i
            REQUIRE(values[i] == 1000.0 * N * (N + 1) / 2 + double(N) * double(i));
        }
    }
}

TEST_CASE("allreduce_sum adds in rank order: float values whose sum depends on the order") {
    // Rank 0 holds 1e8, every other rank 1: in rank order each + 1 is lost (1 is below half an ulp
    // of 1e8), so the sum stays 1e8; summing the ones first would give 1e8 + (N - 1) rounded,
    // which differs from 1e8 once N >= 4. With N = 2 or 3 this checks the value only.
    const int N = distributed::world_size();
    std::vector<float> values(5, distributed::rank() == 0 ? 1e8f : 1.0f);
    distributed::allreduce_sum(std::span<float>(values));
    float in_rank_order = 1e8f;
    for (int r = 1; r < N; ++r) {
        in_rank_order += 1.0f;
    }
    for (float value : values) {
        CHECK(value == in_rank_order);
    }
    CHECK(same_on_every_rank(values));
}

TEST_CASE("allreduce_sum of random floats: the same bits on every rank, and on a second call") {
    std::vector<float> values(10007);
    std::uint32_t state = 12345u + 977u * std::uint32_t(distributed::rank());
    for (float& value : values) {
        state = state * 1664525u + 1013904223u;
        value = float(state >> 8) / float(1 << 24) - 0.5f;
    }
    std::vector<float> again = values;
    distributed::allreduce_sum(std::span<float>(values));
    distributed::allreduce_sum(std::span<float>(again));
    CHECK(same_on_every_rank(values));
    CHECK(std::memcmp(values.data(), again.data(), values.size() * sizeof(float)) == 0);
}

TEST_CASE("GradientAllreduce sums a parameter list's gradients and the extra values") {
    const int N = distributed::world_size();
    const float r = float(distributed::rank());
    Parameter<float> weight("weight", Tensor<float>(2, 3));
    Parameter<float> bias("bias", Tensor<float>(1, 3), true);
    for (std::size_t i = 0; i < 6; ++i) {
        weight.grad.data()[i] = r + float(i); // sum over ranks: N(N-1)/2 + N i
    }
    bias.grad.fill(2 * r);
    distributed::GradientAllreduce<float> reducer({&weight, &bias}, 2);
    CHECK(reducer.bytes() == (6 + 3 + 2) * sizeof(float));
    reducer.extra()[0] = 1;
    reducer.extra()[1] = r;
    reducer.sum();
    const float ranks_sum = float(N * (N - 1) / 2);
    for (std::size_t i = 0; i < 6; ++i) {
        CHECK(weight.grad.data()[i] == ranks_sum + float(N) * float(i));
    }
    for (std::size_t i = 0; i < 3; ++i) {
        CHECK(bias.grad.data()[i] == 2 * ranks_sum);
    }
    CHECK(reducer.extra()[0] == float(N));
    CHECK(reducer.extra()[1] == ranks_sum);
    CHECK(weight.value.data()[0] == 0.0f); // values untouched
}

TEST_CASE("GradientAllreduce refuses parameter lists of different sizes on different ranks") {
    Parameter<float> weight("weight", Tensor<float>(distributed::rank() == 0 ? 2 : 3, 3));
    try {
        distributed::GradientAllreduce<float> reducer({&weight});
        FAIL("expected an error");
    } catch (const cellgrad::Error& error) {
        const std::string message = error.what();
        CHECK(message.find("ranks disagree on the gradient buffer's length") != std::string::npos);
        CHECK(message.find("rank 0 has 6") != std::string::npos);
    }
}

TEST_CASE("broadcast_parameters copies rank 0's weights to every rank") {
    const float r = float(distributed::rank());
    Parameter<float> weight("weight", Tensor<float>(3, 2, 10 + r));
    Parameter<float> bias("bias", Tensor<float>(1, 2, 20 + r), true);
    distributed::broadcast_parameters<float>({&weight, &bias});
    for (std::size_t i = 0; i < 6; ++i) {
        CHECK(weight.value.data()[i] == 10.0f);
    }
    CHECK(bias.value(0, 1) == 20.0f);
}

TEST_CASE("gather_rows stacks uneven row blocks in rank order on rank 0") {
    const int N = distributed::world_size();
    const int r = distributed::rank();
    Tensor<float> local(std::size_t(r + 1), 2); // rank r holds r + 1 rows of value (r, row)
    for (std::size_t i = 0; i < local.rows(); ++i) {
        local(i, 0) = float(r);
        local(i, 1) = float(i);
    }
    const Tensor<float> all = distributed::gather_rows(local);
    if (r != 0) {
        CHECK(all.size() == 0);
        return;
    }
    REQUIRE(all.rows() == std::size_t(N * (N + 1) / 2));
    std::size_t row = 0;
    for (int k = 0; k < N; ++k) {
        for (int i = 0; i <= k; ++i, ++row) {
            CHECK(all(row, 0) == float(k));
            CHECK(all(row, 1) == float(i));
        }
    }
}

TEST_CASE("require_same passes on equal values and names the first rank that differs") {
    CHECK_NOTHROW(distributed::require_same(42, "the answer"));
    CHECK_THROWS_WITH(distributed::require_same(std::uint64_t(distributed::rank()), "the rank"),
                      "distributed: the ranks disagree on the rank: rank 0 has 0, rank 1 has 1");
    distributed::barrier();
}
