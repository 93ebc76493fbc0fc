// Adagrad with learning-rate decay and L2 weight decay, as torch.optim.Adagrad.
#pragma once

#include "cellgrad/optim/optimizer.hpp"

namespace cellgrad {

/// Options of Adagrad with torch.optim.Adagrad's defaults.
struct AdagradOptions {
    double lr = 1e-2;
    double lr_decay = 0;
    double weight_decay = 0;
    double initial_accumulator_value = 0;
    double eps = 1e-10;
};

/// torch.optim.Adagrad; state "sum.<name>" (starts at initial_accumulator_value).
template <class T>
class Adagrad : public Optimizer<T> {
  public:
    /// Validates the options (all >= 0) and allocates the accumulators.
    explicit Adagrad(std::vector<Parameter<T>*> parameters, const AdagradOptions& options = {});
    /// The options given at construction (lr as constructed; see lr() for the current one).
    const AdagradOptions& options() const { return options_; }
    /// lr, lr_decay, weight_decay, initial_accumulator_value, eps.
    std::vector<std::pair<std::string, double>> hyperparameters() const override;

  private:
    void update() override;
    AdagradOptions options_;
    std::size_t sum_slot_ = 0;
};

} // namespace cellgrad
