// Elementwise ops: add, sub, mul, div (broadcasting), affine, sigmoid, tanh, relu, exp, log.

#include "../fast_math.hpp"
#include "support.hpp"

namespace cellgrad {

using namespace op_support;

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
    template Var<T> log(const Var<T>&);
CELLGRAD_INSTANTIATE(float)
CELLGRAD_INSTANTIATE(double)
#undef CELLGRAD_INSTANTIATE

} // namespace cellgrad
