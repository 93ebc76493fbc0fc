// Row normalisation: the primitive under layer normalisation (the gains and biases are per-unit
// operands of the pointwise node that follows).

#include "support.hpp"

namespace cellgrad {

using namespace op_support;

namespace {

/// Sum of a[c] for c < n in 16 interleaved partial sums added in a fixed order at the end: the
/// same bits on every run, vectorised without reassociating.
template <class T>
T lane_sum(const T* a, std::size_t n) {
    constexpr std::size_t lanes = 16;
    T partial[lanes] = {};
    std::size_t c = 0;
    for (; c + lanes <= n; c += lanes) {
        for (std::size_t l = 0; l < lanes; ++l) {
            partial[l] += a[c + l];
        }
    }
    T total = 0;
    for (std::size_t l = 0; l < lanes; ++l) {
        total += partial[l];
    }
    for (; c < n; ++c) {
        total += a[c];
    }
    return total;
}

/// Sum of a[c] * b[c] for c < n, the same way.
template <class T>
T lane_dot(const T* a, const T* b, std::size_t n) {
    constexpr std::size_t lanes = 16;
    T partial[lanes] = {};
    std::size_t c = 0;
    for (; c + lanes <= n; c += lanes) {
        for (std::size_t l = 0; l < lanes; ++l) {
            partial[l] += a[c + l] * b[c + l];
        }
    }
    T total = 0;
    for (std::size_t l = 0; l < lanes; ++l) {
        total += partial[l];
    }
    for (; c < n; ++c) {
        total += a[c] * b[c];
    }
    return total;
}

} // namespace

template <class T>
Var<T> normalize_rows(const Var<T>& x, double eps) {
    Tape<T>& tape = x.tape();
    const Shape shape = x.shape();
    if (shape.cols < 2 || !(eps > 0.0)) {
        throw Error(fmt::format("normalize_rows: needs at least 2 columns and eps > 0, got {} "
                                "and eps {}",
                                shape, eps));
    }
    const NodeId id = tape.record("normalize_rows", {x}, shape.rows, shape.cols);
    const View<T> y = tape.node(id).value;
    const View<T> inverse_deviation = tape.allocate(shape.rows, 1); // 1 / sqrt(var + eps)
    const View<const T> xv = x.value();
    const std::size_t rows_per_task = std::max<std::size_t>(1, cheap_grain / shape.cols);
    parallel_chunks(shape.rows, rows_per_task, [&](std::size_t first, std::size_t last) {
        for (std::size_t r = first; r < last; ++r) {
            // Two passes (mean, then the mean square of the centred values) keep the variance
            // accurate in the node's own precision.
            const T* in = xv.row(r);
            T* out = y.row(r);
            const T mean = lane_sum<T>(in, shape.cols) / static_cast<T>(shape.cols);
            for (std::size_t c = 0; c < shape.cols; ++c) {
                out[c] = in[c] - mean;
            }
            const T square = lane_dot<T>(out, out, shape.cols);
            const T inverse =
                T(1) / std::sqrt(square / static_cast<T>(shape.cols) + static_cast<T>(eps));
            inverse_deviation(r, 0) = inverse;
            for (std::size_t c = 0; c < shape.cols; ++c) {
                out[c] *= inverse;
            }
        }
    });
    tape.node(id).saved = inverse_deviation;
    return finish<T>(tape, id, [](Tape<T>& tape, NodeId self) {
        const Node<T>& node = tape.node(self);
        const View<const T> y = node.value;
        const View<const T> dy = node.grad;
        const View<const T> inverse_deviation = node.saved;
        const View<T> dx = tape.grad_for_update(tape.inputs(self)[0]);
        const std::size_t cols = y.cols;
        const std::size_t rows_per_task = std::max<std::size_t>(1, cheap_grain / cols);
        parallel_chunks(y.rows, rows_per_task, [&](std::size_t first, std::size_t last) {
            for (std::size_t r = first; r < last; ++r) {
                const T* g = dy.row(r);
                const T* out = y.row(r);
                const T mean_dy = lane_sum<T>(g, cols) / static_cast<T>(cols);
                const T mean_dy_y = lane_dot<T>(g, out, cols) / static_cast<T>(cols);
                const T inverse = inverse_deviation(r, 0);
                T* d = dx.row(r);
                for (std::size_t c = 0; c < cols; ++c) {
                    d[c] += (g[c] - mean_dy - out[c] * mean_dy_y) * inverse;
                }
            }
        });
    });
}

template Var<float> normalize_rows(const Var<float>&, double);
template Var<double> normalize_rows(const Var<double>&, double);

} // namespace cellgrad
