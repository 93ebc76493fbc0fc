// The LibTorch training step of bench_training: torch::nn::Embedding, LSTM/GRU/RNN, Linear,
// cross_entropy and torch::optim::SGD with the same shapes as the cellgrad step.
#include "torch_step.hpp"

#include <stdexcept>
#include <tuple>

#include <ATen/Parallel.h>
#include <torch/torch.h>
#include <torch/version.h>

namespace bench {

namespace {

namespace F = torch::nn::functional;

/// Time-major (steps, batch) int64 tensor of token ids.
torch::Tensor token_tensor(const std::vector<std::int32_t>& ids, std::size_t steps,
                           std::size_t batch) {
    std::vector<std::int64_t> wide(ids.begin(), ids.end());
    return torch::tensor(wide, torch::kInt64)
        .reshape({static_cast<std::int64_t>(steps), static_cast<std::int64_t>(batch)});
}

/// Embedding -> `Layer` (LSTM, GRU or RNN) -> Linear decoder on every step -> mean CE -> SGD.
template <class Layer, class LayerOptions>
class TorchStep : public TrainingStep {
  public:
    /// Builds the modules (torch's default init) and the optimizer.
    TorchStep(const StepShape& shape, const LayerOptions& options,
              const std::vector<std::int32_t>& inputs, const std::vector<std::int32_t>& targets,
              double lr)
        : shape_(shape), embedding_(static_cast<std::int64_t>(shape.vocab),
                                    static_cast<std::int64_t>(shape.input)),
          layer_(options),
          decoder_(static_cast<std::int64_t>(shape.hidden), static_cast<std::int64_t>(shape.vocab)),
          inputs_(token_tensor(inputs, shape.steps, shape.batch)),
          targets_(token_tensor(targets, shape.steps, shape.batch).reshape({-1})),
          optimizer_(parameters(), torch::optim::SGDOptions(lr)) {}

    /// One full training step.
    double step() override {
        const torch::Tensor embedded = embedding_->forward(inputs_);         // (T, B, E)
        const torch::Tensor output = std::get<0>(layer_->forward(embedded)); // (T, B, H)
        const torch::Tensor logits =
            decoder_->forward(output.reshape({-1, static_cast<std::int64_t>(shape_.hidden)}));
        const torch::Tensor loss = F::cross_entropy(logits, targets_); // mean over T*B
        optimizer_.zero_grad();
        loss.backward();
        optimizer_.step();
        return loss.item<double>();
    }

  private:
    /// Every parameter: embedding, layer, decoder.
    std::vector<torch::Tensor> parameters() {
        std::vector<torch::Tensor> list = embedding_->parameters();
        for (const torch::Tensor& parameter : layer_->parameters()) {
            list.push_back(parameter);
        }
        for (const torch::Tensor& parameter : decoder_->parameters()) {
            list.push_back(parameter);
        }
        return list;
    }

    StepShape shape_;
    torch::nn::Embedding embedding_;
    Layer layer_;
    torch::nn::Linear decoder_;
    torch::Tensor inputs_;
    torch::Tensor targets_;
    torch::optim::SGD optimizer_;
};

} // namespace

std::unique_ptr<TrainingStep> make_torch_step(const StepShape& shape,
                                              const std::vector<std::int32_t>& inputs,
                                              const std::vector<std::int32_t>& targets, double lr,
                                              std::uint64_t seed) {
    torch::manual_seed(seed);
    const auto in = static_cast<std::int64_t>(shape.input);
    const auto hidden = static_cast<std::int64_t>(shape.hidden);
    if (shape.cell == "lstm") {
        return std::make_unique<TorchStep<torch::nn::LSTM, torch::nn::LSTMOptions>>(
            shape, torch::nn::LSTMOptions(in, hidden), inputs, targets, lr);
    }
    if (shape.cell == "gru") {
        return std::make_unique<TorchStep<torch::nn::GRU, torch::nn::GRUOptions>>(
            shape, torch::nn::GRUOptions(in, hidden), inputs, targets, lr);
    }
    if (shape.cell == "rnn") {
        return std::make_unique<TorchStep<torch::nn::RNN, torch::nn::RNNOptions>>(
            shape, torch::nn::RNNOptions(in, hidden).nonlinearity(torch::kTanh), inputs, targets,
            lr);
    }
    throw std::invalid_argument("make_torch_step: unknown cell '" + shape.cell + "'");
}

void set_torch_threads(int threads) {
    torch::set_num_threads(threads);
}

std::string torch_description() {
    std::string parallel = at::get_parallel_info();
    // The first line that names the backend is enough for the header.
    std::string backend;
    std::size_t begin = 0;
    while (begin < parallel.size()) {
        std::size_t end = parallel.find('\n', begin);
        if (end == std::string::npos) {
            end = parallel.size();
        }
        const std::string line = parallel.substr(begin, end - begin);
        if (line.find("parallel backend") != std::string::npos) {
            backend = line;
        }
        begin = end + 1;
    }
    return "LibTorch " TORCH_VERSION + (backend.empty() ? std::string() : ", " + backend);
}

} // namespace bench
