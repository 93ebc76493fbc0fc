// The inspector: runs a character model over a text and records, per character and per layer,
// the STM (h), the LTM (c, LSTMs) and every gate the cell's math names (tape intermediates, so a
// new cell shows its own gates without inspector code), plus the top-5 next-character guesses.
// Then analyses (gate saturation, units that follow features of the text) and exports: a
// self-contained HTML page, JSON (schema in docs/inspect.md) and LSTMVis's HDF5 files.
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include "char_rnn.hpp"

namespace char_rnn {

/// One recorded quantity of a layer: values (N, H), time-major (row t = after character t).
struct Series {
    std::string name; ///< "h", "c" or the cell's gate name ("forget", "update", ...)
    std::vector<float> values;
};

/// What one layer (and direction) did over the text.
struct LayerRecording {
    std::string name; ///< "l0", "l1", or "l0.bwd" for a backward direction
    std::size_t layer = 0;
    std::vector<Series> series; ///< h, then c (LSTMs), then the gates in recording order
};

/// Everything the inspector recorded for one text.
struct Inspection {
    static constexpr std::size_t top_k = 5;
    std::string cell;
    std::size_t hidden = 0;
    std::size_t num_layers = 0;
    std::vector<std::uint8_t> vocabulary; ///< byte of each index
    std::string text;                     ///< the N characters run through the model
    std::vector<std::int32_t> tokens;     ///< their indices
    std::vector<LayerRecording> layers;
    std::vector<std::int32_t> top_index; ///< (N, top_k): likeliest next characters after t
    std::vector<float> top_prob;         ///< (N, top_k): their probabilities
    std::vector<float> next_prob;        ///< (N): probability given to character t + 1 (last: -1)
    std::string history_json;            ///< the checkpoint's training history, or empty
    std::string source;                  ///< the checkpoint's path
    std::size_t length() const { return text.size(); }
    /// The series `name` of layer recording `layer`, or nullptr.
    const Series* find(std::size_t layer, const std::string& name) const;
};

/// The model's pieces the inspector runs: an embedding table (V, E), a recurrent layer and a
/// decoder (V, H) + (V) — a CharModel's, or any built with nn::make_recurrent.
struct ModelParts {
    cellgrad::nn::Recurrent<float>* rnn = nullptr;
    cellgrad::Parameter<float>* embedding = nullptr;
    cellgrad::Parameter<float>* decoder_weight = nullptr;
    cellgrad::Parameter<float>* decoder_bias = nullptr;
    std::string cell;
    std::vector<std::uint8_t> vocabulary;
};

/// A CharModel's parts (found by their state-dict names).
ModelParts parts_of(CharModel& model);

/// Runs `text` (encoded with the parts' vocabulary; throws on an unknown byte) from a zero state,
/// batch 1, in chunks of `chunk` steps with the state carried, recording everything above.
Inspection inspect(const ModelParts& parts, const std::string& text, std::size_t chunk = 500);

/// Per gate unit: the fraction of characters where the gate is < 0.1 (left-saturated) and > 0.9
/// (right-saturated), as in Karpathy, Johnson & Fei-Fei (2015). Gates are the series other than
/// h and c whose values all lie in [0, 1].
struct Saturation {
    std::string gate;
    std::size_t layer = 0; ///< index into Inspection::layers
    std::vector<float> left, right;
};
std::vector<Saturation> saturation(const Inspection& inspection);

/// A simple feature of the text, one value per character.
struct TextFeature {
    std::string name;
    std::string description;
    std::vector<float> values;
};
/// inside quotes, inside brackets, position in the line, start of a word, after a newline, and
/// inside a verse-number-like run of digits.
std::vector<TextFeature> text_features(const std::string& text);

/// A unit whose activation follows a feature.
struct Correlation {
    std::string feature;
    std::size_t layer = 0;
    std::string series;
    std::size_t unit = 0;
    double r = 0; ///< Pearson correlation over the text
};
/// For each feature that varies over the text, the `per_feature` units (any layer, any series)
/// with the largest |r|.
std::vector<Correlation> interesting_units(const Inspection& inspection,
                                           std::size_t per_feature = 4);

/// The recordings as JSON (schema "cellgrad.inspect.v1", docs/inspect.md), values exact.
std::string inspection_json(const Inspection& inspection);

/// Page options: each series keeps as many bits per value (8 down to 4) as fit the page under
/// `max_bytes`, the costliest series giving up bits first.
struct PageOptions {
    std::size_t max_bytes = 4'900'000;
    std::string title;
};
/// What make_page chose.
struct PageInfo {
    std::size_t bytes = 0;
    int bits = 0;     ///< the fewest bits per value of any series
    int max_bits = 0; ///< the most
};
/// The self-contained HTML page (data and script inline, no network).
std::string make_page(const Inspection& inspection, const PageOptions& options,
                      PageInfo* info = nullptr);

/// True when this build can write LSTMVis's HDF5 files (libhdf5 found at build time).
bool lstmvis_supported();
/// Writes states.h5 (per layer: states{l} = c or h, output{l} = h, and the gates as
/// gate_{gate}{l}), train.h5 (word_ids), words.dict and lstm.yml into `directory` (created if
/// missing).
void write_lstmvis(const Inspection& inspection, const std::filesystem::path& directory);

} // namespace char_rnn
