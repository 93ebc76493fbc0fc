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
    /// stacked rows, a chunk as soon as stacking it would copy more than `stack_budget_bytes`
    /// and the rest when the reverse pass reaches `weight` (after every node that uses it): T
    /// per-step (B, in) products of a recurrent weight become a few GEMMs of many rows each. Rows
    /// that already lie in time order in one buffer are read in place, not copied. x must stay
    /// unchanged until then.
    void defer(Tape<T>& tape, NodeId weight, NodeId dy_node, View<const T> dy, View<const T> x);

    /// Most bytes of dy and x rows one GEMM of reached() copies into its stacking buffer:
    /// whole-sequence stacking held 131 MB at T = 100, B = 64, H = 1024.
    static constexpr std::size_t stack_budget_bytes = std::size_t(2) << 20;

    /// GEMMs summed since the backward pass began, and the dy and x rows they read in place
    /// (for tests).
    struct SumCounts {
        std::size_t gemms = 0;
        std::size_t dy_rows_in_place = 0;
        std::size_t x_rows_in_place = 0;
    };
    /// See SumCounts.
    SumCounts sum_counts() const { return counts_; }

    void begin_backward(Tape<T>&) override {
        deferred_.clear();
        open_chunks_.clear();
        counts_ = {};
    }
    std::size_t bytes() const override { return stack_.capacity() * sizeof(T); }
    void reached(Tape<T>& tape, NodeId id) override;
    void clear() override {
        deferred_.clear();
        open_chunks_.clear();
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
    /// The queued products of one weight (in queue order, so latest step first), summed as one
    /// GEMM, and whether its dy and x rows each lie in one buffer, every product's directly above
    /// the one queued before it: then the GEMM reads them in place.
    struct Chunk {
        std::size_t rows = 0;
        bool dy_in_place = true;
        bool x_in_place = true;
        View<const T> dy_top; ///< the dy of the product added last (the earliest step)
        View<const T> x_top;  ///< its x
        /// This chunk with `next` added.
        Chunk joined(const DeferredProduct& next) const;
        /// Bytes that stacking the chunk copies for a gradient of shape dw.
        std::size_t copied_bytes(Shape dw) const;
    };
    /// Sums (and removes) the queued products of `weight`, its open chunk, into its gradient as
    /// one GEMM.
    void sum_queued(Tape<T>& tape, NodeId weight);
    /// The open chunk of `weight`'s queued products (an entry per weight with queued products).
    Chunk& open_chunk(NodeId weight);
    std::vector<DeferredProduct> deferred_;
    std::vector<std::pair<NodeId, Chunk>> open_chunks_; ///< per weight: its products in deferred_
    SumCounts counts_;
    std::vector<T> stack_; ///< stacked rows of one chunk, kept from pass to pass
    std::vector<std::pair<NodeId, std::array<const T*, 2>>> packed_;
};

} // namespace cellgrad
