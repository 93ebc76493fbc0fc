// Stochastic gradient descent with optional momentum, dampening, L2 weight decay and Nesterov.
#pragma once

#include "cellgrad/optim/optimizer.hpp"

namespace cellgrad {

/// Options of SGD with torch.optim.SGD's defaults.
struct SGDOptions {
    double lr = 1e-3;
    double momentum = 0;
    double dampening = 0;
    double weight_decay = 0;
    bool nesterov = false;
};

/// torch.optim.SGD; state "momentum_buffer.<name>" when momentum != 0.
template <class T>
class SGD : public Optimizer<T> {
  public:
    /// Validates the options (lr, momentum, weight_decay >= 0; nesterov needs momentum > 0 and
    /// dampening == 0) and allocates the momentum buffers.
    explicit SGD(std::vector<Parameter<T>*> parameters, const SGDOptions& options = {});
    /// The options given at construction (lr as constructed; see lr() for the current one).
    const SGDOptions& options() const { return options_; }
    /// lr, momentum, dampening, weight_decay, nesterov (0/1).
    std::vector<std::pair<std::string, double>> hyperparameters() const override;

  private:
    void update() override;
    SGDOptions options_;
    std::size_t buffer_slot_ = 0;
};

} // namespace cellgrad
