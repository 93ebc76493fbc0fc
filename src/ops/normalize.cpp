// Row normalisation: the primitive under layer normalisation (the gains and biases are per-unit
// operands of the pointwise node that follows).

#include "support.hpp"

namespace cellgrad {

using namespace op_support;

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
            const T* in = xv.row(r);
            double mean = 0, square = 0; // in double: a float sum of squares loses the variance
            for (std::size_t c = 0; c < shape.cols; ++c) {
                mean += double(in[c]);
            }
            mean /= double(shape.cols);
            for (std::size_t c = 0; c < shape.cols; ++c) {
                square += (double(in[c]) - mean) * (double(in[c]) - mean);
            }
            const double inverse = 1.0 / std::sqrt(square / double(shape.cols) + eps);
            inverse_deviation(r, 0) = static_cast<T>(inverse);
            T* out = y.row(r);
            for (std::size_t c = 0; c < shape.cols; ++c) {
                out[c] = static_cast<T>((double(in[c]) - mean) * inverse);
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
                double mean_dy = 0, mean_dy_y = 0;
                for (std::size_t c = 0; c < cols; ++c) {
                    mean_dy += double(dy(r, c));
                    mean_dy_y += double(dy(r, c)) * double(y(r, c));
                }
                mean_dy /= double(cols);
                mean_dy_y /= double(cols);
                const double inverse = double(inverse_deviation(r, 0));
                T* g = dx.row(r);
                for (std::size_t c = 0; c < cols; ++c) {
                    g[c] += static_cast<T>((double(dy(r, c)) - mean_dy - double(y(r, c)) * mean_dy_y) *
                                           inverse);
                }
            }
        });
    });
}

template Var<float> normalize_rows(const Var<float>&, double);
template Var<double> normalize_rows(const Var<double>&, double);

} // namespace cellgrad
