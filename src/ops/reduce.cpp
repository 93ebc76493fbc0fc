// Reductions: sum and mean over everything or one axis.

#include "support.hpp"

namespace cellgrad {

using namespace op_support;

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

#define CELLGRAD_INSTANTIATE(T)                                                                    \
    template Var<T> sum(const Var<T>&);                                                            \
    template Var<T> sum(const Var<T>&, int);                                                       \
    template Var<T> mean(const Var<T>&);                                                           \
    template Var<T> mean(const Var<T>&, int);
CELLGRAD_INSTANTIATE(float)
CELLGRAD_INSTANTIATE(double)
#undef CELLGRAD_INSTANTIATE

} // namespace cellgrad
