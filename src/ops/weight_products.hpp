// The GEMM layer's state on a tape: weights packed once per pass for the packed-weight GEMM, and
// weight-gradient products queued until the reverse pass has seen every use of the weight. It
// lives beside the nodes as a TapeExtension, so the tape itself knows nothing of GEMMs.
#pragma once

#include <array>
#include <utility>
#include <vector>

#include "cellgrad/tape.hpp"

namespace cellgrad {

/// Packed weights and deferred weight gradients of one tape (see Tape::extension).
template <class T>
class WeightProducts : public TapeExtension<T> {
  public:
    /// Node `weight`'s value packed as the right operand of the packed-weight GEMM (value^T when
    /// `transposed`), made on first request and kept until clear(); float tapes with
    /// packed_weight_gemm_active() only. The value must not change while the tape holds it.
    const T* packed(Tape<T>& tape, NodeId weight, bool transposed);
    /// The packed copy made so far, or null (for tests).
    const T* packed_copy(NodeId weight, bool transposed) const;
    /// Queues dW += dy^T x for node `weight`, dy being node `dy_node`'s gradient (held on the
    /// tape until summed). The queued products of a weight are summed as GEMMs over their
    /// stacked rows, a chunk of at most `stack_budget_bytes` as soon as it is full and the rest
    /// when the reverse pass reaches `weight` (after every node that uses it): T per-step (B, in)
    /// products of a recurrent weight become a few GEMMs of many rows each. x must stay unchanged
    /// until then.
    void defer(Tape<T>& tape, NodeId weight, NodeId dy_node, View<const T> dy, View<const T> x);

    /// Most bytes of stacked dy and x rows one GEMM of reached() reads (the stacking buffer's
    /// size): whole-sequence stacking held 131 MB at T = 100, B = 64, H = 1024.
    static constexpr std::size_t stack_budget_bytes = std::size_t(2) << 20;

    void begin_backward(Tape<T>&) override {
        deferred_.clear();
        queued_rows_.clear();
    }
    std::size_t bytes() const override { return stack_.capacity() * sizeof(T); }
    void reached(Tape<T>& tape, NodeId id) override;
    void clear() override {
        deferred_.clear();
        queued_rows_.clear();
        packed_.clear();
    }

  private:
    /// One queued product dW += dy^T x.
    struct DeferredProduct {
        NodeId weight;
        NodeId dy_node;
        View<const T> dy;
        View<const T> x;
    };
    /// Sums (and removes) the queued products of `weight` into its gradient, one GEMM per chunk.
    void sum_queued(Tape<T>& tape, NodeId weight);
    /// Rows of stacked dy and x that fit the budget for a gradient of shape dw.
    static std::size_t budget_rows(Shape dw);
    /// The queued dy rows of `weight` (an entry per weight with queued products).
    std::size_t& queued_rows(NodeId weight);
    std::vector<DeferredProduct> deferred_;
    std::vector<std::pair<NodeId, std::size_t>> queued_rows_; ///< rows per weight in deferred_
    std::vector<T> stack_; ///< stacked rows of one chunk, kept from pass to pass
    std::vector<std::pair<NodeId, std::array<const T*, 2>>> packed_;
};

} // namespace cellgrad
