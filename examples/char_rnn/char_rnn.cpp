#include "char_rnn.hpp"

#include <algorithm>
#include <cmath>
#include <fstream>
#include <numbers>
#include <sstream>

#include <nlohmann/json.hpp>

namespace char_rnn {

using cellgrad::Error;
using cellgrad::Parameter;
using json = nlohmann::json;
namespace io = cellgrad::io;
namespace nn = cellgrad::nn;

// ---- vocabulary ------------------------------------------------------------------------------

Vocabulary Vocabulary::from_text(const std::string& text) {
    bool seen[256] = {};
    for (const char ch : text) {
        seen[static_cast<std::uint8_t>(ch)] = true;
    }
    std::vector<std::uint8_t> bytes;
    for (int b = 0; b < 256; ++b) {
        if (seen[b]) {
            bytes.push_back(static_cast<std::uint8_t>(b));
        }
    }
    return Vocabulary(bytes);
}

Vocabulary::Vocabulary(std::vector<std::uint8_t> bytes) : bytes_(std::move(bytes)) {
    std::fill(std::begin(index_), std::end(index_), -1);
    for (std::size_t i = 0; i < bytes_.size(); ++i) {
        if (index_[bytes_[i]] >= 0) {
            throw Error(fmt::format("vocabulary: byte {} appears twice", bytes_[i]));
        }
        index_[bytes_[i]] = static_cast<std::int32_t>(i);
    }
}

std::vector<std::int32_t> Vocabulary::encode(const std::string& text,
                                             const std::string& source) const {
    std::vector<std::int32_t> indices(text.size());
    for (std::size_t i = 0; i < text.size(); ++i) {
        const auto byte = static_cast<std::uint8_t>(text[i]);
        if (index_[byte] < 0) {
            throw Error(fmt::format("{}: byte {} ({}) at position {} is not in the model's "
                                    "vocabulary of {} symbols",
                                    source, byte,
                                    byte >= 32 && byte < 127 ? fmt::format("'{}'", char(byte))
                                                             : std::string("non-printable"),
                                    i, bytes_.size()));
        }
        indices[i] = index_[byte];
    }
    return indices;
}

// ---- model -----------------------------------------------------------------------------------

namespace {

std::unique_ptr<nn::Recurrent<float>> make_rnn(const ModelConfig& config, std::mt19937_64& rng) {
    nn::RecurrentOptions options;
    options.input_size = config.embedding;
    options.hidden_size = config.hidden;
    options.num_layers = config.layers;
    options.dropout = config.dropout;
    options.forget_bias = config.forget_bias;
    options.dropout_seed = rng();
    options.parameter_prefix = "rnn.";
    return nn::make_recurrent<float>(config.cell, options, rng); // any of nn::cell_names()
}

} // namespace

CharModel::CharModel(const ModelConfig& config, Vocabulary vocabulary, std::uint64_t seed)
    : config_(config), vocabulary_(std::move(vocabulary)), init_rng_(seed),
      embedding_(vocabulary_.size(), config.embedding, init_rng_, "embedding."),
      rnn_(make_rnn(config, init_rng_)),
      decoder_(config.hidden, vocabulary_.size(), init_rng_, true, "decoder.") {}

Var<float> CharModel::forward(cellgrad::Tape<float>& tape, std::span<const std::int32_t> indices,
                              std::size_t batch, const nn::RecurrentState<float>& state,
                              nn::RecurrentState<float>* final_state) {
    // Embedded tokens: the layer projects the V table rows once instead of T*B embedded rows when
    // V < T*B.
    nn::RecurrentOutput<float> output =
        rnn_->forward(embedding_.forward(tape, indices), batch, state);
    if (final_state != nullptr) {
        *final_state = output.final_state;
    }
    return decoder_.forward(output.output); // (T*B, V)
}

std::vector<Parameter<float>*> CharModel::parameters() {
    std::vector<Parameter<float>*> list = embedding_.parameters();
    for (Parameter<float>* parameter : rnn_->parameters()) {
        list.push_back(parameter);
    }
    for (Parameter<float>* parameter : decoder_.parameters()) {
        list.push_back(parameter);
    }
    return list;
}

// ---- training --------------------------------------------------------------------------------

double EvalResult::bits() const {
    return nats / std::numbers::ln2;
}

namespace {

std::unique_ptr<cellgrad::Optimizer<float>> make_optimizer(const TrainConfig& config,
                                                           std::vector<Parameter<float>*> params) {
    if (config.optimizer == "adam") {
        cellgrad::AdamOptions options;
        options.lr = config.lr;
        return std::make_unique<cellgrad::Adam<float>>(params, options);
    }
    if (config.optimizer == "sgd") {
        cellgrad::SGDOptions options;
        options.lr = config.lr;
        return std::make_unique<cellgrad::SGD<float>>(params, options);
    }
    if (config.optimizer == "adagrad") {
        cellgrad::AdagradOptions options;
        options.lr = config.lr;
        return std::make_unique<cellgrad::Adagrad<float>>(params, options);
    }
    if (config.optimizer == "rmsprop") {
        // char-rnn's RMSprop: decay 0.95 (torch's alpha), eps 1e-8.
        cellgrad::RMSpropOptions options;
        options.lr = config.lr;
        options.alpha = 0.95;
        return std::make_unique<cellgrad::RMSprop<float>>(params, options);
    }
    throw Error(fmt::format("unknown optimizer '{}': expected adam, sgd, adagrad or rmsprop",
                            config.optimizer));
}

} // namespace

Trainer::Trainer(const ModelConfig& model, const TrainConfig& train, Vocabulary vocabulary,
                 std::vector<std::int32_t> train_indices)
    : model_config_(model), config_(train), model_(model, std::move(vocabulary), train.seed),
      optimizer_(make_optimizer(train, model_.parameters())), train_(std::move(train_indices)) {
    if (config_.batch == 0 || config_.seq == 0) {
        throw Error("train: --batch and --seq must be at least 1");
    }
    tape_.reuse_gradient_memory(true); // only the parameters' gradients are read after backward
    stream_length_ = train_.size() / config_.batch;
    if (stream_length_ < config_.seq + 1) {
        throw Error(fmt::format("train: {} training characters cut into {} streams give {} per "
                                "stream, fewer than --seq + 1 = {}",
                                train_.size(), config_.batch, stream_length_, config_.seq + 1));
    }
    windows_ = (stream_length_ - 1) / config_.seq;
    inputs_.resize(config_.seq * config_.batch);
    targets_.resize(config_.seq * config_.batch);
}

void Trainer::set_data_parallel(DataParallel parallel) {
    if (step_ != 0 || !carried_.empty()) {
        throw Error("train: set_data_parallel must come before resume() and the first step");
    }
    if (parallel.rank >= parallel.ranks) {
        throw Error(fmt::format("train: rank {} of {} ranks does not exist", parallel.rank,
                                parallel.ranks));
    }
    if (parallel.ranks > config_.batch) {
        throw Error(fmt::format("train: {} ranks need at least one stream each, but --batch is "
                                "{}; give --batch {} or more, or start fewer ranks",
                                parallel.ranks, config_.batch, parallel.ranks));
    }
    if (parallel.ranks > 1 &&
        (!parallel.sum_gradients || !parallel.gather_rows || !parallel.broadcast)) {
        throw Error("train: a data-parallel run needs sum_gradients, gather_rows and broadcast");
    }
    parallel_ = std::move(parallel);
    const std::size_t streams =
        parallel_.end_stream(config_.batch) - parallel_.first_stream(config_.batch);
    inputs_.resize(config_.seq * streams);
    targets_.resize(config_.seq * streams);
}

double Trainer::train_step() {
    const std::size_t T = config_.seq;
    const std::size_t B = config_.batch;
    const std::size_t first = parallel_.first_stream(B); // this rank's streams: [first, +streams)
    const std::size_t streams = parallel_.end_stream(B) - first;
    const std::size_t window = static_cast<std::size_t>(step_) % windows_;
    if (window == 0) {
        carried_ = model_.rnn().zero_state(streams); // the streams wrap: start from a zero state
    }
    for (std::size_t t = 0; t < T; ++t) {
        for (std::size_t b = 0; b < streams; ++b) {
            const std::size_t position = (first + b) * stream_length_ + window * T + t;
            inputs_[t * streams + b] = train_[position];
            targets_[t * streams + b] = train_[position + 1];
        }
    }
    if (parallel_.ranks > 1) {
        // Dropout masks from (seed, step, rank): reproducible for a given number of ranks.
        std::seed_seq seeds{std::uint32_t(config_.seed), std::uint32_t(config_.seed >> 32),
                            std::uint32_t(step_), std::uint32_t(std::uint64_t(step_) >> 32),
                            std::uint32_t(parallel_.rank)};
        model_.rnn().dropout_rng().seed(seeds);
    }
    tape_.clear();
    model_.rnn().set_training(true);
    nn::RecurrentState<float> final_state;
    const Var<float> logits =
        model_.forward(tape_, inputs_, streams, nn::state_on_tape(tape_, carried_), &final_state);
    // Alone: the mean over the T*B predictions. One rank of several: its own predictions' sum
    // over T*B, so that the ranks' losses and gradients add up to those of the global mean.
    const Var<float> loss =
        parallel_.ranks == 1 ? cellgrad::cross_entropy<float>(logits, targets_)
                             : cellgrad::scale(cellgrad::cross_entropy<float>(
                                                   logits, targets_, {}, cellgrad::Reduction::sum),
                                               1.0 / double(T * B));
    optimizer_->zero_grad();
    tape_.backward(loss);
    double value = loss.item();
    if (parallel_.ranks > 1) {
        float total[1] = {float(value)};
        parallel_.sum_gradients(total); // the clip below sees the global norm
        value = total[0];
    }
    if (config_.clip > 0) {
        cellgrad::clip_grad_norm(optimizer_->parameters(), config_.clip);
    }
    optimizer_->step();
    carried_ = nn::detach_state(final_state);
    ++step_;
    // Nothing non-finite may reach a checkpoint: stop here, before the caller can save.
    const Parameter<float>* broken = nullptr;
    for (const Parameter<float>* parameter : optimizer_->parameters()) {
        const float* data = parameter->value.data();
        if (!std::all_of(data, data + parameter->value.size(),
                         [](float x) { return std::isfinite(x); })) {
            broken = parameter;
            break;
        }
    }
    if (!std::isfinite(value) || broken != nullptr) {
        throw Error(fmt::format(
            "train: {} became non-finite at step {} (loss {}): the run diverged; likely cause: "
            "--lr {} is too high{}; nothing from this step was saved",
            broken != nullptr ? fmt::format("weight '{}'", broken->name) : std::string("the loss"),
            step_, value, config_.lr, config_.clip > 0 ? "" : " with --clip 0 (off)"));
    }
    return value;
}

// ---- evaluation and sampling -----------------------------------------------------------------

EvalResult evaluate(CharModel& model, std::span<const std::int32_t> indices, std::size_t chunk) {
    EvalResult result;
    if (indices.size() < 2) {
        throw Error("eval: needs at least 2 characters");
    }
    const bool was_training = model.rnn().training();
    model.rnn().set_training(false);
    cellgrad::NoGradGuard no_grad;
    cellgrad::Tape<float> tape;
    nn::RecurrentStateTensors<float> state = model.rnn().zero_state(1);
    double total = 0;
    for (std::size_t begin = 0; begin + 1 < indices.size(); begin += chunk) {
        const std::size_t steps = std::min(chunk, indices.size() - 1 - begin);
        tape.clear();
        nn::RecurrentState<float> final_state;
        const Var<float> logits = model.forward(tape, indices.subspan(begin, steps), 1,
                                                nn::state_on_tape(tape, state), &final_state);
        const Var<float> loss = cellgrad::cross_entropy<float>(
            logits, indices.subspan(begin + 1, steps), {}, cellgrad::Reduction::sum);
        total += loss.item();
        state = nn::detach_state(final_state);
    }
    model.rnn().set_training(was_training);
    result.predictions = indices.size() - 1;
    result.nats = total / double(result.predictions);
    return result;
}

void sample(CharModel& model, const SampleConfig& config,
            const std::function<void(std::string_view)>& emit) {
    if (config.prime.empty()) {
        throw Error("sample: --prime must not be empty");
    }
    if (!config.argmax && !(config.temperature > 0 && std::isfinite(config.temperature))) {
        throw Error(fmt::format("sample: --temperature must be a number above 0, got {}",
                                config.temperature));
    }
    const std::vector<std::int32_t> prime = model.vocabulary().encode(config.prime, "--prime");
    const bool was_training = model.rnn().training();
    model.rnn().set_training(false);
    cellgrad::NoGradGuard no_grad;
    cellgrad::Tape<float> tape;
    std::mt19937_64 rng(config.seed);
    nn::RecurrentState<float> final_state;
    Var<float> logits = model.forward(tape, prime, 1, {}, &final_state);
    nn::RecurrentStateTensors<float> state = nn::detach_state(final_state);
    Tensor<float> last(cellgrad::View<const float>{logits.value().row(logits.rows() - 1), 1,
                                                   logits.cols(), logits.cols()});
    emit(config.prime);
    constexpr std::size_t piece = 4096; // characters handed to `emit` at a time
    std::string text;
    std::vector<double> weights(last.cols());
    for (std::size_t i = 0; i < config.length; ++i) {
        std::int32_t next = 0;
        if (config.argmax) {
            next = static_cast<std::int32_t>(
                std::max_element(last.data(), last.data() + last.cols()) - last.data());
        } else {
            const float largest = *std::max_element(last.data(), last.data() + last.cols());
            for (std::size_t c = 0; c < weights.size(); ++c) {
                weights[c] = std::exp((double(last(0, c)) - largest) / config.temperature);
            }
            std::discrete_distribution<std::int32_t> draw(weights.begin(), weights.end());
            next = draw(rng);
        }
        text += static_cast<char>(model.vocabulary().bytes()[static_cast<std::size_t>(next)]);
        if (text.size() == piece) {
            emit(text);
            text.clear();
        }
        tape.clear();
        const std::int32_t input[] = {next};
        logits = model.forward(tape, input, 1, nn::state_on_tape(tape, state), &final_state);
        state = nn::detach_state(final_state);
        last = logits.value_tensor();
    }
    model.rnn().set_training(was_training);
    emit(text);
}

std::string sample(CharModel& model, const SampleConfig& config) {
    std::string text;
    sample(model, config, [&](std::string_view piece) { text += piece; });
    return text;
}

} // namespace char_rnn
