// RMSprop with optional momentum, centering and L2 weight decay, as torch.optim.RMSprop.
#pragma once

#include "cellgrad/optim/optimizer.hpp"

namespace cellgrad {

/// Options of RMSprop with torch.optim.RMSprop's defaults.
struct RMSpropOptions {
    double lr = 1e-2;
    double alpha = 0.99;
    double eps = 1e-8;
    double weight_decay = 0;
    double momentum = 0;
    bool centered = false;
};

/// torch.optim.RMSprop; state "square_avg.<name>", "momentum_buffer.<name>" (momentum > 0),
/// "grad_avg.<name>" (centered).
template <class T>
class RMSprop : public Optimizer<T> {
  public:
    /// Validates the options (all >= 0) and allocates state.
    explicit RMSprop(std::vector<Parameter<T>*> parameters, const RMSpropOptions& options = {});
    /// The options given at construction (lr as constructed; see lr() for the current one).
    const RMSpropOptions& options() const { return options_; }
    /// lr, alpha, eps, weight_decay, momentum, centered (0/1).
    std::vector<std::pair<std::string, double>> hyperparameters() const override;

  private:
    void update() override;
    RMSpropOptions options_;
    std::size_t square_avg_slot_ = 0;
    std::size_t momentum_slot_ = 0;
    std::size_t grad_avg_slot_ = 0;
};

} // namespace cellgrad
