// What the op families share: operand checks, recording helpers and backward accumulators.
// Private to src/ops/; every function here is inline or a template.
#pragma once

#include <cmath>
#include <limits>

#include "../kernels.hpp"
#include "cellgrad/ops.hpp"

namespace cellgrad::op_support {

using kernels::accumulate_reduced;
using kernels::operand;

template <class T>
Tape<T>& shared_tape(const char* op, const Var<T>& a, const Var<T>& b) {
    Tape<T>& tape = a.tape();
    if (&b.tape() != &tape) {
        throw Error(fmt::format("{}: the two operands belong to different tapes", op));
    }
    return tape;
}

inline Shape broadcast_shape(const char* op, Shape a, Shape b) {
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

inline void check_axis(const char* op, int axis, Shape shape) {
    if (axis != 0 && axis != 1) {
        throw Error(fmt::format("{}: axis must be 0 (over rows) or 1 (over columns), got {} for "
                                "input {}",
                                op, axis, shape));
    }
}

} // namespace cellgrad::op_support
