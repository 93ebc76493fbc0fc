// Recurrent cells: GEMMs, then one pointwise node whose backward is derived (no hand-written
// backward), with PyTorch's
// equations, gate order, parameter names, shapes and init (U(-1/sqrt(H), 1/sqrt(H))).
//
// The lesson's vocabulary: long-term memory (LTM) = cell state c, short-term memory (STM) =
// hidden state h, event = input x. See docs/lstm.md for the gate-by-gate map to this code.
#pragma once

#include <optional>
#include <random>
#include <span>
#include <string>
#include <vector>

#include "cellgrad/nn/module.hpp"
#include "cellgrad/ops.hpp"
#include "cellgrad/pointwise.hpp"

namespace cellgrad::nn {

/// A step's event after the cell's input projection: `batch` rows of `source` (n, P), read in
/// place: rows first_row .. first_row + batch - 1, or rows[b] when `rows` is not empty.
template <class T>
struct StepInput {
    Var<T> source;
    std::size_t first_row = 0;
    std::span<const std::int32_t> rows;
    std::size_t batch = 0;
    /// Set by a runner whose projected rows belong to this step alone: GatedWeights::gates may
    /// then add the recurrent product into them in place (no second (B, G*H) buffer forward or
    /// backward), provided it is the step's first and only read of the event.
    bool donated = false;
    /// All rows of `projected` (a step's (B, P) projected event).
    StepInput(const Var<T>& projected) : source(projected), batch(projected.rows()) {}
    /// Rows first .. first + count - 1 of source.
    StepInput(const Var<T>& all, std::size_t first, std::size_t count)
        : source(all), first_row(first), batch(count) {}
    /// Rows picked[b] of source.
    StepInput(const Var<T>& all, std::span<const std::int32_t> picked)
        : source(all), rows(picked), batch(picked.size()) {}
    /// The rows as a (B, P) Var: a zero-copy slice, or a gather of the picked rows.
    Var<T> var() const {
        note_read(false);
        return rows.empty() ? slice_rows(source, first_row, first_row + batch)
                            : gather_rows(source, rows);
    }
    /// Records a read of the event; true when `in_place` may overwrite the donated rows (first
    /// read of a donated contiguous event). Throws if the rows were already overwritten.
    bool note_read(bool in_place) const {
        if (read_ == Read::overwritten) {
            throw Error("StepInput: this step's projected rows were already turned into its gates "
                        "in place by GatedWeights::gates; read event.var() before gates(), or "
                        "call gates() once per step");
        }
        const bool overwrite = in_place && donated && rows.empty() && read_ == Read::unread;
        read_ = overwrite ? Read::overwritten : Read::read;
        return overwrite;
    }

  private:
    enum class Read { unread, read, overwritten };
    mutable Read read_ = Read::unread;
};

/// What the sequence machinery needs from a cell; implement it for your own cell type.
template <class T>
class Cell : public Module<T> {
  public:
    /// Features of the input x.
    virtual std::size_t input_size() const = 0;
    /// Features of the hidden state h (the cell's output).
    virtual std::size_t hidden_size() const = 0;
    /// Number of state tensors, each (B, hidden): h first, then e.g. the LSTM's c.
    virtual std::size_t state_size() const { return 1; }
    /// Records the parameters on `tape` for the steps that follow (call once per sequence run).
    virtual void attach(Tape<T>& tape) = 0;
    /// Input-only part of all T steps at once, (T*B, in) -> (T*B, P), row by row (output row r
    /// depends on input row r only, so the runner may project an embedding table's rows instead
    /// of the embedded tokens); default: x unchanged.
    virtual Var<T> project_inputs(const Var<T>& x) { return x; }
    /// One step: the projected event (B, P) and the state -> the new state (h first).
    virtual std::vector<Var<T>> step(const StepInput<T>& event, std::span<const Var<T>> state) = 0;
};

/// Weights shared by the built-in cells: weight_ih (G*H, in), weight_hh (G*H, H), two biases (G*H).
template <class T>
class GatedWeights {
  public:
    /// Creates "weight_ih<suffix>" etc. for `gates` stacked gate blocks, drawn from `rng`;
    /// weight_hh reads `recurrent_size` features (0: hidden_size).
    GatedWeights(std::size_t input_size, std::size_t hidden_size, std::size_t gates, bool bias,
                 const std::string& suffix, std::mt19937_64& rng, std::size_t recurrent_size = 0);
    /// weight_ih, weight_hh, bias_ih, bias_hh (PyTorch's order).
    std::vector<Parameter<T>*> parameters();
    /// Records the four parameters on `tape`.
    void attach(Tape<T>& tape);
    /// x W_ih^T + b_ih for all steps at once: (T*B, in) -> (T*B, G*H).
    Var<T> project_inputs(const Var<T>& x) const;
    /// h W_hh^T + b_hh: (B, H) -> (B, G*H).
    Var<T> project_hidden(const Var<T>& h) const;
    /// Gate blocks [first, first + count) only: h W_hh[blocks]^T + b_hh[blocks], (B, count*H)
    /// (a cell that feeds some blocks another input than h, like the original GRU's r h).
    Var<T> project_hidden(const Var<T>& h, std::size_t first, std::size_t count) const;
    /// A step's gate pre-activations h W_hh^T + b_hh + the event's rows, as one node (B, G*H).
    Var<T> gates(const StepInput<T>& event, const Var<T>& h) const;

