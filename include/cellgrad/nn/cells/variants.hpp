// The lesson's other architectures, each a user-level cell: its GEMMs, then pointwise nodes whose
// backward is derived (src/nn/cells/). Parameter names follow PyTorch's style (weight_ih_l0,
// weight_hh_l0, bias_ih_l0, bias_hh_l0 for the stacked gate blocks) plus each cell's own.
// docs/lstm.md ("Other architectures") gives each one's equations in the lesson's words.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "cellgrad/nn/cells.hpp"

namespace cellgrad::nn {

/// A GatedCell with parameters of its own beyond the stacked gate weights.
template <class T>
class VariantCell : public GatedCell<T> {
  public:
    std::vector<Parameter<T>*> parameters() override;
    void attach(Tape<T>& tape) override;

  protected:
    /// Stacked weights of `gates` blocks; weight_hh reads `recurrent_size` features (0: H).
    VariantCell(std::size_t input_size, std::size_t hidden_size, std::size_t gates, bool bias,
                const std::string& suffix, std::mt19937_64& rng, std::size_t recurrent_size = 0)
        : GatedCell<T>(input_size, hidden_size, gates, bias, suffix, rng, recurrent_size),
          suffix_(suffix) {}
    /// Adds parameter "<name><suffix>" (a (1, n) vector when `is_vector`); returns its index.
    std::size_t add_parameter(const std::string& name, Tensor<T> value, bool is_vector);
    /// The tape Var of own parameter k (after attach).
    const Var<T>& own(std::size_t k) const { return own_vars_[k]; }

    std::string suffix_;

  private:
    std::vector<std::unique_ptr<Parameter<T>>> own_;
    std::vector<Var<T>> own_vars_;
};

/// The LSTM as the lesson teaches it: gate blocks n, i, f, v from [STM, E]; LTM' = LTM f + N i;
/// STM' = tanh(W_u (LTM f) + b_u) * sigmoid(a_v). Own: weight_u (H, H), bias_u (H).
template <class T>
class LessonLSTMCell : public VariantCell<T> {
  public:
    LessonLSTMCell(std::size_t input_size, std::size_t hidden_size, std::mt19937_64& rng,
                   double forget_bias = 0.0, const std::string& suffix = "");
    std::size_t state_size() const override { return 2; }
    std::vector<Var<T>> step(const StepInput<T>& event, std::span<const Var<T>> state) override;
};

/// Gers & Schmidhuber 2000: i and f look at c_{t-1}, o at c_t, through diagonal peepholes.
/// Own: weight_peephole (3H) = [p_i | p_f | p_o].
template <class T>
class PeepholeLSTMCell : public VariantCell<T> {
  public:
    PeepholeLSTMCell(std::size_t input_size, std::size_t hidden_size, std::mt19937_64& rng,
                     double forget_bias = 0.0, const std::string& suffix = "");
    std::size_t state_size() const override { return 2; }
    std::vector<Var<T>> step(const StepInput<T>& event, std::span<const Var<T>> state) override;
};

/// The lesson's peephole form: the LTM joins the gate input, gates from [STM, LTM, E]: weight_hh
/// is (4H, 2H), reading [h | c_{t-1}].
template <class T>
class ConcatPeepholeLSTMCell : public VariantCell<T> {
  public:
    ConcatPeepholeLSTMCell(std::size_t input_size, std::size_t hidden_size, std::mt19937_64& rng,
                           double forget_bias = 0.0, const std::string& suffix = "");
    std::size_t state_size() const override { return 2; }
    std::vector<Var<T>> step(const StepInput<T>& event, std::span<const Var<T>> state) override;
};

/// Coupled input and forget gates: i = 1 - f; gate blocks f, g, o.
template <class T>
class CIFGLSTMCell : public VariantCell<T> {
  public:
    CIFGLSTMCell(std::size_t input_size, std::size_t hidden_size, std::mt19937_64& rng,
                 double forget_bias = 0.0, const std::string& suffix = "");
    std::size_t state_size() const override { return 2; }
    std::vector<Var<T>> step(const StepInput<T>& event, std::span<const Var<T>> state) override;
};

/// No forget gate (Hochreiter & Schmidhuber 1997): c' = c + i g; gate blocks i, g, o.
template <class T>
class NFGLSTMCell : public VariantCell<T> {
  public:
    NFGLSTMCell(std::size_t input_size, std::size_t hidden_size, std::mt19937_64& rng,
                double forget_bias = 0.0, const std::string& suffix = "");
    std::size_t state_size() const override { return 2; }
    std::vector<Var<T>> step(const StepInput<T>& event, std::span<const Var<T>> state) override;
};

/// No output activation (Greff et al. 2017, NOAF): the LSTM with h' = o c' instead of
/// o tanh(c'); gate blocks i, f, g, o as PyTorch's.
template <class T>
class NOAFLSTMCell : public VariantCell<T> {
  public:
    NOAFLSTMCell(std::size_t input_size, std::size_t hidden_size, std::mt19937_64& rng,
                 double forget_bias = 0.0, const std::string& suffix = "");
    std::size_t state_size() const override { return 2; }
    std::vector<Var<T>> step(const StepInput<T>& event, std::span<const Var<T>> state) override;
};

/// Ba, Kiros & Hinton 2016: gates = LN(x W_ih^T) g_ih + LN(h W_hh^T) g_hh + b; c' as the LSTM;
/// h' = o tanh(LN(c') g_c + b_c). Own: ln_gain_ih, ln_gain_hh, bias (4H), ln_gain_c, ln_bias_c (H).
template <class T>
class LayerNormLSTMCell : public VariantCell<T> {
  public:
    LayerNormLSTMCell(std::size_t input_size, std::size_t hidden_size, std::mt19937_64& rng,
                      double forget_bias = 0.0, const std::string& suffix = "");
    std::size_t state_size() const override { return 2; }
    /// LN(x W_ih^T), row by row.
    Var<T> project_inputs(const Var<T>& x) override;
    std::vector<Var<T>> step(const StepInput<T>& event, std::span<const Var<T>> state) override;
};

/// Cho et al. 2014, the original GRU: the reset gate applies before the recurrent matrix,
/// n = tanh(x_n + W_hn (r h) + b_hn): weight_hh's n block multiplies r h, not h.
template <class T>
class ChoGRUCell : public VariantCell<T> {
  public:
    ChoGRUCell(std::size_t input_size, std::size_t hidden_size, std::mt19937_64& rng,
               double forget_bias = 0.0, const std::string& suffix = "");
    std::vector<Var<T>> step(const StepInput<T>& event, std::span<const Var<T>> state) override;
};

/// Minimal gated unit (Zhou et al. 2016): f = sigmoid(x_f + U_f h + b_f),
/// n = tanh(x_n + U_n (f h) + b_n), h' = (1 - f) h + f n; weight_hh = [U_f; U_n] (2H, H).
template <class T>
class MGUCell : public VariantCell<T> {
  public:
    MGUCell(std::size_t input_size, std::size_t hidden_size, std::mt19937_64& rng,
            double forget_bias = 0.0, const std::string& suffix = "");
    std::vector<Var<T>> step(const StepInput<T>& event, std::span<const Var<T>> state) override;
};

} // namespace cellgrad::nn
