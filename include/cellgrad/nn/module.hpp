// Module: something that owns named parameters; plus PyTorch's default initialisers.
#pragma once

#include <cstddef>
#include <random>
#include <string>
#include <vector>

#include "cellgrad/tape.hpp"

namespace cellgrad::nn {

/// Owner of parameters, listed in a fixed order (optimisers and checkpoints rely on it).
template <class T>
class Module {
  public:
    virtual ~Module() = default;
    /// The parameters, in a fixed order; pointers stay valid while the module lives.
    virtual std::vector<Parameter<T>*> parameters() = 0;
    /// Sets every parameter's gradient to zero.
    void zero_grad() {
        for (Parameter<T>* parameter : parameters()) {
            parameter->zero_grad();
        }
    }
    /// Total number of scalar parameters.
    std::size_t parameter_count() {
        std::size_t total = 0;
        for (Parameter<T>* parameter : parameters()) {
            total += parameter->value.size();
        }
        return total;
    }
};

/// A (rows, cols) tensor with entries drawn from U(-bound, bound).
template <class T>
Tensor<T> uniform_tensor(std::size_t rows, std::size_t cols, double bound, std::mt19937_64& rng);

/// A (rows, cols) tensor with entries drawn from N(0, stddev^2).
template <class T>
Tensor<T> normal_tensor(std::size_t rows, std::size_t cols, double stddev, std::mt19937_64& rng);

} // namespace cellgrad::nn
