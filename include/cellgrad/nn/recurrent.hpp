// Sequence layers: stacking, both directions, initial/final states, variable lengths, dropout
// between layers and truncated BPTT, written once for any Cell (including a user's own).
//
// Sequences are time-major and stacked: a (T*B, F) matrix whose rows t*B .. t*B+B-1 hold step t.
// States are indexed [layer * directions + direction][k], k = 0 for h (then c for an LSTM).
#pragma once

#include <functional>
#include <memory>
#include <random>
#include <span>
#include <string>
#include <vector>

#include "cellgrad/nn/cells.hpp"

namespace cellgrad::nn {

/// Shape and options of a sequence layer (PyTorch's names).
struct RecurrentOptions {
    std::size_t input_size = 0;
    std::size_t hidden_size = 0;
    std::size_t num_layers = 1;
    bool bias = true;
    bool bidirectional = false;
    double dropout = 0.0;     ///< between layers, training only
    double forget_bias = 0.0; ///< LSTM only: added to the forget gate's bias_ih at init
    Nonlinearity nonlinearity = Nonlinearity::tanh; ///< plain RNN only
    std::uint64_t dropout_seed = 0;                 ///< seeds the dropout masks
    std::string parameter_prefix{};                 ///< prepended to every parameter name ("rnn.")
    /// Activation checkpointing: 0 (off) keeps every step's graph for backward; k > 0 runs each
    /// layer and direction in segments of k steps that keep only their outputs and last state,
    /// and runs each segment again during backward. Memory grows with the outputs + T/k + k
    /// steps instead of T steps' graphs; gradients match the full graph's (bitwise for
    /// everything but the weights and biases, whose per-segment sums round differently).
    /// Not with lengths; RecurrentOutput::states stays empty. checkpointed_sequence_loss also
    /// puts the loss inside the segments, so that no output stays.
    std::size_t checkpoint_steps = 0;
};

/// States of every layer and direction: [layer * directions + direction][k] (B, H) each.
template <class T>
using RecurrentState = std::vector<std::vector<Var<T>>>;

/// The same as tensors, detached from any tape (what truncated BPTT carries between windows).
template <class T>
using RecurrentStateTensors = std::vector<std::vector<Tensor<T>>>;

/// What a sequence run returns.
template <class T>
struct RecurrentOutput {
    Var<T> output; ///< (T*B, directions*H): top layer, every step, zero past a sequence's end
    std::vector<Var<T>> steps;     ///< the same per step, (B, directions*H)
    RecurrentState<T> final_state; ///< after the last valid step of each sequence
    /// Every state after every step: [layer * directions + direction][t][k]; read .grad() after
    /// backward for dL/dh_t (k = 0) and dL/dc_t (k = 1, LSTM). Empty with checkpoint_steps.
    std::vector<std::vector<std::vector<Var<T>>>> states;
};

/// Makes the cell of one layer and direction; `input_size` is the layer's input width.
template <class T>
using CellFactory = std::function<std::unique_ptr<Cell<T>>(std::size_t input_size,
                                                           std::size_t layer, bool reverse)>;

/// A multi-layer, optionally bidirectional sequence layer over any cell type.
template <class T>
class Recurrent : public Module<T> {
  public:
    /// `kind` names the layer in labels ("lstm" gives "lstm.l1.fwd t=37"); cells come from
    /// `factory`.
    Recurrent(std::string kind, RecurrentOptions options, const CellFactory<T>& factory);

    /// Runs the layer over `input` (T*B, input_size) for a batch of `batch` sequences. When the
    /// input is embedded tokens (gather_rows of a table with fewer rows), the first layer projects
    /// the table's rows instead of the T*B input rows: the same values and gradients.
    /// `initial` (zeros if empty) and `lengths` (all T if empty; padded steps neither change the
    /// state nor get gradient, and their outputs are zero) are optional.
    RecurrentOutput<T> forward(const Var<T>& input, std::size_t batch,
                               const RecurrentState<T>& initial = {},
                               std::span<const std::int32_t> lengths = {});
    /// Dropout between layers is applied only while training (default: true).
    void set_training(bool training) { training_ = training; }
    /// True while training.
    bool training() const { return training_; }
    /// Every cell's parameters, layer by layer, forward direction first.
    std::vector<Parameter<T>*> parameters() override;
    /// The cell of `layer` and direction.
    Cell<T>& cell(std::size_t layer, bool reverse = false);
    /// The options the layer was built with.
    const RecurrentOptions& options() const { return options_; }
    /// Number of directions (1 or 2).
    std::size_t directions() const { return options_.bidirectional ? 2 : 1; }
    /// State tensors per layer and direction (1 or 2).
    std::size_t state_size() const { return cells_.front()->state_size(); }
    /// Zero states for a batch, as tensors.
    RecurrentStateTensors<T> zero_state(std::size_t batch) const;
    /// The dropout generator (its state goes into checkpoints).
    std::mt19937_64& dropout_rng() { return dropout_rng_; }

