// Character-level language model: vocabulary, corpus streams, the model (embedding -> recurrent
// layer -> linear decoder), training with carried state, evaluation, sampling and checkpoints.
// The command-line program is main.cpp; tests link this part directly.
#pragma once

#include <cstdint>
#include <filesystem>
#include <functional>
#include <memory>
#include <optional>
#include <random>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "cellgrad/cellgrad.hpp"
#include "cellgrad/io/safetensors.hpp"
#include "cellgrad/nn.hpp"
#include "cellgrad/optim/optim.hpp"
#include "history.hpp"

namespace char_rnn {

using cellgrad::Tensor;
using cellgrad::Var;

/// Bytes of a text mapped to dense indices in byte order.
class Vocabulary {
  public:
    /// The set of bytes occurring in `text`, sorted.
    static Vocabulary from_text(const std::string& text);
    /// A vocabulary from byte values in index order; throws on duplicates or values > 255.
    explicit Vocabulary(std::vector<std::uint8_t> bytes);
    Vocabulary() = default;
    /// Number of symbols.
    std::size_t size() const { return bytes_.size(); }
    /// Byte value of each index.
    const std::vector<std::uint8_t>& bytes() const { return bytes_; }
    /// Indices of `text`; throws naming the first byte not in the vocabulary and its position.
    std::vector<std::int32_t> encode(const std::string& text, const std::string& source) const;
    /// True when `byte` is in the vocabulary.
    bool contains(std::uint8_t byte) const { return index_[byte] >= 0; }
    /// Index of a byte in the vocabulary (must be contained).
    std::int32_t index(std::uint8_t byte) const { return index_[byte]; }

  private:
    std::vector<std::uint8_t> bytes_;
    std::int32_t index_[256] = {};
};

/// Largest text file read_file accepts by default (1 GiB; the program keeps 4 bytes per byte).
inline constexpr std::uintmax_t max_text_bytes = std::uintmax_t(1) << 30;

/// Reads a whole regular file of at most `max_bytes`; throws naming the file if it is missing, not
/// a regular file (a directory, a device such as /dev/zero, a pipe), larger, empty or unreadable.
std::string read_file(const std::filesystem::path& path, std::uintmax_t max_bytes = max_text_bytes);

/// Throws naming `option` and `path` unless a file can be written there atomically now: the
/// directory exists and is writable, and `path` (after symbolic links) is not a directory.
void check_output_path(const std::filesystem::path& path, const std::string& option);

/// True when `a` and `b` name the same file (compared after resolving links and `..`).
bool same_path(const std::filesystem::path& a, const std::filesystem::path& b);

/// Architecture of the model (stored in checkpoints as JSON).
struct ModelConfig {
    /// Most units in a layer or an embedding, and most layers, a config may ask for.
    static constexpr std::size_t max_width = 65536;
    static constexpr std::size_t max_layers = 64;
    /// Largest dropout probability and forget-gate bias magnitude.
    static constexpr double max_dropout = 0.99;
    static constexpr double max_forget_bias = 100;

    std::string cell = "lstm"; ///< lstm, gru or rnn (tanh)
    std::size_t hidden = 128;
    std::size_t layers = 2;
    std::size_t embedding = 64;
    double dropout = 0.0;
    double forget_bias = 0.0;
    /// The JSON object {"cell": ..., "hidden": ..., ...}.
    std::string to_json() const;
    /// Parses to_json()'s output; throws naming the bad field and its allowed range.
    static ModelConfig from_json(const std::string& json);
    /// Throws naming the first field outside its range (see the limits above).
    void validate() const;
};

/// Embedding (V, E) -> recurrent layer -> decoder (V, H), with PyTorch state-dict names.
class CharModel {
  public:
    /// Builds and initialises the model for `vocabulary` from `seed`.
    CharModel(const ModelConfig& config, Vocabulary vocabulary, std::uint64_t seed);
    /// Logits (T*B, V) for time-major indices (T*B) of `batch` streams, from `state` (zeros if
    /// empty); `final_state` receives the state after the last step.
    Var<float> forward(cellgrad::Tape<float>& tape, std::span<const std::int32_t> indices,
                       std::size_t batch, const cellgrad::nn::RecurrentState<float>& state,
                       cellgrad::nn::RecurrentState<float>* final_state);
    /// All parameters: embedding.weight, rnn.*, decoder.weight, decoder.bias.
    std::vector<cellgrad::Parameter<float>*> parameters();
    /// The configuration.
    const ModelConfig& config() const { return config_; }
    /// The vocabulary.
    const Vocabulary& vocabulary() const { return vocabulary_; }
    /// The recurrent layer (training flag, state helpers, dropout RNG).
    cellgrad::nn::Recurrent<float>& rnn() { return *rnn_; }

