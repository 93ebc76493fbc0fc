// Pointwise nodes: a cell's per-element math written once; its fused forward and backward derived.
//
// The math is a generic function of scalar-like arguments returning one value or a std::tuple of
// values, e.g. the LSTM's remember and use gates:
//     [](auto a_i, auto a_f, auto a_g, auto a_o, auto c) {
//         auto long_term = sigmoid(a_f) * c + sigmoid(a_i) * tanh(a_g);
//         return std::tuple{sigmoid(a_o) * tanh(long_term), long_term};
//     }
// pointwise() records it as ONE tape node over (B, H) operands: Vars, column blocks of wider Vars
// (split_columns: the gate blocks of a GEMM's output, read in place) or per-unit parameters of one
// row (1, H), broadcast over the rows. Forward: one pass over the rows evaluating the math per
// element. Backward: the same pass running the math's reverse sweep (cellmath.hpp) per element,
// recomputing the forward values from the inputs instead of storing them; a broadcast parameter's
// gradient is summed over the rows in row order. Both loops are compiled for AVX-512, AVX2 and the
// baseline (the loader picks one) and run in fixed pieces, so 1 and 2 threads agree bit for bit.
// The outputs are column views of the node's (B, M*H) value, each with its own gradient.
#pragma once

#include <array>
#include <cstring>
#include <tuple>
#include <type_traits>
#include <utility>

#include "cellgrad/detail/pointwise_kernels.hpp"

namespace cellgrad {

/// Columns [first_col, first_col + cols) of a Var: a pointwise operand read in place.
template <class T>
struct Columns {
    Var<T> var;
    std::size_t first_col = 0;
    std::size_t cols = 0;
    /// All columns of x.
    Columns(const Var<T>& x) : var(x), first_col(0), cols(x.cols()) {}
    /// Columns [first, first + count) of x.
    Columns(const Var<T>& x, std::size_t first, std::size_t count)
        : var(x), first_col(first), cols(count) {}
};

/// Splits x (rows, N*H) into its N column blocks of H (the gate blocks of a stacked GEMM output).
template <std::size_t N, class T>
std::array<Columns<T>, N> split_columns(const Var<T>& x) {
    const std::size_t width = x.cols() / N;
    if (width * N != x.cols()) {
        throw Error(fmt::format("split_columns: {} columns of {} do not split into {} blocks",
                                x.cols(), x.shape(), N));
    }
    return [&]<std::size_t... k>(std::index_sequence<k...>) {
        return std::array<Columns<T>, N>{Columns<T>(x, k * width, width)...};
    }
    (std::make_index_sequence<N>{});
}

/// Records `math` applied element by element to the operands as one node named `op` (a string
/// literal); returns its M outputs, each (B, H). Operands are (B, H) or broadcast (1, H) Vars or
/// Columns; the math takes one argument per operand. Forward: y_m = f_m(x_1, ..., x_N) per
/// element; backward: dx_k += sum_m dy_m * df_m/dx_k, derived from the math (rows summed for a
/// broadcast x_k).
template <class T, class Math, class... Operands>
auto pointwise(const char* op, const Math& math, const Columns<T>& first, const Operands&... rest) {
    using namespace pointwise_detail;
    constexpr std::size_t N = 1 + sizeof...(Operands);
    using List = decltype(record_math<N>(math));
    constexpr std::size_t M = output_count<List>::value;
    const std::array<Columns<T>, N> operands{first, Columns<T>(rest)...};
    Tape<T>& tape = first.var.tape();
    std::size_t B = 1;
    for (const Columns<T>& operand : operands) {
        B = std::max(B, operand.var.rows());
    }
    const std::size_t H = first.cols;
    Attributes<List, N> attributes{record_math<N>(math), {}, static_cast<std::uint32_t>(H)};
    if (!Sweep<N, List>::agrees(attributes.outputs)) {
        throw Error(fmt::format("{}: one output's expression appears inside another with other "
                                "constants; name it differently (e.g. multiply by 1.0)",
                                op));
    }
    std::array<Var<T>, N> inputs;
    std::size_t input_count = 0;
    for (std::size_t k = 0; k < N; ++k) {
        const Columns<T>& operand = operands[k];
        const Shape shape = operand.var.shape();
        if (&operand.var.tape() != &tape || operand.cols != H ||
            operand.first_col + operand.cols > shape.cols || (shape.rows != B && shape.rows != 1)) {
            throw Error(fmt::format("{}: operand {} (columns [{}, {}) of {}) does not fit: every "
                                    "operand needs {} columns of ({}, .) or (1, .) on one tape",
                                    op, k, operand.first_col, operand.first_col + operand.cols,
                                    shape, H, B));
        }
        std::size_t slot = 0;
        while (slot < input_count && inputs[slot].id() != operand.var.id()) {
            ++slot;
        }
        if (slot == input_count) {
            inputs[input_count++] = operand.var;
        }
        attributes.operands[k] = {static_cast<std::uint32_t>(slot),
                                  static_cast<std::uint32_t>(operand.first_col),
                                  shape.rows == 1 && B > 1};
    }
    const NodeId id =
        tape.record(op, std::span<const Var<T>>(inputs.data(), input_count), B, M * H);
    tape.set_attributes(id, attributes);
    const View<T> y = tape.node(id).value;
    const std::array<View<const T>, N> values = operand_values(tape, id, attributes);
    for_each_piece(B, H, costly_grain, [&](std::size_t r, std::size_t c0, std::size_t c1) {
        std::array<const T*, N> in;
        for (std::size_t k = 0; k < N; ++k) {
            in[k] = operand_row(values[k], attributes.operands[k], r) + c0;
        }
        std::array<T*, M> out;
        for (std::size_t m = 0; m < M; ++m) {
            out[m] = y.row(r) + m * H + c0;
        }
        forward_span<T>(attributes.outputs, in, out, c1 - c0);
    });
    tape.set_backward(id, &pointwise_detail::backward<T, List, N>);
    tape.check_forward(id);
    if (tape.keeping_intermediates()) {
        keep_named_values(tape, id, attributes, B, H);
    }
    std::array<Var<T>, M> outputs;
    for (std::size_t m = 0; m < M; ++m) {
        outputs[m] = Var<T>(&tape, tape.record_columns(op, id, m * H, H));
    }
    return outputs;
}

/// The same with a Var as the first operand.
template <class T, class Math, class... Operands>
auto pointwise(const char* op, const Math& math, const Var<T>& first, const Operands&... rest) {
    return pointwise(op, math, Columns<T>(first), rest...);
}

} // namespace cellgrad
