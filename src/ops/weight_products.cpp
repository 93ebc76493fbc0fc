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
void WeightProducts<T>::defer(Tape<T>& tape, NodeId weight, View<const T> dy, View<const T> x) {
    tape.notify_when_reached(weight);
    deferred_.push_back({weight, dy, x});
}

template <class T>
void WeightProducts<T>::reached(Tape<T>& tape, NodeId weight) {
    std::vector<DeferredProduct> pieces;
    std::erase_if(deferred_, [&](const DeferredProduct& product) {
        if (product.weight != weight) {
            return false;
        }
        pieces.push_back(product);
        return true;
    });
    if (pieces.empty()) {
        return;
    }
    bool fresh = false;
    const View<T> dw = tape.grad_for_overwrite(weight, fresh);
    const T beta = fresh ? T(0) : T(1);
    if (pieces.size() == 1) {
        kernels::gemm<T>(pieces[0].dy, true, pieces[0].x, false, dw, T(1), beta);
    } else {
        // Stack the pieces' rows and sum them in one GEMM: dW = [dy_1; ...; dy_n]^T [x_1; ...].
        std::vector<std::size_t> first_row(pieces.size() + 1, 0);
        for (std::size_t i = 0; i < pieces.size(); ++i) {
            first_row[i + 1] = first_row[i] + pieces[i].dy.rows;
        }
        const View<T> dy_all = tape.allocate(first_row.back(), dw.rows);
        const View<T> x_all = tape.allocate(first_row.back(), dw.cols);
        parallel_chunks(pieces.size(), 1, [&](std::size_t begin, std::size_t end) {
            for (std::size_t i = begin; i < end; ++i) {
                const std::size_t rows = pieces[i].dy.rows;
                copy<T>(pieces[i].dy, {dy_all.row(first_row[i]), rows, dy_all.cols, dy_all.cols});
                copy<T>(pieces[i].x, {x_all.row(first_row[i]), rows, x_all.cols, x_all.cols});
            }
        });
        kernels::gemm<T>(dy_all, true, x_all, false, dw, T(1), beta);
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