  private:
    ModelConfig config_;
    Vocabulary vocabulary_;
    std::mt19937_64 init_rng_;
    cellgrad::nn::Embedding<float> embedding_;
    std::unique_ptr<cellgrad::nn::Recurrent<float>> rnn_;
    cellgrad::nn::Linear<float> decoder_;
};

/// Training hyper-parameters (the `train` subcommand's options).
struct TrainConfig {
    /// Longest window, most streams, largest learning rate and clip a run may ask for.
    static constexpr std::size_t max_seq = 100000;
    static constexpr std::size_t max_batch = 100000;
    static constexpr double max_lr = 100;
    static constexpr double max_clip = 1e6;

    std::size_t seq = 50;
    std::size_t batch = 50;
    std::string optimizer = "adam"; ///< adam, sgd, adagrad or rmsprop
    double lr = 2e-3;
    double clip = 5.0; ///< global gradient-norm clip; 0 = none
    std::uint64_t seed = 0;
    /// The JSON object {"seq": ..., "batch": ..., ...}.
    std::string to_json() const;
    /// Parses to_json()'s output; throws naming the bad field and its allowed range.
    static TrainConfig from_json(const std::string& json);
    /// Throws naming the first field outside its range (see the limits above).
    void validate() const;
};

/// Largest step count a checkpoint may record (10^15: far from int64 overflow).
inline constexpr std::int64_t max_step = 1'000'000'000'000'000;

/// What a training checkpoint says about its run, read before anything is built.
struct CheckpointInfo {
    ModelConfig model;
    TrainConfig train;
    Vocabulary vocabulary;
    std::int64_t step = 0;
    std::optional<double> best_val; ///< best validation loss so far (nats/char), if any
};

/// Mean cross-entropy of next-character predictions.
struct EvalResult {
    double nats = 0;
    std::size_t predictions = 0;
    /// Bits per character.
    double bits() const;
};

/// A trainer's share of a data-parallel run and how it reaches the other ranks (main.cpp fills it
/// from cellgrad::distributed over MPI). Rank r trains streams [first_stream, end_stream) of the
/// global batch; the default is one rank training them all.
struct DataParallel {
    std::size_t rank = 0;
    std::size_t ranks = 1;
    /// Replaces every parameter's gradient, and `extra`, by its sum over the ranks (in rank order:
    /// the same bits on every rank).
    std::function<void(std::span<float> extra)> sum_gradients;
    /// Every rank's rows of `local` stacked in rank order, on rank 0 (an empty tensor elsewhere).
    std::function<Tensor<float>(const Tensor<float>& local)> gather_rows;
    /// Rank 0's values copied to every rank.
    std::function<void(std::span<double> values)> broadcast;
    /// First stream of `batch` that this rank trains.
    std::size_t first_stream(std::size_t batch) const { return rank * batch / ranks; }
    /// One past this rank's last stream.
    std::size_t end_stream(std::size_t batch) const { return (rank + 1) * batch / ranks; }
    /// True on the rank that validates, prints and writes files (rank 0).
    bool leads() const { return rank == 0; }
};

/// Model + optimizer + the position in the training streams: everything a resume needs.
class Trainer {
  public:
    /// Fresh model and optimizer over the training text `train` (already encoded).
    Trainer(const ModelConfig& model, const TrainConfig& train, Vocabulary vocabulary,
            std::vector<std::int32_t> train_indices);
    /// Makes this trainer one rank of a data-parallel run: it trains its share of the streams and
    /// sums gradients over the ranks before clipping and the optimizer step, so every rank steps
    /// identically. Call before resume() and the first step; throws if a rank would get no stream.
    void set_data_parallel(DataParallel parallel);
    /// One training step on window `step` of the B streams (this rank's share of them in a
    /// data-parallel run); returns the mean loss of all B streams (nats/char).
    double train_step();
    /// Steps done so far.
    std::int64_t step() const { return step_; }
    /// Windows per pass over the streams (steps before the streams wrap).
    std::size_t windows_per_epoch() const { return windows_; }
    /// The model.
    CharModel& model() { return model_; }
    /// The optimizer.
    cellgrad::Optimizer<float>& optimizer() { return *optimizer_; }
    /// Best validation loss so far (carried in checkpoints so that --best survives a resume).
    std::optional<double> best_val() const { return best_val_; }
    /// Records a new best validation loss.
    void set_best_val(double nats) { best_val_ = nats; }
    /// Losses and samples at each validation (saved in checkpoints, restored by resume).
    TrainingHistory& history() { return history_; }
    /// Writes weights, optimizer state, step, carried state, RNG state and the best validation
    /// loss atomically; refuses (throws) if any of them is not finite. In a data-parallel run
    /// every rank calls it (the carried state of all B streams is gathered) and rank 0 writes.
    void save(const std::filesystem::path& path);
    /// Restores everything save() wrote (exact resume); throws naming the file on any mismatch.
    /// A checkpoint holds all B streams, so a run may resume with any number of ranks.
    void resume(const std::filesystem::path& path);
    /// resume() from a file already loaded.
    void resume(const cellgrad::io::SafetensorsFile& file);

