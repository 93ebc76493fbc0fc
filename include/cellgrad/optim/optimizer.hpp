// Optimizer base class: the parameter list, learning rate, step counter and named state tensors.
//
// Every optimizer follows torch.optim's formulas, option names and defaults. State tensors are
// allocated once at construction (one per parameter and kind, shaped like the parameter), so a
// step allocates nothing. state_tensors() lists them as "<kind>.<parameter name>" (e.g.
// "exp_avg.lstm.weight_ih_l0"); a checkpoint that saves those tensors, step_count() and lr() and
// restores them into an optimizer built with the same options continues bit-identically.
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "cellgrad/tape.hpp"
#include "cellgrad/tensor.hpp"

namespace cellgrad {

/// One named state tensor of an optimizer, e.g. {"exp_avg.fc.weight", &tensor}.
template <class T>
struct StateTensor {
    std::string name;
    Tensor<T>* tensor = nullptr;
};

/// Base of SGD, Adam, Adagrad and RMSprop: holds (non-owning) parameter pointers and the state.
template <class T>
class Optimizer {
  public:
    virtual ~Optimizer() = default;
    Optimizer(const Optimizer&) = delete;
    Optimizer& operator=(const Optimizer&) = delete;

    /// Applies one update to every parameter from its current gradient; increments step_count().
    void step();
    /// Sets every parameter's gradient to zero.
    void zero_grad();
    /// The learning rate used by the next step().
    double lr() const { return lr_; }
    /// Sets the learning rate (for schedules); throws if it is negative or not finite.
    void set_lr(double lr);
    /// Completed steps (torch's state["step"]; SGD's first step initialises its momentum buffer).
    std::int64_t step_count() const { return step_count_; }
    /// Restores the step counter from a checkpoint; throws if negative.
    void set_step_count(std::int64_t steps);
    /// The optimised parameters, in construction order.
    const std::vector<Parameter<T>*>& parameters() const { return parameters_; }
    /// The optimizer's name as in torch.optim: "SGD", "Adam", "Adagrad" or "RMSprop".
    const std::string& name() const { return name_; }
    /// Every state tensor as "<kind>.<parameter name>"; pointers stay valid for the optimizer's
    /// life.
    std::vector<StateTensor<T>> state_tensors();
    /// The options as (torch option name, value) pairs, lr included (for checkpoints and logs).
    virtual std::vector<std::pair<std::string, double>> hyperparameters() const = 0;

  protected:
    /// Checks the parameters (non-null, unique names, grad shaped like value) and the lr.
    Optimizer(std::string name, std::vector<Parameter<T>*> parameters, double lr);
    /// Adds one state tensor per parameter, shaped like it and filled with `fill`; returns its
    /// slot.
    std::size_t add_state(std::string kind, T fill = T(0));
    /// State tensor of `kind_slot` (from add_state) for parameter `index`.
    Tensor<T>& state(std::size_t kind_slot, std::size_t index) {
        return states_[kind_slot].second[index];
    }
    /// Throws "<name>: invalid <option> = <value> (needs <requirement>)" unless `ok`.
    void check_option(bool ok, const char* option, double value, const char* requirement) const;
    /// Throws "<name>: invalid <option> = <value> (needs a finite value >= 0)" unless it is one.
    void check_non_negative(const char* option, double value) const;
    /// The update of one step; step_count() already counts this step (1 on the first step).
    virtual void update() = 0;

  private:
    std::string name_;
    std::vector<Parameter<T>*> parameters_;
    double lr_;
    std::int64_t step_count_ = 0;
    std::vector<std::pair<std::string, std::vector<Tensor<T>>>> states_;
};

} // namespace cellgrad
