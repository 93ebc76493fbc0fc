// Adam with bias correction, optional L2 weight decay and AMSGrad, as torch.optim.Adam.
#pragma once

#include "cellgrad/optim/optimizer.hpp"

namespace cellgrad {

/// Options of Adam with torch.optim.Adam's defaults; betas = (beta1, beta2).
struct AdamOptions {
    double lr = 1e-3;
    double beta1 = 0.9;
    double beta2 = 0.999;
    double eps = 1e-8;
    double weight_decay = 0;
    bool amsgrad = false;
};

/// torch.optim.Adam; state "exp_avg.<name>", "exp_avg_sq.<name>", "max_exp_avg_sq.<name>"
/// (amsgrad).
template <class T>
class Adam : public Optimizer<T> {
  public:
    /// Validates the options (lr, eps, weight_decay >= 0; 0 <= beta1, beta2 < 1) and allocates
    /// state.
    explicit Adam(std::vector<Parameter<T>*> parameters, const AdamOptions& options = {});
    /// The options given at construction (lr as constructed; see lr() for the current one).
    const AdamOptions& options() const { return options_; }
    /// lr, beta1, beta2, eps, weight_decay, amsgrad (0/1).
    std::vector<std::pair<std::string, double>> hyperparameters() const override;

  private:
    void update() override;
    AdamOptions options_;
    std::size_t exp_avg_slot_ = 0;
    std::size_t exp_avg_sq_slot_ = 0;
    std::size_t max_exp_avg_sq_slot_ = 0;
};

} // namespace cellgrad