    std::size_t input_size;
    std::size_t hidden_size;
    Parameter<T> weight_ih;
    Parameter<T> weight_hh;
    std::optional<Parameter<T>> bias_ih;
    std::optional<Parameter<T>> bias_hh;

  private:
    Var<T> weight_ih_var_, weight_hh_var_, bias_ih_var_, bias_hh_var_;
};

/// Activation of the plain RNN.
enum class Nonlinearity { tanh, relu };

/// What the built-in cells share: PyTorch's stacked weights and the Cell plumbing for them.
template <class T>
class GatedCell : public Cell<T> {
  public:
    std::size_t input_size() const override { return weights_.input_size; }
    std::size_t hidden_size() const override { return weights_.hidden_size; }
    std::vector<Parameter<T>*> parameters() override { return weights_.parameters(); }
    void attach(Tape<T>& tape) override { weights_.attach(tape); }
    Var<T> project_inputs(const Var<T>& x) override { return weights_.project_inputs(x); }
    /// The weights (for tests and checkpoints).
    GatedWeights<T>& weights() { return weights_; }

  protected:
    /// Weights for `gates` stacked gate blocks, named "weight_ih<suffix>", ...
    GatedCell(std::size_t input_size, std::size_t hidden_size, std::size_t gates, bool bias,
              const std::string& suffix, std::mt19937_64& rng, std::size_t recurrent_size = 0)
        : weights_(input_size, hidden_size, gates, bias, suffix, rng, recurrent_size) {}

    GatedWeights<T> weights_;
};

/// Elman RNN cell: h' = act(x W_ih^T + b_ih + h W_hh^T + b_hh) (torch.nn.RNNCell).
template <class T>
class RNNCell : public GatedCell<T> {
  public:
    /// Parameters named "weight_ih<suffix>", ... ; init U(-1/sqrt(H), 1/sqrt(H)).
    RNNCell(std::size_t input_size, std::size_t hidden_size, std::mt19937_64& rng,
            Nonlinearity nonlinearity = Nonlinearity::tanh, bool bias = true,
            const std::string& suffix = "");
    /// h' = act(event + h W_hh^T + b_hh).
    std::vector<Var<T>> step(const StepInput<T>& event, std::span<const Var<T>> state) override;

  private:
    Nonlinearity nonlinearity_;
};

/// The LSTM's gates per unit, from the pre-activations of the input, forget, candidate and output
/// gates and the long-term memory c: returns (STM h', LTM c') (PyTorch's equations).
inline constexpr auto lstm_gates = [](auto a_i, auto a_f, auto a_g, auto a_o, auto long_term) {
    auto kept = named("forget", sigmoid(a_f)) * long_term;                       // forget gate
    auto learned = named("input", sigmoid(a_i)) * named("candidate", tanh(a_g)); // learn gate
    auto new_long_term = kept + learned;                                         // remember gate
    auto new_short_term = named("output", sigmoid(a_o)) * tanh(new_long_term);   // use gate
    return std::tuple{new_short_term, new_long_term};
};

/// The GRU's gates per unit, from the event's and the old state's parts of the reset, update and
/// candidate pre-activations and the old state h: returns h' (PyTorch's equations).
inline constexpr auto gru_gates = [](auto x_r, auto x_z, auto x_n, auto h_r, auto h_z, auto h_n,
                                     auto h) {
    auto reset = named("reset", sigmoid(x_r + h_r));   // how much of h the candidate sees
    auto update = named("update", sigmoid(x_z + h_z)); // how much of h is kept
    auto candidate = named("candidate", tanh(x_n + reset * h_n));
    return (1.0 - update) * candidate + update * h;
};

/// LSTM cell (torch.nn.LSTMCell), gates stacked i, f, g, o; state (h, c).
template <class T>
class LSTMCell : public GatedCell<T> {
  public:
    /// Parameters named "weight_ih<suffix>", ...; `forget_bias` is added to bias_ih's f block at
    /// init.
    LSTMCell(std::size_t input_size, std::size_t hidden_size, std::mt19937_64& rng,
             bool bias = true, double forget_bias = 0.0, const std::string& suffix = "");
    std::size_t state_size() const override { return 2; }
    /// (h, c) -> (h', c'): c' = f*c + i*g, h' = o*tanh(c').
    std::vector<Var<T>> step(const StepInput<T>& event, std::span<const Var<T>> state) override;
};

/// GRU cell (torch.nn.GRUCell), gates stacked r, z, n; state h.
template <class T>
class GRUCell : public GatedCell<T> {
  public:
    /// Parameters named "weight_ih<suffix>", ...; init U(-1/sqrt(H), 1/sqrt(H)).
    GRUCell(std::size_t input_size, std::size_t hidden_size, std::mt19937_64& rng, bool bias = true,
            const std::string& suffix = "");
    /// h' = (1 - z) * n + z * h with n = tanh(x_n + r * (h W_hn^T + b_hn)).
    std::vector<Var<T>> step(const StepInput<T>& event, std::span<const Var<T>> state) override;
};

} // namespace cellgrad::nn
