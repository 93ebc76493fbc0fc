#include "weight_products.hpp"

#include <algorithm>

#include "../kernels.hpp"
#include "../packed_gemm.hpp"

namespace cellgrad {

template <class T>
const T* WeightProducts<T>::packed_copy(NodeId weight, bool transposed) const {
    for (const auto& [id, copies] : packed_) {
        if (id == weight) {
            return copies[transposed ? 1 : 0];
        }
    }
    return nullptr;
}

template <class T>
const T* WeightProducts<T>::packed(Tape<T>& tape, NodeId weight, bool transposed) {
    if constexpr (!std::is_same_v<T, float>) {
        throw Error(fmt::format("packed_value: node {} is not float; the packed-weight GEMM is "
                                "float only",
                                tape.describe(weight)));
    } else {
        auto entry = std::find_if(packed_.begin(), packed_.end(),
                                  [&](const auto& item) { return item.first == weight; });
        if (entry == packed_.end()) {
            packed_.push_back({weight, {nullptr, nullptr}});
            entry = packed_.end() - 1;
        }
        const T*& slot = entry->second[transposed ? 1 : 0];
        if (slot == nullptr) {
            const View<const T> value = tape.node(weight).value;
            const std::size_t k = transposed ? value.cols : value.rows;
            const std::size_t n = transposed ? value.rows : value.cols;
            T* buffer = tape.allocate(1, kernels::packed_size(k, n)).data;
            kernels::pack_right_operand(value, transposed, buffer);
            slot = buffer;
        }
        return slot;
    }
}

template <class T>
std::size_t WeightProducts<T>::budget_rows(Shape dw) {
    return std::max<std::size_t>(1, stack_budget_bytes / ((dw.rows + dw.cols) * sizeof(T)));
}

template <class T>
void WeightProducts<T>::defer(Tape<T>& tape, NodeId weight, NodeId dy_node, View<const T> dy,
                              View<const T> x) {
    tape.notify_when_reached(weight);
    // A full chunk is summed now, so that its dy buffers can serve earlier nodes' gradients: the
    // same chunks, in the same order, as summing everything when `weight` is reached.
    const std::size_t queued = queued_rows(weight);
    if (queued > 0 && queued + dy.rows > budget_rows(tape.node(weight).value.shape())) {
        sum_queued(tape, weight);
    }
    tape.hold_gradient(dy_node);
    deferred_.push_back({weight, dy_node, dy, x});
    queued_rows(weight) += dy.rows;
}

template <class T>
std::size_t& WeightProducts<T>::queued_rows(NodeId weight) {
    for (auto& [id, rows] : queued_rows_) {
        if (id == weight) {
            return rows;
        }
    }
    return queued_rows_.emplace_back(weight, 0).second;
}

template <class T>
void WeightProducts<T>::reached(Tape<T>& tape, NodeId weight) {
    sum_queued(tape, weight);
}

template <class T>
void WeightProducts<T>::sum_queued(Tape<T>& tape, NodeId weight) {
    std::vector<DeferredProduct> pieces;
    std::erase_if(deferred_, [&](const DeferredProduct& product) {
        if (product.weight != weight) {
            return false;
        }
        pieces.push_back(product);
        return true;
    });
    queued_rows(weight) = 0;
    if (pieces.empty()) {
        return;
    }
    bool fresh = false;
    const View<T> dw = tape.grad_for_overwrite(weight, fresh);
    T beta = fresh ? T(0) : T(1);
    // Chunks [first, last) of pieces whose stacked rows fit the budget (at least one piece each):
    // dW += [dy_first; ...]^T [x_first; ...] as one GEMM per chunk.
    const std::size_t budget = budget_rows(dw.shape());
    for (std::size_t first = 0, last = 0; first < pieces.size(); first = last, beta = T(1)) {
        std::size_t rows = pieces[first].dy.rows;
        for (last = first + 1; last < pieces.size() && rows + pieces[last].dy.rows <= budget;
             ++last) {
            rows += pieces[last].dy.rows;
        }
        if (last == first + 1) {
            kernels::gemm<T>(pieces[first].dy, true, pieces[first].x, false, dw, T(1), beta);
            continue;
        }
        // Stacked in time order, the reverse of the queue's: piece `last - 1` first. The gate
        // gradients of consecutive steps are often consecutive rows of one buffer (the rows of
        // the input projection's gradient), and then dy_all is a view of them, not a copy.
        std::vector<std::size_t> first_row(last - first, 0); // stacked row of piece first + i
        bool dy_consecutive = true;
        for (std::size_t i = last - 1, row = 0; i + 1 > first; --i) {
            first_row[i - first] = row;
            row += pieces[i].dy.rows;
            if (i + 1 < last) {
                const View<const T>& above = pieces[i + 1].dy;
                dy_consecutive = dy_consecutive && pieces[i].dy.stride == above.stride &&
                                 pieces[i].dy.data == above.data + above.rows * above.stride;
            }
        }
        stack_.resize(std::max(stack_.size(), rows * (dw.rows + dw.cols)));
        const View<const T> dy_all =
            dy_consecutive
                ? View<const T>{pieces[last - 1].dy.data, rows, dw.rows, pieces[last - 1].dy.stride}
                : View<const T>{stack_.data(), rows, dw.rows, dw.rows};
        const View<T> x_all{stack_.data() + rows * dw.rows, rows, dw.cols, dw.cols};
        parallel_chunks(last - first, 1, [&](std::size_t begin, std::size_t end) {
            for (std::size_t i = begin; i < end; ++i) {
                const DeferredProduct& piece = pieces[first + i];
                const std::size_t piece_rows = piece.dy.rows;
                if (!dy_consecutive) {
                    copy<T>(piece.dy,
                            {stack_.data() + first_row[i] * dw.rows, piece_rows, dw.rows, dw.rows});
                }
                copy<T>(piece.x, {x_all.row(first_row[i]), piece_rows, dw.cols, dw.cols});
            }
        });
        kernels::gemm<T>(dy_all, true, x_all, false, dw, T(1), beta);
    }
    for (const DeferredProduct& piece : pieces) {
        tape.drop_gradient_hold(piece.dy_node);
    }
    if (anomaly_detection() && !all_finite<T>(dw)) {
        throw Error(fmt::format("anomaly: the weight gradient of {} summed over {} uses has a NaN "
                                "or Inf (shape {})",
                                tape.describe(weight), pieces.size(), dw.shape()));
    }
}

template class WeightProducts<float>;
template class WeightProducts<double>;

} // namespace cellgrad
