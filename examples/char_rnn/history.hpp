// A training run's short history, kept in the checkpoint's metadata ("history") so that an
// inspector page can show learning as it happened: the losses at each validation (nats/char) and
// a short sample taken there. Bounded: at most max_points points and max_samples samples of at
// most max_sample_bytes bytes, whatever the length of the run.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace char_rnn {

/// Losses at one validation.
struct HistoryPoint {
    std::int64_t step = 0;
    std::optional<double> train; ///< mean training loss since the previous validation (nats/char)
    double val = 0;              ///< validation loss (nats/char)
};

/// A sample drawn at one validation.
struct HistorySample {
    std::int64_t step = 0;
    std::string text;
};

/// Losses and samples at each validation, thinned to stay bounded.
class TrainingHistory {
  public:
    static constexpr std::size_t max_points = 256;
    static constexpr std::size_t max_samples = 12;
    static constexpr std::size_t max_sample_bytes = 200;

    /// Adds a validation point; when there are more than max_points, every other older point
    /// goes (the first and the last stay), so the curve keeps its shape at half the resolution.
    void add_point(const HistoryPoint& point);
    /// Adds a sample (cut to max_sample_bytes); beyond max_samples the second-oldest goes, so the
    /// first sample and the latest ones stay.
    void add_sample(std::int64_t step, std::string text);
    const std::vector<HistoryPoint>& points() const { return points_; }
    const std::vector<HistorySample>& samples() const { return samples_; }
    bool empty() const { return points_.empty() && samples_.empty(); }
    /// {"points": [{"step", "train" (or null), "val"}], "samples": [{"step", "text"}]}; bytes
    /// that are not UTF-8 become U+FFFD.
    std::string to_json() const;
    /// Parses to_json()'s output; throws naming the bad field and its allowed range.
    static TrainingHistory from_json(const std::string& json);

  private:
    std::vector<HistoryPoint> points_;
    std::vector<HistorySample> samples_;
};

} // namespace char_rnn
