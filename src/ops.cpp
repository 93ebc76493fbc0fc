#include "cellgrad/ops.hpp"

#include <cmath>
#include <limits>

#include "fast_math.hpp"
#include "kernels.hpp"
#include "packed_gemm.hpp"

namespace cellgrad {

using kernels::accumulate_reduced;
using kernels::operand;

namespace {

template <class T>
Tape<T>& shared_tape(const char* op, const Var<T>& a, const Var<T>& b) {
    Tape<T>& tape = a.tape();
    if (&b.tape() != &tape) {
        throw Error(fmt::format("{}: the two operands belong to different tapes", op));
    }
    return tape;
}

Shape broadcast_shape(const char* op, Shape a, Shape b) {
    auto extent = [&](std::size_t x, std::size_t y) {
        if (x == y || y == 1) {
            return x;
        }
        if (x == 1) {
            return y;
        }
        throw Error(fmt::format("{}: shapes {} and {} do not broadcast; each dimension must "
                                "match or be 1",
                                op, a, b));
    };
    return {extent(a.rows, b.rows), extent(a.cols, b.cols)};
}

template <class T>
Var<T> finish(Tape<T>& tape, NodeId id, BackwardFn<T> backward) {
    tape.set_backward(id, backward);
    tape.check_forward(id);
    return Var<T>(&tape, id);
}

/// Records a broadcasting binary op computing f(a, b).
template <class T, class F>
Var<T> binary_op(const char* op, const Var<T>& a, const Var<T>& b, const F& f,
                 BackwardFn<T> backward) {
    Tape<T>& tape = shared_tape(op, a, b);
    const Shape out = broadcast_shape(op, a.shape(), b.shape());
    const NodeId id = tape.record(op, {a, b}, out.rows, out.cols);
    kernels::binary_map<T>(a.value(), b.value(), tape.node(id).value, cheap_grain, f);
    return finish(tape, id, backward);
}

/// The pieces a binary backward needs: dy, both operands read at output coordinates.
template <class T>
struct BinaryGrad {
    View<const T> dy;
    Shape out;
    kernels::Operand<T> a;
    kernels::Operand<T> b;
    NodeId a_id;
    NodeId b_id;
    bool a_needs;
    bool b_needs;
};

template <class T>
BinaryGrad<T> binary_grad(Tape<T>& tape, NodeId self) {
    const Node<T>& y = tape.node(self);
    const auto in = tape.inputs(self);
    const Node<T>& a = tape.node(in[0]);
    const Node<T>& b = tape.node(in[1]);
    return {y.grad,
            y.value.shape(),
            operand<T>(a.value, y.value.shape()),
            operand<T>(b.value, y.value.shape()),
            in[0],
            in[1],
            a.requires_grad,
            b.requires_grad};
}

/// Adds contribution(r, c) over `out` into the gradient of `id` (summing broadcast dimensions),
/// writing instead of adding when this is the gradient's first contribution.
template <class T, class Contribution>
void accumulate_into(Tape<T>& tape, NodeId id, Shape out, const Contribution& contribution) {
    bool fresh = false;
    const View<T> target = tape.grad_for_overwrite(id, fresh);
    accumulate_reduced(target, out, cheap_grain, contribution, fresh);
}

/// Records a unary elementwise op y = f(x) with the given grain.
template <class T, class F>
Var<T> unary_op(const char* op, const Var<T>& x, std::size_t grain, const F& f,
                BackwardFn<T> backward) {
    Tape<T>& tape = x.tape();
    const NodeId id = tape.record(op, {x}, x.rows(), x.cols());
    kernels::unary_map<T>(x.value(), tape.node(id).value, grain, f);
    return finish(tape, id, backward);
}

/// dx += g(dy, x, y) elementwise for a unary op (dx = ... on its first contribution).
template <class T, class G>
void unary_backward(Tape<T>& tape, NodeId self, std::size_t grain, const G& g) {
    const Node<T>& y = tape.node(self);
    const NodeId x_id = tape.inputs(self)[0];
    const View<const T> x = tape.node(x_id).value;
    const View<const T> dy = y.grad;
    const View<const T> out = y.value;
    bool fresh = false;
    const View<T> dx = tape.grad_for_overwrite(x_id, fresh);
    kernels::for_each_piece(dx.rows, dx.cols, grain,
                            [&](std::size_t r, std::size_t c0, std::size_t c1) {
                                const T* pdy = dy.row(r);
                                const T* px = x.row(r);
                                const T* py = out.row(r);
                                T* pdx = dx.row(r);
                                if (fresh) {
                                    for (std::size_t c = c0; c < c1; ++c) {
                                        pdx[c] = g(pdy[c], px[c], py[c]);
                                    }
                                } else {
                                    for (std::size_t c = c0; c < c1; ++c) {
                                        pdx[c] += g(pdy[c], px[c], py[c]);
                                    }
                                }
                            });
}

void check_axis(const char* op, int axis, Shape shape) {
    if (axis != 0 && axis != 1) {
        throw Error(fmt::format("{}: axis must be 0 (over rows) or 1 (over columns), got {} for "
                                "input {}",
                                op, axis, shape));
    }
}

} // namespace

// ---- elementwise binary ----------------------------------------------------------------------

template <class T>
Var<T> add(const Var<T>& a, const Var<T>& b) {
    return binary_op<T>(
        "add", a, b, [](T x, T y) { return x + y; },
        [](Tape<T>& tape, NodeId self) {
            const BinaryGrad<T> g = binary_grad(tape, self);
            if (g.a_needs) {
                accumulate_into(tape, g.a_id, g.out,
                                [&](std::size_t r, std::size_t c) { return g.dy(r, c); });
            }
            if (g.b_needs) {
                accumulate_into(tape, g.b_id, g.out,
                                [&](std::size_t r, std::size_t c) { return g.dy(r, c); });
            }
        });
}

template <class T>
Var<T> sub(const Var<T>& a, const Var<T>& b) {
    return binary_op<T>(
        "sub", a, b, [](T x, T y) { return x - y; },
        [](Tape<T>& tape, NodeId self) {
            const BinaryGrad<T> g = binary_grad(tape, self);
            if (g.a_needs) {
                accumulate_into(tape, g.a_id, g.out,
                                [&](std::size_t r, std::size_t c) { return g.dy(r, c); });
            }
            if (g.b_needs) {
                accumulate_into(tape, g.b_id, g.out,
                                [&](std::size_t r, std::size_t c) { return -g.dy(r, c); });
            }
        });
}

template <class T>
Var<T> mul(const Var<T>& a, const Var<T>& b) {
    return binary_op<T>(
        "mul", a, b, [](T x, T y) { return x * y; },
        [](Tape<T>& tape, NodeId self) {
            const BinaryGrad<T> g = binary_grad(tape, self);
            if (g.a_needs) {
                accumulate_into(tape, g.a_id, g.out, [&](std::size_t r, std::size_t c) {
                    return g.dy(r, c) * g.b(r, c);
                });
            }
            if (g.b_needs) {
                accumulate_into(tape, g.b_id, g.out, [&](std::size_t r, std::size_t c) {
                    return g.dy(r, c) * g.a(r, c);
                });
            }
        });
}

template <class T>
Var<T> div(const Var<T>& a, const Var<T>& b) {
    return binary_op<T>(
        "div", a, b, [](T x, T y) { return x / y; },
        [](Tape<T>& tape, NodeId self) {
            const BinaryGrad<T> g = binary_grad(tape, self);
            if (g.a_needs) {
                accumulate_into(tape, g.a_id, g.out, [&](std::size_t r, std::size_t c) {
                    return g.dy(r, c) / g.b(r, c);
                });
            }
            if (g.b_needs) {
                accumulate_into(tape, g.b_id, g.out, [&](std::size_t r, std::size_t c) {
                    const T denominator = g.b(r, c);
                    return -g.dy(r, c) * g.a(r, c) / (denominator * denominator);
                });
            }
        });
}

// ---- elementwise unary -----------------------------------------------------------------------

template <class T>
Var<T> affine(const Var<T>& x, double scale, double offset) {
    const T s = static_cast<T>(scale);
    const T o = static_cast<T>(offset);
    Var<T> y = unary_op<T>(
        "affine", x, cheap_grain, [s, o](T v) { return s * v + o; },
        [](Tape<T>& tape, NodeId self) {
            const T s = static_cast<T>(tape.node(self).scalars[0]);
            unary_backward<T>(tape, self, cheap_grain, [s](T dy, T, T) { return s * dy; });
        });
    y.tape().node(y.id()).scalars[0] = scale;
    y.tape().node(y.id()).scalars[1] = offset;
    return y;
}

template <class T>
Var<T> sigmoid(const Var<T>& x) {
    return unary_op<T>(
        "sigmoid", x, costly_grain, [](T v) { return fast_math::sigmoid<T>(v); },
        [](Tape<T>& tape, NodeId self) {
            unary_backward<T>(tape, self, cheap_grain,
                              [](T dy, T, T y) { return dy * y * (T(1) - y); });
        });
}

template <class T>
Var<T> tanh(const Var<T>& x) {
    return unary_op<T>(
        "tanh", x, costly_grain, [](T v) { return fast_math::tanh<T>(v); },
        [](Tape<T>& tape, NodeId self) {
            unary_backward<T>(tape, self, cheap_grain,
                              [](T dy, T, T y) { return dy * (T(1) - y * y); });
        });
}

template <class T>
Var<T> relu(const Var<T>& x) {
    return unary_op<T>(
        "relu", x, cheap_grain, [](T v) { return v > T(0) ? v : T(0); },
        [](Tape<T>& tape, NodeId self) {
            unary_backward<T>(tape, self, cheap_grain,
                              [](T dy, T x, T) { return x > T(0) ? dy : T(0); });
        });
}

template <class T>
Var<T> exp(const Var<T>& x) {
    return unary_op<T>(
        "exp", x, costly_grain, [](T v) { return fast_math::exp<T>(v); },
        [](Tape<T>& tape, NodeId self) {
            unary_backward<T>(tape, self, cheap_grain, [](T dy, T, T y) { return dy * y; });
        });
}

template <class T>
Var<T> log(const Var<T>& x) {
    return unary_op<T>(
        "log", x, costly_grain, [](T v) { return std::log(v); },
        [](Tape<T>& tape, NodeId self) {
            unary_backward<T>(tape, self, cheap_grain, [](T dy, T x, T) { return dy / x; });
        });
}

// ---- reductions ------------------------------------------------------------------------------

namespace {

/// Records sum (divisor 1) or mean over all elements or one axis (axis -1 = all).
template <class T>
Var<T> reduce(const char* op, const Var<T>& x, int axis, bool average) {
    Tape<T>& tape = x.tape();
    const Shape in = x.shape();
    const Shape out = axis < 0 ? Shape{1, 1} : axis == 0 ? Shape{1, in.cols} : Shape{in.rows, 1};
    const double count = axis < 0    ? double(in.size())
                         : axis == 0 ? double(in.rows)
                                     : double(in.cols);
    const T divisor = average ? static_cast<T>(std::max(count, 1.0)) : T(1);
    const NodeId id = tape.record(op, {x}, out.rows, out.cols);
    const View<T> y = tape.node(id).value;
    std::fill(y.data, y.data + y.size(), T(0));
    const View<const T> xv = x.value();
    accumulate_reduced(y, in, cheap_grain,
                       [&](std::size_t r, std::size_t c) { return xv(r, c) / divisor; });
    tape.node(id).scalars[0] = static_cast<double>(divisor);
    return finish<T>(tape, id, [](Tape<T>& tape, NodeId self) {
        const Node<T>& y = tape.node(self);
        const T divisor = static_cast<T>(y.scalars[0]);
        const NodeId x_id = tape.inputs(self)[0];
        const View<T> dx = tape.grad_for_update(x_id);
        const kernels::Operand<T> dy = operand<T>(y.grad, dx.shape());
        accumulate_reduced(dx, dx.shape(), cheap_grain,
                           [&](std::size_t r, std::size_t c) { return dy(r, c) / divisor; });
    });
}

} // namespace

template <class T>
Var<T> sum(const Var<T>& x) {
    return reduce<T>("sum", x, -1, false);
}

template <class T>
Var<T> sum(const Var<T>& x, int axis) {
    check_axis("sum", axis, x.shape());
    return reduce<T>("sum", x, axis, false);
}

template <class T>
Var<T> mean(const Var<T>& x) {
    return reduce<T>("mean", x, -1, true);
}

template <class T>
Var<T> mean(const Var<T>& x, int axis) {
    check_axis("mean", axis, x.shape());
    return reduce<T>("mean", x, axis, true);
}

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
            kernels::packed_gemm(x, tape.packed_value(weight, transposed), out, beta);
            return;
        }
    }
    kernels::gemm<T>(x, false, w, transposed, out, T(1), beta);
}

