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

// ---- vocabulary and files --------------------------------------------------------------------

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

std::string read_file(const std::filesystem::path& path) {
    std::ifstream file(path, std::ios::binary);
    if (!file) {
        throw Error(fmt::format("cannot open '{}' for reading", path.string()));
    }
    std::ostringstream buffer;
    buffer << file.rdbuf();
    std::string text = buffer.str();
    if (text.empty()) {
        throw Error(fmt::format("'{}' is empty", path.string()));
    }
    return text;
}

// ---- model -----------------------------------------------------------------------------------

std::string ModelConfig::to_json() const {
    return json{{"cell", cell},           {"hidden", hidden},   {"layers", layers},
                {"embedding", embedding}, {"dropout", dropout}, {"forget_bias", forget_bias}}
        .dump();
}

ModelConfig ModelConfig::from_json(const std::string& text) {
    ModelConfig config;
    try {
        const json object = json::parse(text);
        config.cell = object.at("cell").get<std::string>();
        config.hidden = object.at("hidden").get<std::size_t>();
        config.layers = object.at("layers").get<std::size_t>();
        config.embedding = object.at("embedding").get<std::size_t>();
        config.dropout = object.at("dropout").get<double>();
        config.forget_bias = object.at("forget_bias").get<double>();
    } catch (const json::exception& e) {
        throw Error(fmt::format("model config '{}' is not valid: {}", text, e.what()));
    }
    return config;
}

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
    if (config.cell == "lstm") {
        return std::make_unique<nn::LSTM<float>>(options, rng);
    }
    if (config.cell == "gru") {
        return std::make_unique<nn::GRU<float>>(options, rng);
    }
    if (config.cell == "rnn") {
        return std::make_unique<nn::RNN<float>>(options, rng);
    }
    throw Error(fmt::format("unknown cell '{}': expected lstm, gru or rnn", config.cell));
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

// ---- checkpoints -----------------------------------------------------------------------------

void save_model(const std::filesystem::path& path, CharModel& model,
                std::vector<io::TensorEntry> extra, io::Metadata extra_metadata) {
    std::vector<io::TensorEntry> entries;
    for (Parameter<float>* parameter : model.parameters()) {
        entries.push_back(io::make_entry(*parameter));
    }
    for (io::TensorEntry& entry : extra) {
        entries.push_back(std::move(entry));
    }
    io::Metadata metadata = std::move(extra_metadata);
    metadata["format"] = "cellgrad.char_rnn.v1";
    metadata["config"] = model.config().to_json();
    metadata["vocabulary"] = json(model.vocabulary().bytes()).dump();
    io::save_safetensors(path, entries, metadata);
}

namespace {

const std::string& metadata_field(const io::SafetensorsFile& file, const std::string& key) {
    const auto found = file.metadata().find(key);
    if (found == file.metadata().end()) {
        throw Error(fmt::format("{}: metadata has no '{}' (not a cellgrad char_rnn checkpoint?)",
                                file.source(), key));
    }
    return found->second;
}

Vocabulary vocabulary_from(const io::SafetensorsFile& file) {
    try {
        return Vocabulary(
            json::parse(metadata_field(file, "vocabulary")).get<std::vector<std::uint8_t>>());
    } catch (const json::exception& e) {
        throw Error(fmt::format("{}: metadata 'vocabulary' is not a JSON array of bytes: {}",
                                file.source(), e.what()));
    }
}

std::string rng_text(const std::mt19937_64& rng) {
    std::ostringstream text;
    text << rng;
    return text.str();
}

} // namespace

void load_weights(const io::SafetensorsFile& file, CharModel& model) {
    for (Parameter<float>* parameter : model.parameters()) {
        file.read_into(*parameter);
    }
}

