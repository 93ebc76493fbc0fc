// Losses and regularisers: cross-entropy over class indices, dropout.

#include "support.hpp"

namespace cellgrad {

using namespace op_support;

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
    template Var<T> cross_entropy(const Var<T>&, std::span<const std::int32_t>,                    \
                                  std::span<const T>, Reduction);                                  \
    template Var<T> dropout(const Var<T>&, double, std::mt19937_64&);
CELLGRAD_INSTANTIATE(float)
CELLGRAD_INSTANTIATE(double)
#undef CELLGRAD_INSTANTIATE

} // namespace cellgrad
