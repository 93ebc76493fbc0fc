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

/// Sizes of a looped cell module.
struct LoopedOptions {
    std::int64_t input;
    std::int64_t hidden;
};

/// A peephole LSTM as a PyTorch user writes it: a module looping over time steps with torch ops
/// (Gers & Schmidhuber 2000: i, f look at c_{t-1}, o at c_t). Returns (outputs (T, B, H), h_T).
struct PeepholeLSTMImpl : torch::nn::Module {
    explicit PeepholeLSTMImpl(const LoopedOptions& o)
        : ih(register_module("ih", torch::nn::Linear(o.input, 4 * o.hidden))),
          hh(register_module("hh", torch::nn::Linear(o.hidden, 4 * o.hidden))),
          peephole(register_parameter("peephole", torch::randn({3, o.hidden}) * 0.1)),
          hidden(o.hidden) {}
    std::tuple<torch::Tensor, torch::Tensor> forward(const torch::Tensor& x) {
        const torch::Tensor projected = ih->forward(x); // (T, B, 4H): every step at once
        torch::Tensor h = torch::zeros({x.size(1), hidden});
        torch::Tensor c = torch::zeros({x.size(1), hidden});
        std::vector<torch::Tensor> outputs;
        for (std::int64_t t = 0; t < x.size(0); ++t) {
            const auto gates = (projected[t] + hh->forward(h)).chunk(4, 1);
            const torch::Tensor i = torch::sigmoid(gates[0] + peephole[0] * c);
            const torch::Tensor f = torch::sigmoid(gates[1] + peephole[1] * c);
            c = f * c + i * torch::tanh(gates[2]);
            h = torch::sigmoid(gates[3] + peephole[2] * c) * torch::tanh(c);
            outputs.push_back(h);
        }
        return {torch::stack(outputs), h};
    }
    torch::nn::Linear ih, hh;
    torch::Tensor peephole;
    std::int64_t hidden;
};
TORCH_MODULE(PeepholeLSTM);

/// A layer-normalised LSTM (Ba, Kiros & Hinton 2016) as a PyTorch user writes it: LN of the input
/// and hidden projections with gains, a bias, and LN of c before the output's tanh.
struct LayerNormLSTMImpl : torch::nn::Module {
    explicit LayerNormLSTMImpl(const LoopedOptions& o)
        : ih(register_module(
              "ih",
              torch::nn::Linear(torch::nn::LinearOptions(o.input, 4 * o.hidden).bias(false)))),
          hh(register_module(
              "hh",
              torch::nn::Linear(torch::nn::LinearOptions(o.hidden, 4 * o.hidden).bias(false)))),
          gain_ih(register_parameter("gain_ih", torch::ones({4 * o.hidden}))),
          gain_hh(register_parameter("gain_hh", torch::ones({4 * o.hidden}))),
          bias(register_parameter("bias", torch::zeros({4 * o.hidden}))),
          ln_c(register_module("ln_c",
                               torch::nn::LayerNorm(torch::nn::LayerNormOptions({o.hidden})))),
          hidden(o.hidden) {}
    std::tuple<torch::Tensor, torch::Tensor> forward(const torch::Tensor& x) {
        const std::vector<std::int64_t> gate_shape{4 * hidden};
        const torch::Tensor projected = F::layer_norm(
            ih->forward(x), F::LayerNormFuncOptions(gate_shape).weight(gain_ih)); // all steps
        torch::Tensor h = torch::zeros({x.size(1), hidden});
        torch::Tensor c = torch::zeros({x.size(1), hidden});
        std::vector<torch::Tensor> outputs;
        for (std::int64_t t = 0; t < x.size(0); ++t) {
            const torch::Tensor recurrent =
                F::layer_norm(hh->forward(h), F::LayerNormFuncOptions(gate_shape).weight(gain_hh));
            const auto gates = (projected[t] + recurrent + bias).chunk(4, 1);
            c = torch::sigmoid(gates[1]) * c + torch::sigmoid(gates[0]) * torch::tanh(gates[2]);
            h = torch::sigmoid(gates[3]) * torch::tanh(ln_c->forward(c));
            outputs.push_back(h);
        }
        return {torch::stack(outputs), h};
    }
    torch::nn::Linear ih, hh;
    torch::Tensor gain_ih, gain_hh, bias;
    torch::nn::LayerNorm ln_c;
    std::int64_t hidden;
};
TORCH_MODULE(LayerNormLSTM);

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
    if (shape.cell == "peephole-lstm") {
        return std::make_unique<TorchStep<PeepholeLSTM, LoopedOptions>>(
            shape, LoopedOptions{in, hidden}, inputs, targets, lr);
    }
    if (shape.cell == "layernorm-lstm") {
        return std::make_unique<TorchStep<LayerNormLSTM, LoopedOptions>>(
            shape, LoopedOptions{in, hidden}, inputs, targets, lr);
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
