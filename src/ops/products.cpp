// Matrix products: matmul, linear, linear_add_rows. This is the GEMM layer: it owns the weight
// packing and the deferred weight gradients, kept on the tape through one TapeExtension.

#include "../packed_gemm.hpp"
#include "support.hpp"
#include "weight_products.hpp"

namespace cellgrad {

using namespace op_support;

// ---- matrix products -------------------------------------------------------------------------

template <class T>
Var<T> matmul(const Var<T>& a, const Var<T>& b, bool transpose_a, bool transpose_b) {
    Tape<T>& tape = shared_tape("matmul", a, b);
    const Shape sa = a.shape();
    const Shape sb = b.shape();
    const std::size_t m = transpose_a ? sa.cols : sa.rows;
    const std::size_t k = transpose_a ? sa.rows : sa.cols;
    const std::size_t kb = transpose_b ? sb.cols : sb.rows;
    const std::size_t n = transpose_b ? sb.rows : sb.cols;
    if (k != kb) {
        throw Error(fmt::format("matmul: inner dimensions differ: a{} {} b{} {}; needs "
                                "op(a) (m, k) and op(b) (k, n)",
                                transpose_a ? "^T" : "", sa, transpose_b ? "^T" : "", sb));
    }
    const NodeId id = tape.record("matmul", {a, b}, m, n);
    kernels::gemm<T>(a.value(), transpose_a, b.value(), transpose_b, tape.node(id).value, T(1),
                     T(0)); // (m, n)
    tape.node(id).integers[0] = transpose_a;
    tape.node(id).integers[1] = transpose_b;
    return finish<T>(tape, id, [](Tape<T>& tape, NodeId self) {
        const Node<T>& y = tape.node(self);
        const bool ta = y.integers[0] != 0;
        const bool tb = y.integers[1] != 0;
        const auto in = tape.inputs(self);
        const View<const T> a = tape.node(in[0]).value;
        const View<const T> b = tape.node(in[1]).value;
        const View<const T> dy = y.grad;
        bool fresh = false;
        if (tape.node(in[0]).requires_grad) {
            const View<T> da = tape.grad_for_overwrite(in[0], fresh);
            const T beta = fresh ? T(0) : T(1);
            if (!ta) {
                kernels::gemm<T>(dy, false, b, !tb, da, T(1), beta); // dA = dY op(B)^T
            } else {
                kernels::gemm<T>(b, tb, dy, true, da, T(1), beta); // dA = op(B) dY^T
            }
        }
        if (tape.node(in[1]).requires_grad) {
            const View<T> db = tape.grad_for_overwrite(in[1], fresh);
            const T beta = fresh ? T(0) : T(1);
            if (!tb) {
                kernels::gemm<T>(a, !ta, dy, false, db, T(1), beta); // dB = op(A)^T dY
            } else {
                kernels::gemm<T>(dy, true, a, ta, db, T(1), beta); // dB = dY^T op(A)
            }
        }
    });
}

namespace {

/// Stands for an absent input (a linear without bias).
constexpr NodeId no_node = ~NodeId(0);

/// out = x op(W) + beta out with op(W) = W^T when `transposed` (a linear's forward) or W (its
/// input gradient); beta is 0 or 1. Float products of packed_min_rows to packed_max_rows rows by a
/// weight of at least packed_min_weight elements use the weight packed once per tape
/// (packed_gemm.hpp): a recurrent weight is multiplied 2T times per pass. The rest goes to BLAS.
template <class T>
void multiply_by_weight(Tape<T>& tape, View<const T> x, NodeId weight, bool transposed, View<T> out,
                        T beta) {
    const View<const T> w = tape.node(weight).value;
    if constexpr (std::is_same_v<T, float>) {
        if (x.rows >= kernels::packed_min_rows && x.rows <= kernels::packed_max_rows &&
            w.rows * w.cols >= kernels::packed_min_weight && kernels::packed_gemm_active()) {
            kernels::packed_gemm(
                x, tape.template extension<WeightProducts<T>>().packed(tape, weight, transposed),
                out, beta);
            return;
        }
    }
    kernels::gemm<T>(x, false, w, transposed, out, T(1), beta);
}

/// Backward of y = x W^T + b given dY (node y's gradient): dX = dY W; dW += dY^T X, queued so that
/// all uses of W are summed in a few GEMMs; db += colsum(dY) unless bias is no_node.
template <class T>
void linear_backward(Tape<T>& tape, NodeId y, View<const T> dy, NodeId x, NodeId weight,
                     NodeId bias) {
    if (tape.node(x).requires_grad) {
        bool fresh = false;
        const View<T> dx = tape.grad_for_overwrite(x, fresh);
        multiply_by_weight<T>(tape, dy, weight, false, dx, fresh ? T(0) : T(1)); // dX = dY W
    }
    if (tape.node(weight).requires_grad) {
        tape.template extension<WeightProducts<T>>().defer(tape, weight, y, dy,
                                                           tape.node(x).value); // dW += dY^T X
    }
    if (bias != no_node && tape.node(bias).requires_grad) {
        bool fresh = false;
        const View<T> db = tape.grad_for_overwrite(bias, fresh);
        kernels::add_column_sums<T>(db, dy, fresh); // dB += sum over rows of dY
    }
}

} // namespace

template <class T>
Var<T> linear(const Var<T>& x, const Var<T>& weight, const Var<T>& bias) {
    Tape<T>& tape = shared_tape("linear", x, weight);
    const Shape sx = x.shape();
    const Shape sw = weight.shape();
    if (sx.cols != sw.cols) {
        throw Error(fmt::format("linear: input {} has {} features but weight {} expects {} "
                                "(weight is (out, in))",
                                sx, sx.cols, sw, sw.cols));
    }
    const bool has_bias = bias.valid();
    if (has_bias) {
        if (&bias.tape() != &tape) {
            throw Error("linear: bias belongs to another tape");
        }
        if (bias.shape() != Shape{1, sw.rows}) {
            throw Error(fmt::format("linear: bias has shape {}, needs (1, {}) for weight {}",
                                    bias.shape(), sw.rows, sw));
        }
    }
    const NodeId id = has_bias ? tape.record("linear", {x, weight, bias}, sx.rows, sw.rows)
                               : tape.record("linear", {x, weight}, sx.rows, sw.rows);
    const View<T> y = tape.node(id).value; // (n, out)
    if (has_bias) {
        const View<const T> b = bias.value();
        for (std::size_t r = 0; r < y.rows; ++r) {
            std::copy(b.data, b.data + y.cols, y.row(r));
        }
    }
    multiply_by_weight<T>(tape, x.value(), weight.id(), true, y, has_bias ? T(1) : T(0));
    return finish<T>(tape, id, [](Tape<T>& tape, NodeId self) {
        const auto in = tape.inputs(self);
        linear_backward<T>(tape, self, tape.node(self).grad, in[0], in[1],
                           in.size() == 3 ? in[2] : no_node);
    });
}

namespace {

/// The tape of x W^T + b added to rows of `addend`, after checking that the four share it and
/// fit together; `op` names the caller in the error.
template <class T>
Tape<T>& checked_add_rows_tape(const char* op, const Var<T>& x, const Var<T>& weight,
                               const Var<T>& bias, const Var<T>& addend) {
    Tape<T>& tape = shared_tape(op, x, weight);
    const Shape sx = x.shape();
    const Shape sw = weight.shape();
    const Shape sa = addend.shape();
    if (&addend.tape() != &tape || (bias.valid() && &bias.tape() != &tape)) {
        throw Error(fmt::format("{}: bias or addend belongs to another tape", op));
    }
    if (sx.cols != sw.cols || sa.cols != sw.rows ||
        (bias.valid() && bias.shape() != Shape{1, sw.rows})) {
        throw Error(fmt::format("{}: input {}, weight {}, bias {} and addend {} do not fit: needs "
                                "x (n, in), W (out, in), b (1, out), a (m, out)",
                                op, sx, sw, bias.valid() ? to_string(bias.shape()) : "none", sa));
    }
    return tape;
}

/// linear_add_rows with `rows` (indices into the addend) or, when it is null, first_row + i.
template <class T>
Var<T> linear_add_rows_impl(const Var<T>& x, const Var<T>& weight, const Var<T>& bias,
                            const Var<T>& addend, const std::int32_t* rows, std::size_t first_row) {
    Tape<T>& tape = checked_add_rows_tape("linear_add_rows", x, weight, bias, addend);
    const Shape sx = x.shape();
    const Shape sw = weight.shape();
    const Shape sa = addend.shape();
    if (rows != nullptr) {
        for (std::size_t i = 0; i < sx.rows; ++i) {
            if (rows[i] < 0 || static_cast<std::size_t>(rows[i]) >= sa.rows) {
                throw Error(fmt::format("linear_add_rows: row {} at position {} is outside the {} "
                                        "rows of addend {}",
                                        rows[i], i, sa.rows, sa));
            }
        }
    } else if (first_row + sx.rows > sa.rows) {
        throw Error(fmt::format("linear_add_rows: rows [{}, {}) are outside the {} rows of addend "
                                "{}",
                                first_row, first_row + sx.rows, sa.rows, sa));
    }
    const NodeId id =
        bias.valid() ? tape.record("linear_add_rows", {x, weight, addend, bias}, sx.rows, sw.rows)
                     : tape.record("linear_add_rows", {x, weight, addend}, sx.rows, sw.rows);
    Node<T>& node = tape.node(id);
    if (rows != nullptr) {
        std::int32_t* saved = tape.allocate_indices(sx.rows);
        std::copy(rows, rows + sx.rows, saved);
        node.indices = saved;
    }
    node.integers[0] = static_cast<std::int64_t>(first_row);
    const std::int32_t* picked = node.indices;
    const View<T> y = node.value;
    const View<const T> a = addend.value();
    const View<const T> b = bias.valid() ? bias.value() : View<const T>{};
    kernels::for_each_piece(
        y.rows, y.cols, cheap_grain, [&](std::size_t r, std::size_t c0, std::size_t c1) {
            const T* source =
                a.row(picked != nullptr ? static_cast<std::size_t>(picked[r]) : first_row + r);
            T* out = y.row(r);
            if (b.data == nullptr) {
                std::copy(source + c0, source + c1, out + c0);
                return;
            }
            for (std::size_t c = c0; c < c1; ++c) {
                out[c] = source[c] + b.data[c];
            }
        });
    multiply_by_weight<T>(tape, x.value(), weight.id(), true, y, T(1));
    return finish<T>(tape, id, [](Tape<T>& tape, NodeId self) {
        const Node<T>& y = tape.node(self);
        const auto in = tape.inputs(self);
        const View<const T> dy = y.grad; // (n, out)
        linear_backward<T>(tape, self, dy, in[0], in[1], in.size() == 4 ? in[3] : no_node);
        if (tape.node(in[2]).requires_grad) {
            const auto first_row = static_cast<std::size_t>(y.integers[0]);
            kernels::scatter_add_rows<T>(tape.grad_for_update(in[2]), dy, [&](std::size_t i) {
                return y.indices != nullptr ? static_cast<std::size_t>(y.indices[i])
                                            : first_row + i;
            }); // da[rows[i]] += dY[i]
        }
    });
}

} // namespace

template <class T>
Var<T> linear_add_rows(const Var<T>& x, const Var<T>& weight, const Var<T>& bias,
                       const Var<T>& addend, std::span<const std::int32_t> rows) {
    if (rows.size() != x.shape().rows) {
        throw Error(fmt::format("linear_add_rows: {} rows given for an input of shape {}",
                                rows.size(), x.shape()));
    }
    return linear_add_rows_impl(x, weight, bias, addend, rows.data(), 0);
}

template <class T>
Var<T> linear_add_rows(const Var<T>& x, const Var<T>& weight, const Var<T>& bias,
                       const Var<T>& addend, std::size_t first_row) {
    return linear_add_rows_impl(x, weight, bias, addend, nullptr, first_row);
}

template <class T>
Var<T> linear_add_rows_in_place(const Var<T>& x, const Var<T>& weight, const Var<T>& bias,
                                const Var<T>& addend, std::size_t first_row) {
    Tape<T>& tape = checked_add_rows_tape("linear_add_rows_in_place", x, weight, bias, addend);
    const Var<T> with_bias[] = {x, weight, addend, bias};
    const std::span<const Var<T>> inputs(with_bias, bias.valid() ? 4 : 3);
    const NodeId id = tape.record_rows_in_place("linear_add_rows_in_place", inputs, addend.id(),
                                                first_row, x.shape().rows);
    const View<T> y = tape.node(id).value;
    if (bias.valid()) {
        const View<const T> b = bias.value();
        kernels::for_each_piece(y.rows, y.cols, cheap_grain,
                                [&](std::size_t r, std::size_t c0, std::size_t c1) {
                                    T* out = y.row(r);
                                    for (std::size_t c = c0; c < c1; ++c) {
                                        out[c] += b.data[c];
                                    }
                                });
    }
    multiply_by_weight<T>(tape, x.value(), weight.id(), true, y, T(1));
    return finish<T>(tape, id, [](Tape<T>& tape, NodeId self) {
        const auto in = tape.inputs(self);
        // dy is the addend's gradient rows already: nothing to scatter.
        linear_backward<T>(tape, self, tape.node(self).grad, in[0], in[1],
                           in.size() == 4 ? in[3] : no_node);
    });
}

#define CELLGRAD_INSTANTIATE(T)                                                                    \
    template Var<T> matmul(const Var<T>&, const Var<T>&, bool, bool);                              \
    template Var<T> linear(const Var<T>&, const Var<T>&, const Var<T>&);                           \
    template Var<T> linear_add_rows(const Var<T>&, const Var<T>&, const Var<T>&, const Var<T>&,    \
                                    std::span<const std::int32_t>);                                \
    template Var<T> linear_add_rows(const Var<T>&, const Var<T>&, const Var<T>&, const Var<T>&,    \
                                    std::size_t);                                                  \
    template Var<T> linear_add_rows_in_place(const Var<T>&, const Var<T>&, const Var<T>&,          \
                                             const Var<T>&, std::size_t);
CELLGRAD_INSTANTIATE(float)
CELLGRAD_INSTANTIATE(double)
#undef CELLGRAD_INSTANTIATE

} // namespace cellgrad
