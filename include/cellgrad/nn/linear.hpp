// Linear and Embedding layers with PyTorch's parameter names, shapes and default init.
#pragma once

#include <cstdint>
#include <optional>
#include <span>

#include "cellgrad/nn/module.hpp"
#include "cellgrad/ops.hpp"

namespace cellgrad::nn {

/// y = x W^T + b; weight (out, in) and bias (out) as torch.nn.Linear, init U(-1/sqrt(in),
/// 1/sqrt(in)).
template <class T>
class Linear : public Module<T> {
  public:
    /// Creates weight "<prefix>weight" and (if bias) "<prefix>bias", drawn from `rng`.
    Linear(std::size_t in_features, std::size_t out_features, std::mt19937_64& rng,
           bool bias = true, const std::string& prefix = "");
    /// (n, in) -> (n, out).
    Var<T> forward(const Var<T>& x);
    /// weight, then bias.
    std::vector<Parameter<T>*> parameters() override;
    Parameter<T> weight;
    std::optional<Parameter<T>> bias;
};

/// Lookup table as torch.nn.Embedding: weight (num_embeddings, dim), init N(0, 1).
template <class T>
class Embedding : public Module<T> {
  public:
    /// Creates "<prefix>weight" drawn from `rng`.
    Embedding(std::size_t num_embeddings, std::size_t dim, std::mt19937_64& rng,
              const std::string& prefix = "");
    /// indices (n) -> (n, dim); throws naming the bad index and position.
    Var<T> forward(Tape<T>& tape, std::span<const std::int32_t> indices);
    /// weight.
    std::vector<Parameter<T>*> parameters() override { return {&weight}; }
    Parameter<T> weight;
};

} // namespace cellgrad::nn