  private:
    /// forward(): `input` (T*B, input_size), or null with `table` and
    /// `tokens` set.
    RecurrentOutput<T> run(const Var<T>* input, const Var<T>* table,
                           std::span<const std::int32_t> tokens, std::size_t batch,
                           const RecurrentState<T>& initial, std::span<const std::int32_t> lengths);
    std::string kind_;
    RecurrentOptions options_;
    std::vector<std::unique_ptr<Cell<T>>> cells_;
    bool training_ = true;
    std::mt19937_64 dropout_rng_;
};

/// torch.nn.RNN: Elman layers with tanh or relu.
template <class T>
class RNN : public Recurrent<T> {
  public:
    /// Builds the cells with PyTorch's names (weight_ih_l0, ..., _reverse) and init.
    RNN(const RecurrentOptions& options, std::mt19937_64& rng);
};

/// torch.nn.LSTM.
template <class T>
class LSTM : public Recurrent<T> {
  public:
    /// Builds the cells with PyTorch's names (weight_ih_l0, ..., _reverse) and init.
    LSTM(const RecurrentOptions& options, std::mt19937_64& rng);
};

/// torch.nn.GRU.
template <class T>
class GRU : public Recurrent<T> {
  public:
    /// Builds the cells with PyTorch's names (weight_ih_l0, ..., _reverse) and init.
    GRU(const RecurrentOptions& options, std::mt19937_64& rng);
};

/// Parameter-name suffix PyTorch uses for a layer and direction: "_l0", "_l1_reverse".
std::string layer_suffix(std::size_t layer, bool reverse);

/// Copies a state's values out of the tape (the detached carry of truncated BPTT).
template <class T>
RecurrentStateTensors<T> detach_state(const RecurrentState<T>& state);

/// Puts carried state tensors on `tape` as constants (no gradient flows to the previous window).
template <class T>
RecurrentState<T> state_on_tape(Tape<T>& tape, const RecurrentStateTensors<T>& state);

/// Loss of steps [first_step, first_step + steps) of a checkpointed_sequence_loss from their layer
/// outputs (steps*B, H): a (1, 1) Var recorded on the outputs' tape (a scratch tape; make every
/// node from `outputs`, e.g. decoder.forward(outputs)).
template <class T>
using SegmentLoss =
    std::function<Var<T>(const Var<T>& outputs, std::size_t first_step, std::size_t steps)>;

/// Activation checkpointing with the loss inside the segments: runs a one-layer, one-direction
/// `layer` over `input` (T*B, in) from a zero state in segments of `segment_steps` steps, each
/// segment's outputs going straight into `loss`, and returns the sum of the segments' losses,
/// (1, 1). `input`'s tape keeps only the T/k boundary states and the segments' losses; backward
/// runs each segment and its loss again. Memory: the input + T/k states + one segment's graph,
/// instead of T steps' graphs and outputs. Gradients (input, layer, the loss's parameters) equal
/// the full graph's up to float rounding (per-segment sums).
template <class T>
Var<T> checkpointed_sequence_loss(Recurrent<T>& layer, const Var<T>& input, std::size_t batch,
                                  std::size_t segment_steps, const SegmentLoss<T>& loss);

/// Loss of one TBPTT window: gets the layer's output for steps [first_step, first_step + steps).
template <class T>
using WindowLoss = std::function<Var<T>(Tape<T>& tape, const RecurrentOutput<T>& output,
                                        std::size_t first_step, std::size_t steps)>;

/// Truncated BPTT over `stream` (N*B, input_size), time-major, in windows of `window` steps: for
/// each window a fresh tape, the carried state detached, forward, `loss`, backward, then
/// `after_backward` (e.g. clip + optimiser step + zero_grad; may be empty, then gradients
/// accumulate over the windows). Returns the mean window loss.
template <class T>
double run_tbptt(Recurrent<T>& layer, const Tensor<T>& stream, std::size_t batch,
                 std::size_t window, const WindowLoss<T>& loss,
                 const std::function<void()>& after_backward,
                 RecurrentStateTensors<T>* carried = nullptr);

} // namespace cellgrad::nn