  private:
    ModelConfig model_config_;
    TrainConfig config_;
    CharModel model_;
    std::unique_ptr<cellgrad::Optimizer<float>> optimizer_;
    std::vector<std::int32_t> train_;
    std::size_t stream_length_ = 0;
    std::size_t windows_ = 0;
    std::int64_t step_ = 0;
    std::optional<double> best_val_;
    TrainingHistory history_;
    cellgrad::nn::RecurrentStateTensors<float> carried_;
    DataParallel parallel_;
    cellgrad::Tape<float> tape_;
    std::vector<std::int32_t> inputs_;
    std::vector<std::int32_t> targets_;
};

/// Mean next-character cross-entropy over `indices` as one stream from a zero state (batch 1),
/// run in chunks of `chunk` steps without gradients.
EvalResult evaluate(CharModel& model, std::span<const std::int32_t> indices,
                    std::size_t chunk = 256);

/// Sampling options.
struct SampleConfig {
    std::size_t length = 500;
    double temperature = 1.0;
    std::string prime = "\n";
    std::uint64_t seed = 0;
    bool argmax = false;
};

/// Feeds the prime, then draws `length` characters, handing prime + sample to `emit` in pieces
/// as they are made (so that a long sample streams).
void sample(CharModel& model, const SampleConfig& config,
            const std::function<void(std::string_view)>& emit);

/// Feeds the prime, then draws `length` characters; returns prime + sample.
std::string sample(CharModel& model, const SampleConfig& config);

/// Writes the model's weights (and extra tensors/metadata) as safetensors, atomically.
void save_model(const std::filesystem::path& path, CharModel& model,
                std::vector<cellgrad::io::TensorEntry> extra = {},
                cellgrad::io::Metadata extra_metadata = {});

/// Loads a model saved by save_model/Trainer::save; throws naming the file on any mismatch.
std::unique_ptr<CharModel> load_model(const std::filesystem::path& path);

/// load_model() from a file already loaded: the config is checked against the stored tensors'
/// shapes before the model is built, and loading is strict (no missing or unexpected tensors).
std::unique_ptr<CharModel> load_model(const cellgrad::io::SafetensorsFile& file);

/// The config, train settings, vocabulary, step and best validation loss of a training
/// checkpoint; throws naming the file and the field for anything missing or out of range.
CheckpointInfo read_checkpoint_info(const cellgrad::io::SafetensorsFile& file);

/// Copies the weights of `file` (a checkpoint's tensors) into `model`; names and shapes must
/// match, and every other tensor must be training state ("optimizer.*", "carry.*").
void load_weights(const cellgrad::io::SafetensorsFile& file, CharModel& model);

} // namespace char_rnn
