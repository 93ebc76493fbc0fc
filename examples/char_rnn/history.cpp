#include "history.hpp"

#include <cmath>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "cellgrad/tensor.hpp"

namespace char_rnn {

using cellgrad::Error;
using json = nlohmann::json;

void TrainingHistory::add_point(const HistoryPoint& point) {
    points_.push_back(point);
    if (points_.size() > max_points) {
        std::vector<HistoryPoint> kept;
        for (std::size_t i = 0; i + 1 < points_.size(); i += 2) {
            kept.push_back(points_[i]);
        }
        kept.push_back(points_.back());
        points_ = std::move(kept);
    }
}

void TrainingHistory::add_sample(std::int64_t step, std::string text) {
    if (text.size() > max_sample_bytes) {
        text.resize(max_sample_bytes);
    }
    samples_.push_back({step, std::move(text)});
    if (samples_.size() > max_samples) {
        samples_.erase(samples_.begin() + 1);
    }
}

std::string TrainingHistory::to_json() const {
    json points = json::array();
    for (const HistoryPoint& point : points_) {
        points.push_back({{"step", point.step},
                          {"train", point.train ? json(*point.train) : json(nullptr)},
                          {"val", point.val}});
    }
    json samples = json::array();
    for (const HistorySample& sample : samples_) {
        samples.push_back({{"step", sample.step}, {"text", sample.text}});
    }
    return json{{"points", points}, {"samples", samples}}.dump(-1, ' ', false,
                                                               json::error_handler_t::replace);
}

namespace {

constexpr std::int64_t most_steps = 1'000'000'000'000'000;
constexpr double most_nats = 1e6;

std::int64_t step_of(const json& entry, const char* what) {
    const json* step = entry.contains("step") ? &entry.at("step") : nullptr;
    if (step == nullptr || !step->is_number_unsigned() ||
        step->get<std::uint64_t>() > std::uint64_t(most_steps)) {
        throw Error(
            fmt::format("training history: each {} needs a 'step' from 0 to {}", what, most_steps));
    }
    return static_cast<std::int64_t>(step->get<std::uint64_t>());
}

double loss_of(const json& value, const char* key) {
    if (!value.is_number() || !std::isfinite(value.get<double>()) || value.get<double>() < 0 ||
        value.get<double>() > most_nats) {
        throw Error(fmt::format("training history: '{}' must be a loss from 0 to {} nats/char, "
                                "got {}",
                                key, most_nats, value.dump().substr(0, 40)));
    }
    return value.get<double>();
}

} // namespace

TrainingHistory TrainingHistory::from_json(const std::string& text) {
    const json object = json::parse(text, nullptr, false);
    if (!object.is_object() || !object.contains("points") || !object.contains("samples") ||
        !object.at("points").is_array() || !object.at("samples").is_array()) {
        throw Error("training history must be a JSON object with arrays 'points' and 'samples'");
    }
    const json& points = object.at("points");
    const json& samples = object.at("samples");
    if (points.size() > max_points || samples.size() > max_samples) {
        throw Error(fmt::format("training history holds {} points and {} samples; at most {} and "
                                "{} are kept",
                                points.size(), samples.size(), max_points, max_samples));
    }
    TrainingHistory history;
    for (const json& entry : points) {
        if (!entry.is_object() || !entry.contains("val") || !entry.contains("train")) {
            throw Error("training history: each point needs 'step', 'train' and 'val'");
        }
        HistoryPoint point;
        point.step = step_of(entry, "point");
        if (!entry.at("train").is_null()) {
            point.train = loss_of(entry.at("train"), "train");
        }
        point.val = loss_of(entry.at("val"), "val");
        history.points_.push_back(point);
    }
    for (const json& entry : samples) {
        if (!entry.is_object() || !entry.contains("text") || !entry.at("text").is_string() ||
            entry.at("text").get<std::string>().size() > 3 * max_sample_bytes) {
            throw Error(fmt::format("training history: each sample needs a 'text' of at most {} "
                                    "bytes",
                                    3 * max_sample_bytes));
        }
        history.samples_.push_back({step_of(entry, "sample"), entry.at("text").get<std::string>()});
    }
    return history;
}

} // namespace char_rnn