/// Backward of y = x W^T + b given dY: dX = dY W; dW += dY^T X, queued so that all uses of W are
/// summed in one GEMM; db += colsum(dY) unless bias is no_node.
template <class T>
void linear_backward(Tape<T>& tape, View<const T> dy, NodeId x, NodeId weight, NodeId bias) {
    if (tape.node(x).requires_grad) {
        bool fresh = false;
        const View<T> dx = tape.grad_for_overwrite(x, fresh);
        multiply_by_weight<T>(tape, dy, weight, false, dx, fresh ? T(0) : T(1)); // dX = dY W
    }
    if (tape.node(weight).requires_grad) {
        tape.defer_weight_gradient(weight, dy, tape.node(x).value); // dW (out, in) += dY^T X
    }
    if (bias != no_node && tape.node(bias).requires_grad) {
        accumulate_into(tape, bias, dy.shape(),
                        [&](std::size_t r, std::size_t c) { return dy(r, c); });
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
        linear_backward<T>(tape, tape.node(self).grad, in[0], in[1],
                           in.size() == 3 ? in[2] : no_node);
    });
}

namespace {

/// linear_add_rows with `rows` (indices into the addend) or, when it is null, first_row + i.
template <class T>
Var<T> linear_add_rows_impl(const Var<T>& x, const Var<T>& weight, const Var<T>& bias,
                            const Var<T>& addend, const std::int32_t* rows, std::size_t first_row) {
    Tape<T>& tape = shared_tape("linear_add_rows", x, weight);
    const Shape sx = x.shape();
    const Shape sw = weight.shape();
    const Shape sa = addend.shape();
    if (&addend.tape() != &tape || (bias.valid() && &bias.tape() != &tape)) {
        throw Error("linear_add_rows: bias or addend belongs to another tape");
    }
    if (sx.cols != sw.cols || sa.cols != sw.rows ||
        (bias.valid() && bias.shape() != Shape{1, sw.rows})) {
        throw Error(fmt::format("linear_add_rows: input {}, weight {}, bias {} and addend {} do "
                                "not fit: needs x (n, in), W (out, in), b (1, out), a (m, out)",
                                sx, sw, bias.valid() ? to_string(bias.shape()) : "none", sa));
    }
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
        linear_backward<T>(tape, dy, in[0], in[1], in.size() == 4 ? in[3] : no_node);
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

// ---- slicing, concatenation, gathering -------------------------------------------------------

template <class T>
Var<T> slice_cols(const Var<T>& x, std::size_t begin, std::size_t end) {
    Tape<T>& tape = x.tape();
    const Shape s = x.shape();
    if (begin > end || end > s.cols) {
        throw Error(fmt::format("slice_cols: range [{}, {}) is outside the {} columns of {}", begin,
                                end, s.cols, s));
    }
    View<T> view = tape.node(x.id()).value;
    view.data += begin;
    view.cols = end - begin;
    const Var<T> inputs[] = {x};
    const NodeId id = tape.record_view("slice_cols", inputs, view);
    tape.node(id).integers[0] = static_cast<std::int64_t>(begin);
    return finish<T>(tape, id, [](Tape<T>& tape, NodeId self) {
        const Node<T>& y = tape.node(self);
        View<T> dx = tape.grad_for_update(tape.inputs(self)[0]);
        dx.data += y.integers[0];
        dx.cols = y.value.cols;
        kernels::add_into<T>(dx, y.grad);
    });
}

template <class T>
Var<T> slice_rows(const Var<T>& x, std::size_t begin, std::size_t end) {
    Tape<T>& tape = x.tape();
    const Shape s = x.shape();
    if (begin > end || end > s.rows) {
        throw Error(fmt::format("slice_rows: range [{}, {}) is outside the {} rows of {}", begin,
                                end, s.rows, s));
    }
    View<T> view = tape.node(x.id()).value;
    view.data += begin * view.stride;
    view.rows = end - begin;
    const Var<T> inputs[] = {x};
    const NodeId id = tape.record_view("slice_rows", inputs, view);
    tape.node(id).integers[0] = static_cast<std::int64_t>(begin);
    return finish<T>(tape, id, [](Tape<T>& tape, NodeId self) {
        const Node<T>& y = tape.node(self);
        View<T> dx = tape.grad_for_update(tape.inputs(self)[0]);
        dx.data += y.integers[0] * dx.stride;
        dx.rows = y.value.rows;
        kernels::add_into<T>(dx, y.grad);
    });
}

namespace {

/// Concatenation along columns (axis 1) or rows (axis 0).
template <class T>
Var<T> concat(const char* op, std::span<const Var<T>> parts, int axis) {
    if (parts.empty()) {
        throw Error(fmt::format("{}: needs at least one input", op));
    }
    Tape<T>& tape = parts[0].tape();
    const Shape first = parts[0].shape();
    Shape out = first;
    for (std::size_t i = 1; i < parts.size(); ++i) {
        const Shape s = parts[i].shape();
        if ((axis == 1 && s.rows != first.rows) || (axis == 0 && s.cols != first.cols)) {
            throw Error(fmt::format("{}: input {} has shape {} but input 0 has {}; all inputs "
                                    "need the same number of {}",
                                    op, i, s, first, axis == 1 ? "rows" : "columns"));
        }
        (axis == 1 ? out.cols : out.rows) += axis == 1 ? s.cols : s.rows;
    }
    const NodeId id = tape.record(op, parts, out.rows, out.cols);
    View<T> target = tape.node(id).value;
    std::size_t offset = 0;
    for (const Var<T>& part : parts) {
        const View<const T> value = part.value();
        View<T> window = target;
        window.rows = value.rows;
        window.cols = value.cols;
        window.data += axis == 1 ? offset : offset * target.stride;
        copy<T>(value, window);
        offset += axis == 1 ? value.cols : value.rows;
    }
    tape.node(id).integers[0] = axis;
    return finish<T>(tape, id, [](Tape<T>& tape, NodeId self) {
        const Node<T>& y = tape.node(self);
        const int axis = static_cast<int>(y.integers[0]);
        std::size_t offset = 0;
        for (const NodeId input : tape.inputs(self)) {
            const Node<T>& part = tape.node(input);
            View<const T> dy = y.grad;
            dy.rows = part.value.rows;
            dy.cols = part.value.cols;
            dy.data += axis == 1 ? offset : offset * dy.stride;
            if (part.requires_grad) {
                bool fresh = false;
                const View<T> dx = tape.grad_for_overwrite(input, fresh);
                kernels::add_into<T>(dx, dy, fresh);
            }
            offset += axis == 1 ? part.value.cols : part.value.rows;
        }
    });
}

} // namespace

template <class T>
Var<T> concat_cols(std::span<const Var<T>> parts) {
    return concat<T>("concat_cols", parts, 1);
}

template <class T>
Var<T> concat_rows(std::span<const Var<T>> parts) {
    return concat<T>("concat_rows", parts, 0);
}

template <class T>
Var<T> gather_rows(const Var<T>& table, std::span<const std::int32_t> indices) {
    Tape<T>& tape = table.tape();
    const Shape s = table.shape();
    for (std::size_t i = 0; i < indices.size(); ++i) {
        if (indices[i] < 0 || static_cast<std::size_t>(indices[i]) >= s.rows) {
            throw Error(fmt::format("gather_rows: index {} at position {} is outside the {} rows "
                                    "of table {}",
                                    indices[i], i, s.rows, s));
        }
    }
    const NodeId id = tape.record("gather_rows", {table}, indices.size(), s.cols);
    std::int32_t* saved = tape.allocate_indices(indices.size());
    std::copy(indices.begin(), indices.end(), saved);
    Node<T>& node = tape.node(id);
    node.indices = saved;
    const View<T> y = node.value;
    const View<const T> t = table.value();
    kernels::for_each_piece(y.rows, y.cols, cheap_grain,
                            [&](std::size_t r, std::size_t c0, std::size_t c1) {
                                const T* source = t.row(static_cast<std::size_t>(saved[r]));
                                std::copy(source + c0, source + c1, y.row(r) + c0);
                            });
    return finish<T>(tape, id, [](Tape<T>& tape, NodeId self) {
        const Node<T>& y = tape.node(self);
        kernels::scatter_add_rows<T>(
            tape.grad_for_update(tape.inputs(self)[0]), y.grad,
            [&](std::size_t i) { return static_cast<std::size_t>(y.indices[i]); }); // dtable
    });
}

// ---- loss ------------------------------------------------------------------------------------

template <class T>
Var<T> cross_entropy(const Var<T>& logits, std::span<const std::int32_t> targets,
                     std::span<const T> mask, Reduction reduction) {
    Tape<T>& tape = logits.tape();
    const Shape s = logits.shape();
    if (targets.size() != s.rows) {
        throw Error(fmt::format("cross_entropy: {} targets for logits {}; needs one target per row",
                                targets.size(), s));
    }
    if (!mask.empty() && mask.size() != s.rows) {
        throw Error(fmt::format("cross_entropy: mask has {} entries for logits {}; needs one per "
                                "row or none",
                                mask.size(), s));
    }
    for (std::size_t i = 0; i < targets.size(); ++i) {
        if (targets[i] < 0 || static_cast<std::size_t>(targets[i]) >= s.cols) {
            throw Error(fmt::format("cross_entropy: target {} at row {} is outside the {} classes "
                                    "of logits {}",
                                    targets[i], i, s.cols, s));
        }
    }
    const NodeId id = tape.record("cross_entropy", {logits}, 1, 1);
    // saved: softmax probabilities (n, V); saved_extra: per-row weight w_i / W (n, 1).
    const View<T> probabilities = tape.allocate(s.rows, s.cols);
    const View<T> weights = tape.allocate(s.rows, 1);
    std::int32_t* saved_targets = tape.allocate_indices(s.rows);
    std::copy(targets.begin(), targets.end(), saved_targets);
    T total_weight = 0;
    for (std::size_t i = 0; i < s.rows; ++i) {
        weights(i, 0) = mask.empty() ? T(1) : mask[i];
        total_weight += weights(i, 0);
    }
    const T normaliser = reduction == Reduction::sum || total_weight == T(0) ? T(1) : total_weight;
    for (std::size_t i = 0; i < s.rows; ++i) {
        weights(i, 0) /= normaliser;
    }
    const View<T> row_losses = tape.allocate(s.rows, 1);
    const View<const T> z = logits.value();
    parallel_chunks(s.rows,
                    std::max<std::size_t>(1, costly_grain / std::max<std::size_t>(s.cols, 1)),
                    [&](std::size_t r0, std::size_t r1) {
                        for (std::size_t r = r0; r < r1; ++r) {
                            const T* zr = z.row(r);
                            T* pr = probabilities.row(r);
                            T largest = -std::numeric_limits<T>::infinity();
                            for (std::size_t c = 0; c < s.cols; ++c) {
                                largest = std::max(largest, zr[c]);
                            }
                            T total = 0;
                            for (std::size_t c = 0; c < s.cols; ++c) {
                                pr[c] = std::exp(zr[c] - largest);
                                total += pr[c];
                            }
                            const T inverse = T(1) / total;
                            for (std::size_t c = 0; c < s.cols; ++c) {
                                pr[c] *= inverse;
                            }
                            const T log_sum = largest + std::log(total);
                            row_losses(r, 0) = weights(r, 0) * (log_sum - zr[saved_targets[r]]);
                        }
                    });
    T loss = 0;
    for (std::size_t r = 0; r < s.rows; ++r) {
        loss += row_losses(r, 0);
    }
    Node<T>& node = tape.node(id);
    node.value(0, 0) = loss;
    node.saved = probabilities;
    node.saved_extra = weights;
    node.indices = saved_targets;
    return finish<T>(tape, id, [](Tape<T>& tape, NodeId self) {
        const Node<T>& y = tape.node(self);
        const T dy = y.grad(0, 0);
        bool fresh = false;
        const View<T> dz = tape.grad_for_overwrite(tape.inputs(self)[0], fresh);
        const View<const T> p = y.saved;
        parallel_chunks(dz.rows,
                        std::max<std::size_t>(1, cheap_grain / std::max<std::size_t>(dz.cols, 1)),
                        [&](std::size_t r0, std::size_t r1) {
                            for (std::size_t r = r0; r < r1; ++r) {
                                const T scale = dy * y.saved_extra(r, 0);
                                T* dzr = dz.row(r);
                                const T* pr = p.row(r);
                                if (fresh) {
                                    for (std::size_t c = 0; c < dz.cols; ++c) {
                                        dzr[c] = scale * pr[c];
                                    }
                                } else {
                                    for (std::size_t c = 0; c < dz.cols; ++c) {
                                        dzr[c] += scale * pr[c];
                                    }
                                }
                                dzr[y.indices[r]] -= scale;
                            }
                        });
    });
}

template <class T>
Var<T> dropout(const Var<T>& x, double p, std::mt19937_64& rng) {
    if (p < 0.0 || p >= 1.0) {
        throw Error(fmt::format("dropout: probability must be in [0, 1), got {}", p));
    }
    if (p == 0.0) {
        return x;
    }
    const Shape s = x.shape();
    Tensor<T> mask(s.rows, s.cols);
    std::bernoulli_distribution keep(1.0 - p);
    const T kept = static_cast<T>(1.0 / (1.0 - p));
    for (std::size_t i = 0; i < mask.size(); ++i) {
        mask.data()[i] = keep(rng) ? kept : T(0);
    }
    return mul(x, x.tape().constant(mask));
}

#define CELLGRAD_INSTANTIATE(T)                                                                    \
    template Var<T> add(const Var<T>&, const Var<T>&);                                             \
    template Var<T> sub(const Var<T>&, const Var<T>&);                                             \
    template Var<T> mul(const Var<T>&, const Var<T>&);                                             \
    template Var<T> div(const Var<T>&, const Var<T>&);                                             \
    template Var<T> affine(const Var<T>&, double, double);                                         \
    template Var<T> sigmoid(const Var<T>&);                                                        \
    template Var<T> tanh(const Var<T>&);                                                           \
    template Var<T> relu(const Var<T>&);                                                           \
    template Var<T> exp(const Var<T>&);                                                            \
    template Var<T> log(const Var<T>&);                                                            \
    template Var<T> sum(const Var<T>&);                                                            \
    template Var<T> sum(const Var<T>&, int);                                                       \
    template Var<T> mean(const Var<T>&);                                                           \
    template Var<T> mean(const Var<T>&, int);                                                      \
    template Var<T> matmul(const Var<T>&, const Var<T>&, bool, bool);                              \
    template Var<T> linear(const Var<T>&, const Var<T>&, const Var<T>&);                           \
    template Var<T> linear_add_rows(const Var<T>&, const Var<T>&, const Var<T>&, const Var<T>&,    \
                                    std::span<const std::int32_t>);                                \
    template Var<T> linear_add_rows(const Var<T>&, const Var<T>&, const Var<T>&, const Var<T>&,    \
                                    std::size_t);                                                  \
    template Var<T> slice_cols(const Var<T>&, std::size_t, std::size_t);                           \
    template Var<T> slice_rows(const Var<T>&, std::size_t, std::size_t);                           \
    template Var<T> concat_cols(std::span<const Var<T>>);                                          \
    template Var<T> concat_rows(std::span<const Var<T>>);                                          \
    template Var<T> gather_rows(const Var<T>&, std::span<const std::int32_t>);                     \
    template Var<T> cross_entropy(const Var<T>&, std::span<const std::int32_t>,                    \
                                  std::span<const T>, Reduction);                                  \
    template Var<T> dropout(const Var<T>&, double, std::mt19937_64&);
CELLGRAD_INSTANTIATE(float)
CELLGRAD_INSTANTIATE(double)
#undef CELLGRAD_INSTANTIATE

} // namespace cellgrad
