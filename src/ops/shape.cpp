// Shape ops: column and row slices (zero-copy views), concatenation, row gathers.

#include "support.hpp"

namespace cellgrad {

using namespace op_support;

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

template Var<float> slice_cols(const Var<float>&, std::size_t, std::size_t);
template Var<float> slice_rows(const Var<float>&, std::size_t, std::size_t);
template Var<float> concat_cols(std::span<const Var<float>>);
template Var<float> concat_rows(std::span<const Var<float>>);
template Var<float> gather_rows(const Var<float>&, std::span<const std::int32_t>);
template Var<double> slice_cols(const Var<double>&, std::size_t, std::size_t);
template Var<double> slice_rows(const Var<double>&, std::size_t, std::size_t);
template Var<double> concat_cols(std::span<const Var<double>>);
template Var<double> concat_rows(std::span<const Var<double>>);
template Var<double> gather_rows(const Var<double>&, std::span<const std::int32_t>);

} // namespace cellgrad