std::unique_ptr<CharModel> load_model(const std::filesystem::path& path) {
    const io::SafetensorsFile file = io::load_safetensors(path);
    const ModelConfig config = ModelConfig::from_json(metadata_field(file, "config"));
    auto model = std::make_unique<CharModel>(config, vocabulary_from(file), 0);
    load_weights(file, *model);
    return model;
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

double Trainer::train_step() {
    const std::size_t T = config_.seq;
    const std::size_t B = config_.batch;
    const std::size_t window = static_cast<std::size_t>(step_) % windows_;
    if (window == 0) {
        carried_ = model_.rnn().zero_state(B); // the streams wrap: start from a zero state
    }
    for (std::size_t t = 0; t < T; ++t) {
        for (std::size_t b = 0; b < B; ++b) {
            const std::size_t position = b * stream_length_ + window * T + t;
            inputs_[t * B + b] = train_[position];
            targets_[t * B + b] = train_[position + 1];
        }
    }
    tape_.clear();
    model_.rnn().set_training(true);
    nn::RecurrentState<float> final_state;
    const Var<float> logits =
        model_.forward(tape_, inputs_, B, nn::state_on_tape(tape_, carried_), &final_state);
    const Var<float> loss = cellgrad::cross_entropy<float>(logits, targets_); // mean over B*T
    optimizer_->zero_grad();
    tape_.backward(loss);
    if (config_.clip > 0) {
        cellgrad::clip_grad_norm(optimizer_->parameters(), config_.clip);
    }
    optimizer_->step();
    carried_ = nn::detach_state(final_state);
    ++step_;
    return loss.item();
}

void Trainer::save(const std::filesystem::path& path) {
    std::vector<io::TensorEntry> extra;
    for (const cellgrad::StateTensor<float>& state : optimizer_->state_tensors()) {
        extra.push_back(io::make_entry("optimizer." + state.name, *state.tensor));
    }
    for (std::size_t i = 0; i < carried_.size(); ++i) {
        for (std::size_t k = 0; k < carried_[i].size(); ++k) {
            extra.push_back(io::make_entry(fmt::format("carry.{}.{}", i, k), carried_[i][k]));
        }
    }
    io::Metadata metadata;
    metadata["step"] = std::to_string(step_);
    metadata["rng"] = rng_text(model_.rnn().dropout_rng());
    metadata["optimizer"] = json{{"name", optimizer_->name()},
                                 {"lr", optimizer_->lr()},
                                 {"step_count", optimizer_->step_count()}}
                                .dump();
    metadata["train"] =
        json{{"seq", config_.seq}, {"batch", config_.batch}, {"optimizer", config_.optimizer},
             {"lr", config_.lr},   {"clip", config_.clip},   {"seed", config_.seed}}
            .dump();
    save_model(path, model_, std::move(extra), std::move(metadata));
}

void Trainer::resume(const std::filesystem::path& path) {
    const io::SafetensorsFile file = io::load_safetensors(path);
    if (metadata_field(file, "config") != model_config_.to_json()) {
        throw Error(fmt::format("{}: model config {} differs from this run's {}", file.source(),
                                metadata_field(file, "config"), model_config_.to_json()));
    }
    if (vocabulary_from(file).bytes() != model_.vocabulary().bytes()) {
        throw Error(
            fmt::format("{}: the checkpoint's vocabulary differs from the data's", file.source()));
    }
    load_weights(file, model_);
    for (const cellgrad::StateTensor<float>& state : optimizer_->state_tensors()) {
        file.read_into("optimizer." + state.name, *state.tensor,
                       {state.tensor->rows(), state.tensor->cols()});
    }
    try {
        const json optimizer = json::parse(metadata_field(file, "optimizer"));
        if (optimizer.at("name").get<std::string>() != optimizer_->name()) {
            throw Error(fmt::format("{}: optimizer {} in the checkpoint, {} in this run",
                                    file.source(), optimizer.at("name").get<std::string>(),
                                    optimizer_->name()));
        }
        optimizer_->set_lr(optimizer.at("lr").get<double>());
        optimizer_->set_step_count(optimizer.at("step_count").get<std::int64_t>());
        step_ = std::stoll(metadata_field(file, "step"));
    } catch (const json::exception& e) {
        throw Error(fmt::format("{}: bad optimizer metadata: {}", file.source(), e.what()));
    }
    std::istringstream rng(metadata_field(file, "rng"));
    rng >> model_.rnn().dropout_rng();
    if (!rng) {
        throw Error(
            fmt::format("{}: metadata 'rng' is not a valid generator state", file.source()));
    }
    carried_ = model_.rnn().zero_state(config_.batch);
    for (std::size_t i = 0; i < carried_.size(); ++i) {
        for (std::size_t k = 0; k < carried_[i].size(); ++k) {
            Tensor<float>& target = carried_[i][k];
            file.read_into(fmt::format("carry.{}.{}", i, k), target,
                           {target.rows(), target.cols()});
        }
    }
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

std::string sample(CharModel& model, const SampleConfig& config) {
    if (config.prime.empty()) {
        throw Error("sample: --prime must not be empty");
    }
    if (!config.argmax && !(config.temperature > 0)) {
        throw Error(fmt::format("sample: --temperature must be > 0, got {}", config.temperature));
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
    std::string text = config.prime;
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
        tape.clear();
        const std::int32_t input[] = {next};
        logits = model.forward(tape, input, 1, nn::state_on_tape(tape, state), &final_state);
        state = nn::detach_state(final_state);
        last = logits.value_tensor();
    }
    model.rnn().set_training(was_training);
    return text;
}

} // namespace char_rnn
