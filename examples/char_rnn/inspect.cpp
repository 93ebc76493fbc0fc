// The inspector's recording (one pass with the tape keeping the cells' named gates) and its
// analyses (gate saturation, units that follow simple features of the text).
#include "inspect.hpp"

#include <algorithm>
#include <cmath>
#include <map>
#include <numeric>

namespace char_rnn {

using cellgrad::Error;
using cellgrad::Parameter;
using cellgrad::Tape;
using cellgrad::Var;
namespace nn = cellgrad::nn;

const Series* Inspection::find(std::size_t layer, const std::string& name) const {
    for (const Series& series : layers.at(layer).series) {
        if (series.name == name) {
            return &series;
        }
    }
    return nullptr;
}

ModelParts parts_of(CharModel& model) {
    ModelParts parts;
    parts.rnn = &model.rnn();
    parts.cell = model.config().cell;
    parts.vocabulary = model.vocabulary().bytes();
    for (Parameter<float>* parameter : model.parameters()) {
        if (parameter->name == "embedding.weight") {
            parts.embedding = parameter;
        } else if (parameter->name == "decoder.weight") {
            parts.decoder_weight = parameter;
        } else if (parameter->name == "decoder.bias") {
            parts.decoder_bias = parameter;
        }
    }
    if (parts.embedding == nullptr || parts.decoder_weight == nullptr) {
        throw Error("inspect: the model has no embedding.weight or decoder.weight");
    }
    return parts;
}

namespace {

/// Layer, direction and step of a label such as "lstm.l1.fwd t=37".
struct Where {
    std::size_t layer = 0;
    bool reverse = false;
    std::size_t t = 0;
};

bool parse_label(const std::string& label, Where& where) {
    const std::size_t at_t = label.rfind(" t=");
    if (at_t == std::string::npos) {
        return false;
    }
    const std::string head = label.substr(0, at_t);
    const bool forward = head.ends_with(".fwd");
    if (!forward && !head.ends_with(".bwd")) {
        return false;
    }
    const std::size_t at_l = head.rfind(".l", head.size() - 4);
    if (at_l == std::string::npos) {
        return false;
    }
    try {
        where.layer = std::stoul(head.substr(at_l + 2, head.size() - 4 - at_l - 2));
        where.t = std::stoul(label.substr(at_t + 3));
    } catch (const std::exception&) {
        return false;
    }
    where.reverse = !forward;
    return true;
}

/// Index of series `name` in `layer`, added (sized for `n` x `hidden` values) if new.
std::size_t series_index(LayerRecording& layer, const std::string& name, std::size_t n,
                         std::size_t hidden) {
    for (std::size_t i = 0; i < layer.series.size(); ++i) {
        if (layer.series[i].name == name) {
            return i;
        }
    }
    layer.series.push_back({name, std::vector<float>(n * hidden, 0.0f)});
    return layer.series.size() - 1;
}

} // namespace

Inspection inspect(const ModelParts& parts, const std::string& text, std::size_t chunk) {
    if (text.empty()) {
        throw Error("inspect: the text is empty");
    }
    nn::Recurrent<float>& rnn = *parts.rnn;
    const Vocabulary vocabulary(parts.vocabulary);
    Inspection out;
    out.cell = parts.cell;
    out.hidden = rnn.options().hidden_size;
    out.num_layers = rnn.options().num_layers;
    out.vocabulary = parts.vocabulary;
    out.text = text;
    out.tokens = vocabulary.encode(text, "inspect: the text");
    const std::size_t N = text.size();
    const std::size_t H = out.hidden;
    const std::size_t V = parts.vocabulary.size();
    const std::size_t directions = rnn.directions();
    for (std::size_t l = 0; l < out.num_layers; ++l) {
        for (std::size_t d = 0; d < directions; ++d) {
            LayerRecording layer;
            layer.layer = l;
            layer.name = fmt::format("l{}{}", l, d == 1 ? ".bwd" : "");
            layer.series.push_back({"h", std::vector<float>(N * H)});
            if (rnn.state_size() > 1) {
                layer.series.push_back({"c", std::vector<float>(N * H)});
            }
            out.layers.push_back(std::move(layer));
        }
    }
    out.top_index.assign(N * Inspection::top_k, 0);
    out.top_prob.assign(N * Inspection::top_k, 0.0f);
    out.next_prob.assign(N, -1.0f);

    const bool was_training = rnn.training();
    rnn.set_training(false);
    cellgrad::NoGradGuard no_grad;
    Tape<float> tape;
    tape.keep_intermediates(true);
    nn::RecurrentStateTensors<float> state = rnn.zero_state(1);
    // A backward direction sees the whole text at once: chunks would cut it.
    const std::size_t step = directions > 1 ? N : std::max<std::size_t>(chunk, 1);
    std::vector<double> probabilities(V);
    for (std::size_t begin = 0; begin < N; begin += step) {
        const std::size_t steps = std::min(step, N - begin);
        tape.clear();
        const std::span<const std::int32_t> tokens(out.tokens.data() + begin, steps);
        const Var<float> embedded = cellgrad::gather_rows(tape.param(*parts.embedding), tokens);
        nn::RecurrentOutput<float> run = rnn.forward(
            embedded, 1,
            directions > 1 ? nn::RecurrentState<float>{} : nn::state_on_tape(tape, state));
        const Var<float> logits =
            cellgrad::linear(run.output, tape.param(*parts.decoder_weight),
                             parts.decoder_bias != nullptr ? tape.param(*parts.decoder_bias)
                                                           : Var<float>{}); // (steps, V)
        state = nn::detach_state(run.final_state);
        // The states: h (k = 0) and c (k = 1) after each step.
        for (std::size_t index = 0; index < out.layers.size(); ++index) {
            for (std::size_t k = 0; k < std::min<std::size_t>(2, rnn.state_size()); ++k) {
                std::vector<float>& values = out.layers[index].series[k].values;
                for (std::size_t t = 0; t < steps; ++t) {
                    const cellgrad::View<const float> v = run.states[index][t][k].value();
                    std::copy(v.row(0), v.row(0) + H,
                              values.begin() + std::ptrdiff_t((begin + t) * H));
                }
            }
        }
        // The named gates, wherever the cell's math put them; a name met twice in one step (two
        // nodes naming "candidate") gets "#2".
        std::map<std::pair<std::size_t, std::size_t>, std::vector<std::string>> seen;
        for (const cellgrad::Intermediate<float>& kept : tape.intermediates()) {
            Where where;
            if (!parse_label(kept.label, where) || where.layer >= out.num_layers ||
                where.t >= steps || kept.value.cols != H) {
                continue;
            }
            const std::size_t index = where.layer * directions + (where.reverse ? 1 : 0);
            std::vector<std::string>& names = seen[{index, where.t}];
            std::string name = kept.name;
            const auto repeats = std::count(names.begin(), names.end(), name);
            names.push_back(name);
            if (repeats > 0) {
                name += fmt::format("#{}", repeats + 1);
            }
            LayerRecording& layer = out.layers[index];
            std::vector<float>& values = layer.series[series_index(layer, name, N, H)].values;
            std::copy(kept.value.row(0), kept.value.row(0) + H,
                      values.begin() + std::ptrdiff_t((begin + where.t) * H));
        }
        // The top-k next characters and the probability of the one that came.
        const cellgrad::View<const float> z = logits.value();
        for (std::size_t t = 0; t < steps; ++t) {
            const float* row = z.row(t);
            const float largest = *std::max_element(row, row + V);
            double total = 0;
            for (std::size_t c = 0; c < V; ++c) {
                probabilities[c] = std::exp(double(row[c] - largest));
                total += probabilities[c];
            }
            std::vector<std::int32_t> order(V);
            std::iota(order.begin(), order.end(), 0);
            const std::size_t k = std::min(Inspection::top_k, V);
            std::partial_sort(order.begin(), order.begin() + std::ptrdiff_t(k), order.end(),
                              [&](std::int32_t a, std::int32_t b) {
                                  return probabilities[std::size_t(a)] >
                                         probabilities[std::size_t(b)];
                              });
            const std::size_t at = begin + t;
            for (std::size_t i = 0; i < k; ++i) {
                out.top_index[at * Inspection::top_k + i] = order[i];
                out.top_prob[at * Inspection::top_k + i] =
                    float(probabilities[std::size_t(order[i])] / total);
            }
            if (at + 1 < N) {
                out.next_prob[at] = float(probabilities[std::size_t(out.tokens[at + 1])] / total);
            }
        }
    }
    rnn.set_training(was_training);
    return out;
}

// ---- analyses --------------------------------------------------------------------------------

namespace {

bool is_gate(const Series& series) {
    if (series.name == "h" || series.name == "c") {
        return false;
    }
    return std::all_of(series.values.begin(), series.values.end(),
                       [](float v) { return v >= 0.0f && v <= 1.0f; });
}

} // namespace

std::vector<Saturation> saturation(const Inspection& inspection) {
    std::vector<Saturation> found;
    const std::size_t N = inspection.length();
    const std::size_t H = inspection.hidden;
    for (std::size_t l = 0; l < inspection.layers.size(); ++l) {
        for (const Series& series : inspection.layers[l].series) {
            if (!is_gate(series)) {
                continue;
            }
            Saturation s{series.name, l, std::vector<float>(H), std::vector<float>(H)};
            for (std::size_t t = 0; t < N; ++t) {
                for (std::size_t j = 0; j < H; ++j) {
                    const float v = series.values[t * H + j];
                    s.left[j] += v < 0.1f ? 1.0f : 0.0f;
                    s.right[j] += v > 0.9f ? 1.0f : 0.0f;
                }
            }
            for (std::size_t j = 0; j < H; ++j) {
                s.left[j] /= float(N);
                s.right[j] /= float(N);
            }
            found.push_back(std::move(s));
        }
    }
    return found;
}

std::vector<TextFeature> text_features(const std::string& text) {
    const std::size_t N = text.size();
    TextFeature quotes{"quotes", "inside double quotes", std::vector<float>(N)};
    TextFeature brackets{"brackets", "inside ( ) or [ ]", std::vector<float>(N)};
    TextFeature line{"line position", "characters since the last newline", std::vector<float>(N)};
    TextFeature word{"word start", "first letter of a word", std::vector<float>(N)};
    TextFeature newline{"after newline", "first character of a line", std::vector<float>(N)};
    TextFeature digits{"number", "inside a run of digits (verse numbers)", std::vector<float>(N)};
    bool quoted = false;
    int depth = 0;
    float column = 0;
    auto letter = [](char c) { return std::isalpha(static_cast<unsigned char>(c)) != 0; };
    for (std::size_t t = 0; t < N; ++t) {
        const char c = text[t];
        const char before = t > 0 ? text[t - 1] : '\n';
        if (c == '"') {
            quoted = !quoted;
        }
        if (c == '(' || c == '[') {
            ++depth;
        }
        quotes.values[t] = quoted || c == '"' ? 1.0f : 0.0f;
        brackets.values[t] = depth > 0 ? 1.0f : 0.0f;
        if (c == ')' || c == ']') {
            depth = std::max(0, depth - 1);
        }
        column = before == '\n' ? 0 : column + 1;
        line.values[t] = column;
        word.values[t] = letter(c) && !letter(before) ? 1.0f : 0.0f;
        newline.values[t] = before == '\n' ? 1.0f : 0.0f;
        digits.values[t] = std::isdigit(static_cast<unsigned char>(c)) != 0 ? 1.0f : 0.0f;
    }
    return {quotes, brackets, line, word, newline, digits};
}

std::vector<Correlation> interesting_units(const Inspection& inspection, std::size_t per_feature) {
    const std::size_t N = inspection.length();
    const std::size_t H = inspection.hidden;
    std::vector<Correlation> found;
    for (const TextFeature& feature : text_features(inspection.text)) {
        double mean_f = 0;
        for (const float f : feature.values) {
            mean_f += f;
        }
        mean_f /= double(N);
        double var_f = 0;
        for (const float f : feature.values) {
            var_f += (f - mean_f) * (f - mean_f);
        }
        if (var_f <= 0) {
            continue; // constant over this text (no quotes in it, say): nothing to follow
        }
        std::vector<Correlation> all;
        for (std::size_t l = 0; l < inspection.layers.size(); ++l) {
            for (const Series& series : inspection.layers[l].series) {
                std::vector<double> sum(H), sum_sq(H), sum_xf(H);
                for (std::size_t t = 0; t < N; ++t) {
                    const double f = feature.values[t] - mean_f;
                    for (std::size_t j = 0; j < H; ++j) {
                        const double x = series.values[t * H + j];
                        sum[j] += x;
                        sum_sq[j] += x * x;
                        sum_xf[j] += x * f;
                    }
                }
                for (std::size_t j = 0; j < H; ++j) {
                    const double var_x = sum_sq[j] - sum[j] * sum[j] / double(N);
                    if (var_x <= 1e-12 * double(N)) {
                        continue;
                    }
                    all.push_back(
                        {feature.name, l, series.name, j, sum_xf[j] / std::sqrt(var_x * var_f)});
                }
            }
        }
        const std::size_t k = std::min(per_feature, all.size());
        std::partial_sort(all.begin(), all.begin() + std::ptrdiff_t(k), all.end(),
                          [](const Correlation& a, const Correlation& b) {
                              return std::abs(a.r) > std::abs(b.r);
                          });
        found.insert(found.end(), all.begin(), all.begin() + std::ptrdiff_t(k));
    }
    return found;
}

} // namespace char_rnn
