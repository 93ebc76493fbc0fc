// Files and checkpoints of the character model: bounded text reads, output-path checks, strict
// config/metadata parsing (every number range-checked before it is converted), config-vs-tensor
// checks before a model is built, strict weight loading, and the trainer's save and resume.
#include <algorithm>
#include <cmath>
#include <fstream>
#include <limits>
#include <set>
#include <sstream>

#include <fmt/ranges.h>
#include <nlohmann/json.hpp>
#include <unistd.h>

#include "char_rnn.hpp"

namespace char_rnn {

using cellgrad::Error;
using cellgrad::Parameter;
using json = nlohmann::json;
namespace fs = std::filesystem;
namespace io = cellgrad::io;

// ---- files -----------------------------------------------------------------------------------

std::string read_file(const fs::path& path, std::uintmax_t max_bytes) {
    std::error_code ec;
    const fs::file_status status = fs::status(path, ec);
    if (status.type() == fs::file_type::not_found) {
        throw Error(fmt::format("cannot open '{}' for reading: no such file", path.string()));
    }
    if (fs::is_directory(status)) {
        throw Error(fmt::format("'{}' is a directory, not a text file", path.string()));
    }
    if (!fs::is_regular_file(status)) {
        throw Error(fmt::format("'{}' is not a regular file (a device, pipe or socket); give a "
                                "text file",
                                path.string()));
    }
    const std::uintmax_t size = fs::file_size(path, ec);
    if (ec) {
        throw Error(fmt::format("cannot read '{}': {}", path.string(), ec.message()));
    }
    if (size > max_bytes) {
        throw Error(fmt::format("'{}' is {} bytes, more than the {}-byte limit", path.string(),
                                size, max_bytes));
    }
    std::ifstream file(path, std::ios::binary);
    if (!file) {
        throw Error(fmt::format("cannot open '{}' for reading", path.string()));
    }
    std::string text(static_cast<std::size_t>(size), '\0');
    file.read(text.data(), static_cast<std::streamsize>(size));
    text.resize(static_cast<std::size_t>(file.gcount()));
    if (text.empty()) {
        throw Error(fmt::format("'{}' is empty", path.string()));
    }
    return text;
}

namespace {

/// `path` after following symbolic links (as far as they resolve).
fs::path resolved(const fs::path& path) {
    std::error_code ec;
    fs::path absolute = fs::absolute(path, ec);
    if (ec) {
        absolute = path;
    }
    fs::path out = fs::weakly_canonical(absolute, ec);
    return ec ? absolute.lexically_normal() : out;
}

} // namespace

bool same_path(const fs::path& a, const fs::path& b) {
    std::error_code ec;
    if (fs::equivalent(a, b, ec) && !ec) {
        return true;
    }
    return resolved(a) == resolved(b);
}

void check_output_path(const fs::path& path, const std::string& option) {
    const fs::path target = resolved(path);
    std::error_code ec;
    if (fs::is_directory(target, ec)) {
        throw Error(fmt::format("{} '{}' is a directory; give a file name", option, path.string()));
    }
    const fs::path dir = target.parent_path().empty() ? fs::path(".") : target.parent_path();
    if (fs::exists(dir, ec) && !fs::is_directory(dir, ec)) {
        throw Error(
            fmt::format("{} '{}': '{}' is not a directory", option, path.string(), dir.string()));
    }
    if (!fs::is_directory(dir, ec)) {
        throw Error(fmt::format("{} '{}': the directory '{}' does not exist", option, path.string(),
                                dir.string()));
    }
    if (::access(dir.c_str(), W_OK | X_OK) != 0) {
        throw Error(fmt::format("{} '{}': the directory '{}' is not writable", option,
                                path.string(), dir.string()));
    }
}

// ---- strict JSON fields ----------------------------------------------------------------------

namespace {

/// A JSON value for a message, cut short.
std::string shown(const json& value) {
    std::string text = value.dump();
    return text.size() > 40 ? text.substr(0, 40) + "..." : text;
}

/// object[key] as a whole number from low to high; throws naming `what` and the key.
std::uint64_t whole_field(const json& object, const char* key, std::uint64_t low,
                          std::uint64_t high, const std::string& what) {
    if (!object.contains(key)) {
        throw Error(fmt::format("{} has no '{}'", what, key));
    }
    const json& value = object.at(key);
    if (!value.is_number_unsigned() || value.get<std::uint64_t>() < low ||
        value.get<std::uint64_t>() > high) {
        throw Error(fmt::format("{}: '{}' must be a whole number from {} to {}, got {}", what, key,
                                low, high, shown(value)));
    }
    return value.get<std::uint64_t>();
}

/// object[key] as a finite number from low to high; throws naming `what` and the key.
double real_field(const json& object, const char* key, double low, double high,
                  const std::string& what) {
    if (!object.contains(key)) {
        throw Error(fmt::format("{} has no '{}'", what, key));
    }
    const json& value = object.at(key);
    if (!value.is_number() || !std::isfinite(value.get<double>()) || value.get<double>() < low ||
        value.get<double>() > high) {
        throw Error(fmt::format("{}: '{}' must be a number from {} to {}, got {}", what, key, low,
                                high, shown(value)));
    }
    return value.get<double>();
}

/// object[key] as one of `choices`; throws naming `what` and the key.
template <class Choices>
std::string choice_field(const json& object, const char* key, const Choices& choices,
                         const std::string& what) {
    if (!object.contains(key)) {
        throw Error(fmt::format("{} has no '{}'", what, key));
    }
    const json& value = object.at(key);
    for (const auto& choice : choices) {
        if (value.is_string() && value.get<std::string>() == choice) {
            return choice;
        }
    }
    throw Error(fmt::format("{}: '{}' must be one of {}, got {}", what, key,
                            fmt::join(choices, ", "), shown(value)));
}

/// Parses a JSON object; throws naming `what`.
json parse_object(const std::string& text, const std::string& what) {
    json object = json::parse(text, nullptr, false);
    if (!object.is_object()) {
        throw Error(fmt::format("{} is not a JSON object", what));
    }
    return object;
}

/// A whole number in decimal digits from 0 to max_step; throws naming `what`.
std::int64_t parse_step(const std::string& text, const std::string& what) {
    const bool digits = !text.empty() && text.size() <= 16 &&
                        text.find_first_not_of("0123456789") == std::string::npos;
    if (!digits || std::stoll(text) > max_step) {
        throw Error(fmt::format("{} must be a whole number from 0 to {}, got '{}'", what, max_step,
                                text.substr(0, 40)));
    }
    return std::stoll(text);
}

} // namespace

std::string ModelConfig::to_json() const {
    return json{{"cell", cell},           {"hidden", hidden},   {"layers", layers},
                {"embedding", embedding}, {"dropout", dropout}, {"forget_bias", forget_bias}}
        .dump();
}

void ModelConfig::validate() const {
    // The same checks as reading a config from a file, so flags and files agree.
    from_json(to_json());
}

ModelConfig ModelConfig::from_json(const std::string& text) {
    const std::string what = "model config";
    const json object = parse_object(text, what);
    ModelConfig config;
    config.cell = choice_field(object, "cell", cellgrad::nn::cell_names(), what);
    config.hidden = whole_field(object, "hidden", 1, max_width, what);
    config.layers = whole_field(object, "layers", 1, max_layers, what);
    config.embedding = whole_field(object, "embedding", 1, max_width, what);
    config.dropout = real_field(object, "dropout", 0, max_dropout, what);
    config.forget_bias = real_field(object, "forget_bias", -max_forget_bias, max_forget_bias, what);
    return config;
}

std::string TrainConfig::to_json() const {
    return json{{"seq", seq}, {"batch", batch}, {"optimizer", optimizer},
                {"lr", lr},   {"clip", clip},   {"seed", seed}}
        .dump();
}

void TrainConfig::validate() const {
    from_json(to_json());
}

TrainConfig TrainConfig::from_json(const std::string& text) {
    const std::string what = "train settings";
    const json object = parse_object(text, what);
    TrainConfig config;
    config.seq = whole_field(object, "seq", 1, max_seq, what);
    config.batch = whole_field(object, "batch", 1, max_batch, what);
    config.optimizer =
        choice_field(object, "optimizer",
                     std::initializer_list<const char*>{"adam", "sgd", "adagrad", "rmsprop"}, what);
    config.lr = real_field(object, "lr", 0, max_lr, what);
    if (config.lr == 0) {
        throw Error(fmt::format("{}: 'lr' must be above 0", what));
    }
    config.clip = real_field(object, "clip", 0, max_clip, what);
    config.seed = whole_field(object, "seed", 0, std::numeric_limits<std::uint64_t>::max(), what);
    return config;
}

// ---- checkpoints -----------------------------------------------------------------------------

namespace {

/// Throws naming the tensor unless every value is finite.
template <class T>
void require_finite(const T* data, std::size_t size, const std::string& name,
                    const std::string& where) {
    if (!std::all_of(data, data + size, [](T x) { return std::isfinite(x); })) {
        throw Error(fmt::format("{}: tensor '{}' holds inf or NaN values", where, name));
    }
}

const std::string& metadata_field(const io::SafetensorsFile& file, const std::string& key) {
    const auto found = file.metadata().find(key);
    if (found == file.metadata().end()) {
        throw Error(fmt::format("{}: metadata has no '{}' (not a cellgrad char_rnn checkpoint?)",
                                file.source(), key));
    }
    return found->second;
}

/// Runs `read` and puts the file's name in front of any error it throws.
template <class F>
auto in_file(const io::SafetensorsFile& file, const std::string& key, F&& read) {
    try {
        return read(metadata_field(file, key));
    } catch (const Error& e) {
        const std::string message = e.what();
        if (message.find(file.source()) != std::string::npos) {
            throw;
        }
        throw Error(fmt::format("{}: metadata '{}': {}", file.source(), key, message));
    }
}

Vocabulary vocabulary_from(const io::SafetensorsFile& file) {
    return in_file(file, "vocabulary", [](const std::string& text) {
        const json array = json::parse(text, nullptr, false);
        if (!array.is_array() || array.empty() || array.size() > 256) {
            throw Error("must be a JSON array of 1 to 256 byte values");
        }
        std::vector<std::uint8_t> bytes;
        for (const json& value : array) {
            if (!value.is_number_unsigned() || value.get<std::uint64_t>() > 255) {
                throw Error(fmt::format("entries must be whole numbers from 0 to 255, got {}",
                                        shown(value)));
            }
            bytes.push_back(static_cast<std::uint8_t>(value.get<std::uint64_t>()));
        }
        return Vocabulary(std::move(bytes));
    });
}

std::string rng_text(const std::mt19937_64& rng) {
    std::ostringstream text;
    text << rng;
    return text.str();
}

/// The stored shape of `name` must be `shape`; checked before a model of that config is built,
/// so that a config can never ask for more memory than the file's own tensors hold.
void expect_shape(const io::SafetensorsFile& file, const std::string& name,
                  const std::vector<std::size_t>& shape, const ModelConfig& config) {
    if (!file.has(name)) {
        throw Error(fmt::format("{}: model config {} needs tensor '{}', which the file does not "
                                "have",
                                file.source(), config.to_json(), name));
    }
    if (file.shape(name) != shape) {
        throw Error(fmt::format("{}: tensor '{}' has shape [{}] but model config {} needs [{}]",
                                file.source(), name, fmt::join(file.shape(name), ", "),
                                config.to_json(), fmt::join(shape, ", ")));
    }
}

/// Checks the file's model tensors against `config` and `vocabulary` (PyTorch state-dict shapes).
void check_config_fits(const io::SafetensorsFile& file, const ModelConfig& config,
                       std::size_t vocabulary) {
    const cellgrad::nn::CellShape cell = cellgrad::nn::cell_shape(config.cell);
    const std::size_t H = config.hidden;
    expect_shape(file, "embedding.weight", {vocabulary, config.embedding}, config);
    for (std::size_t l = 0; l < config.layers; ++l) {
        expect_shape(file, fmt::format("rnn.weight_ih_l{}", l),
                     {cell.gates * H, l == 0 ? config.embedding : H}, config);
        expect_shape(file, fmt::format("rnn.weight_hh_l{}", l),
                     {cell.gates * H, cell.recurrent_inputs * H}, config);
    }
    expect_shape(file, "decoder.weight", {vocabulary, H}, config);
}

} // namespace

void save_model(const fs::path& path, CharModel& model, std::vector<io::TensorEntry> extra,
                io::Metadata extra_metadata) {
    std::vector<io::TensorEntry> entries;
    for (Parameter<float>* parameter : model.parameters()) {
        require_finite(parameter->value.data(), parameter->value.size(), parameter->name,
                       fmt::format("refusing to save '{}'", path.string()));
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

void load_weights(const io::SafetensorsFile& file, CharModel& model) {
    std::set<std::string> expected;
    for (Parameter<float>* parameter : model.parameters()) {
        file.read_into(*parameter);
        require_finite(parameter->value.data(), parameter->value.size(), parameter->name,
                       file.source());
        expected.insert(parameter->name);
    }
    for (const std::string& name : file.names()) {
        const bool training_state = name.starts_with("optimizer.") || name.starts_with("carry.");
        if (!expected.contains(name) && !training_state) {
            throw Error(fmt::format("{}: unexpected tensor '{}' (not a parameter of the model "
                                    "config {}: a different architecture?)",
                                    file.source(), name, model.config().to_json()));
        }
    }
}

std::unique_ptr<CharModel> load_model(const io::SafetensorsFile& file) {
    const ModelConfig config = in_file(
        file, "config", [](const std::string& text) { return ModelConfig::from_json(text); });
    Vocabulary vocabulary = vocabulary_from(file);
    check_config_fits(file, config, vocabulary.size());
    auto model = std::make_unique<CharModel>(config, std::move(vocabulary), 0);
    load_weights(file, *model);
    return model;
}

std::unique_ptr<CharModel> load_model(const fs::path& path) {
    return load_model(io::load_safetensors(path));
}

CheckpointInfo read_checkpoint_info(const io::SafetensorsFile& file) {
    CheckpointInfo info;
    info.model = in_file(file, "config",
                         [](const std::string& text) { return ModelConfig::from_json(text); });
    info.train = in_file(file, "train",
                         [](const std::string& text) { return TrainConfig::from_json(text); });
    info.vocabulary = vocabulary_from(file);
    info.step = in_file(file, "step",
                        [](const std::string& text) { return parse_step(text, "the step count"); });
    if (file.metadata().contains("best_val")) {
        info.best_val = in_file(file, "best_val", [](const std::string& text) {
            const json object = parse_object(text, "best validation loss");
            return real_field(object, "nats", 0, 1e6, "best validation loss");
        });
    }
    return info;
}

void Trainer::save(const fs::path& path) {
    // The carried state of all B streams: gathered from every rank in a data-parallel run.
    std::vector<std::vector<Tensor<float>>> gathered;
    if (parallel_.ranks > 1) {
        for (const auto& layer : carried_) {
            gathered.emplace_back();
            for (const Tensor<float>& part : layer) {
                gathered.back().push_back(parallel_.gather_rows(part));
            }
        }
        if (!parallel_.leads()) {
            return; // rank 0 writes
        }
    }
    const auto& carried = parallel_.ranks > 1 ? gathered : carried_;
    const std::string where = fmt::format("refusing to save '{}'", path.string());
    std::vector<io::TensorEntry> extra;
    for (const cellgrad::StateTensor<float>& state : optimizer_->state_tensors()) {
        require_finite(state.tensor->data(), state.tensor->size(), "optimizer." + state.name,
                       where);
        extra.push_back(io::make_entry("optimizer." + state.name, *state.tensor));
    }
    for (std::size_t i = 0; i < carried.size(); ++i) {
        for (std::size_t k = 0; k < carried[i].size(); ++k) {
            const std::string name = fmt::format("carry.{}.{}", i, k);
            require_finite(carried[i][k].data(), carried[i][k].size(), name, where);
            extra.push_back(io::make_entry(name, carried[i][k]));
        }
    }
    io::Metadata metadata;
    metadata["step"] = std::to_string(step_);
    metadata["rng"] = rng_text(model_.rnn().dropout_rng());
    metadata["optimizer"] = json{{"name", optimizer_->name()},
                                 {"lr", optimizer_->lr()},
                                 {"step_count", optimizer_->step_count()}}
                                .dump();
    metadata["train"] = config_.to_json();
    if (best_val_) {
        metadata["best_val"] = json{{"nats", *best_val_}}.dump();
    }
    if (!history_.empty()) {
        metadata["history"] = history_.to_json();
    }
    save_model(path, model_, std::move(extra), std::move(metadata));
}

void Trainer::resume(const fs::path& path) {
    resume(io::load_safetensors(path));
}

void Trainer::resume(const io::SafetensorsFile& file) {
    const CheckpointInfo info = read_checkpoint_info(file);
    if (info.model.to_json() != model_config_.to_json()) {
        throw Error(fmt::format("{}: model config {} differs from this run's {}", file.source(),
                                info.model.to_json(), model_config_.to_json()));
    }
    if (info.train.to_json() != config_.to_json()) {
        throw Error(fmt::format("{}: train settings {} differ from this run's {}", file.source(),
                                info.train.to_json(), config_.to_json()));
    }
    if (info.vocabulary.bytes() != model_.vocabulary().bytes()) {
        throw Error(
            fmt::format("{}: the checkpoint's vocabulary differs from the data's", file.source()));
    }
    check_config_fits(file, model_config_, info.vocabulary.size());
    load_weights(file, model_);

    // Strict both ways: exactly this optimizer's state and this layer's carried state.
    std::set<std::string> expected;
    for (const cellgrad::StateTensor<float>& state : optimizer_->state_tensors()) {
        const std::string name = "optimizer." + state.name;
        file.read_into(name, *state.tensor, {state.tensor->rows(), state.tensor->cols()});
        require_finite(state.tensor->data(), state.tensor->size(), name, file.source());
        expected.insert(name);
    }
    // A checkpoint written before the first step has no carried state; nor needs one when the
    // next step starts the streams again (it resets the state itself).
    const bool carries = file.has("carry.0.0") || info.step % std::int64_t(windows_) != 0;
    // The file holds all B streams; this rank keeps its own rows (all of them when alone).
    const std::size_t first = parallel_.first_stream(config_.batch);
    const std::size_t streams = parallel_.end_stream(config_.batch) - first;
    carried_ =
        carries ? model_.rnn().zero_state(streams) : cellgrad::nn::RecurrentStateTensors<float>{};
    for (std::size_t i = 0; i < carried_.size(); ++i) {
        for (std::size_t k = 0; k < carried_[i].size(); ++k) {
            Tensor<float>& target = carried_[i][k];
            const std::string name = fmt::format("carry.{}.{}", i, k);
            Tensor<float> all(config_.batch, target.cols());
            file.read_into(name, all, {all.rows(), all.cols()});
            require_finite(all.data(), all.size(), name, file.source());
            std::copy_n(all.data() + first * all.cols(), target.size(), target.data());
            expected.insert(name);
        }
    }
    for (const std::string& name : file.names()) {
        if ((name.starts_with("optimizer.") || name.starts_with("carry.")) &&
            !expected.contains(name)) {
            throw Error(fmt::format("{}: unexpected tensor '{}' (not part of a {} run's state)",
                                    file.source(), name, config_.optimizer));
        }
    }

    in_file(file, "optimizer", [&](const std::string& text) {
        const std::string what = "optimizer state";
        const json optimizer = parse_object(text, what);
        const std::string name =
            choice_field(optimizer, "name",
                         std::initializer_list<const char*>{optimizer_->name().c_str()}, what);
        optimizer_->set_lr(real_field(optimizer, "lr", 0, TrainConfig::max_lr, what));
        optimizer_->set_step_count(
            static_cast<std::int64_t>(whole_field(optimizer, "step_count", 0, max_step, what)));
        return 0;
    });
    step_ = info.step;
    best_val_ = info.best_val;
    history_ = file.metadata().contains("history")
                   ? in_file(file, "history", TrainingHistory::from_json)
                   : TrainingHistory{};
    std::istringstream rng(metadata_field(file, "rng"));
    rng >> model_.rnn().dropout_rng();
    if (!rng) {
        throw Error(
            fmt::format("{}: metadata 'rng' is not a valid generator state", file.source()));
    }
}

} // namespace char_rnn
