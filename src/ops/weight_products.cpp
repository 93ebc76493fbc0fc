#include "weight_products.hpp"

#include <algorithm>
#include <utility>

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

namespace {

/// True when view `next` continues view `top` upwards: same width and stride, its last row
/// directly above top's first.
template <class T>
bool directly_above(const View<const T>& next, const View<const T>& top) {
    return next.cols == top.cols && next.stride == top.stride &&
           next.data + next.rows * next.stride == top.data;
}

} // namespace

template <class T>
typename WeightProducts<T>::Chunk
WeightProducts<T>::Chunk::joined(const DeferredProduct& next) const {
    Chunk out = *this;
    if (rows > 0) { // one product alone is a GEMM of its own views
        out.dy_in_place = dy_in_place && directly_above(next.dy, dy_top);
        out.x_in_place = x_in_place && directly_above(next.x, x_top);
    }
    out.rows = rows + next.dy.rows;
    out.dy_top = next.dy;
    out.x_top = next.x;
    return out;
}

template <class T>
std::size_t WeightProducts<T>::Chunk::copied_bytes(Shape dw) const {
    return rows * ((dy_in_place ? 0 : dw.rows) + (x_in_place ? 0 : dw.cols)) * sizeof(T);
}

template <class T>
void WeightProducts<T>::defer(Tape<T>& tape, NodeId weight, NodeId dy_node, View<const T> dy,
                              View<const T> x) {
    tape.notify_when_reached(weight);
    // The open chunk is summed as soon as this product would make it copy more than the budget,
    // so that its dy buffers can serve earlier nodes' gradients; the queued products of a weight
    // are therefore always one chunk.
    const DeferredProduct product{weight, dy_node, dy, x};
    if (open_chunk(weight).joined(product).copied_bytes(tape.node(weight).value.shape()) >
        stack_budget_bytes) {
        sum_queued(tape, weight);
    }
    tape.hold_gradient(dy_node);
    deferred_.push_back(product);
    Chunk& chunk = open_chunk(weight);
    chunk = chunk.joined(product);
}

template <class T>
typename WeightProducts<T>::Chunk& WeightProducts<T>::open_chunk(NodeId weight) {
    for (auto& [id, chunk] : open_chunks_) {
        if (id == weight) {
            return chunk;
        }
    }
    return open_chunks_.emplace_back(weight, Chunk{}).second;
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
    const Chunk chunk = std::exchange(open_chunk(weight), Chunk{});
    if (pieces.empty()) {
        return;
    }
    bool fresh = false;
    const View<T> dw = tape.grad_for_overwrite(weight, fresh);
    // dW += [dy_last; ...; dy_first]^T [x_last; ...; x_first]: the pieces stacked in time order,
    // the reverse of the queue's. The gate gradients of consecutive steps are often consecutive
    // rows of one buffer (the rows of the input projection's gradient), as are a layer's inputs:
    // such rows are read in place. Counting only the copied rows in the budget let a large
    // LSTM's W_hh gradient run as 13 GEMMs of 512 rows instead of 100 of 64 (docs/performance.md).
    const std::size_t rows = chunk.rows;
    const std::size_t dy_copied = chunk.dy_in_place ? 0 : rows * dw.rows;
    const std::size_t x_copied = chunk.x_in_place ? 0 : rows * dw.cols;
    stack_.resize(std::max(stack_.size(), dy_copied + x_copied));
    const View<const T> dy_all =
        chunk.dy_in_place ? View<const T>{chunk.dy_top.data, rows, dw.rows, chunk.dy_top.stride}
                          : View<const T>{stack_.data(), rows, dw.rows, dw.rows};
    const View<const T> x_all =
        chunk.x_in_place ? View<const T>{chunk.x_top.data, rows, dw.cols, chunk.x_top.stride}
                         : View<const T>{stack_.data() + dy_copied, rows, dw.cols, dw.cols};
    if (dy_copied + x_copied > 0) {
        std::vector<std::size_t> stacked_row(pieces.size(), 0); // stacked row of piece i
        for (std::size_t i = pieces.size(), row = 0; i-- > 0;) {
            stacked_row[i] = row;
            row += pieces[i].dy.rows;
        }
        parallel_chunks(pieces.size(), 1, [&](std::size_t begin, std::size_t end) {
            for (std::size_t i = begin; i < end; ++i) {
                const DeferredProduct& piece = pieces[i];
                const std::size_t row = stacked_row[i];
                if (!chunk.dy_in_place) {
                    copy<T>(piece.dy,
                            {stack_.data() + row * dw.rows, piece.dy.rows, dw.rows, dw.rows});
                }
                if (!chunk.x_in_place) {
                    copy<T>(piece.x, {stack_.data() + dy_copied + row * dw.cols, piece.x.rows,
                                      dw.cols, dw.cols});
                }
            }
        });
    }
    kernels::gemm<T>(dy_all, true, x_all, false, dw, T(1), fresh ? T(0) : T(1));
    counts_.gemms += 1;
    counts_.dy_rows_in_place += chunk.dy_in_place ? rows : 0;
    counts_.x_rows_in_place += chunk.x_in_place ? rows : 0;
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
