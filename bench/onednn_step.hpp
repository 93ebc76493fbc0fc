// The oneDNN side of bench_training behind a dnnl-free interface: the same whole training step
// with the recurrent layer as oneDNN's fused RNN primitives (forward_training + backward with a
// workspace). Built only when CMake finds oneDNN (CELLGRAD_BENCH_WITH_ONEDNN).
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "training_step.hpp"

namespace bench {

/// The oneDNN step: embedding gather, the layer as oneDNN's lstm / lbr_gru / vanilla_rnn
/// (tanh) primitive, decoder GEMMs (dnnl_sgemm), mean cross-entropy, their backward, SGD. The
/// weights live in the primitives' own layouts (reordered once at construction); weight-gradient
/// reorders happen inside step().
class OnednnStep : public TrainingStep {
  public:
    /// Forward and backward without the SGD update; returns the loss. Gradients are then
    /// readable with gradients().
    virtual double loss_and_gradients() = 0;
    /// The gradients of the last loss_and_gradients() or step() (PyTorch layouts).
    virtual ModelTensors gradients() const = 0;
    /// Bytes of the RNN workspace (what forward_training keeps for backward).
    virtual std::size_t workspace_bytes() const = 0;
    /// Bytes of every buffer the step owns: weights in both layouts, gradients, activations,
    /// logits, workspace.
    virtual std::size_t owned_bytes() const = 0;
    /// The implementations oneDNN chose: "forward <impl>, backward <impl>", plus whether the
    /// weights needed a per-step reorder between the forward and backward layouts.
    virtual std::string implementation() const = 0;
};

/// The oneDNN step for `shape` ("lstm", "gru" = linear-before-reset GRU, "rnn" = tanh) on
/// time-major token ids, with initial values `init` (PyTorch layouts, see ModelTensors in
/// training_step.hpp) or, when `init` is null, PyTorch's init drawn from `seed`.
std::unique_ptr<OnednnStep> make_onednn_step(const StepShape& shape,
                                             const std::vector<std::int32_t>& inputs,
                                             const std::vector<std::int32_t>& targets, double lr,
                                             const ModelTensors* init, std::uint64_t seed);

/// True when oneDNN has a fused primitive for the cell (lstm, gru, rnn).
bool onednn_supports(const std::string& cell);

/// Sets the OpenMP thread count oneDNN runs on (omp_set_num_threads).
void set_onednn_threads(int threads);

/// "oneDNN <version> (<runtime>), ISA <effective ISA>", for the report header.
std::string onednn_description();

} // namespace bench
