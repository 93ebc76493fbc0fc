// What the example programs share: a progress line and a wall clock.
#pragma once

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <string>
#include <unistd.h>

#include <fmt/format.h>

namespace examples {

using Clock = std::chrono::steady_clock;

/// Seconds elapsed since `start`.
inline double seconds_since(Clock::time_point start) {
    return std::chrono::duration<double>(Clock::now() - start).count();
}

/// "[####....] step k/N <details>" on stderr: updated in place on a terminal, otherwise printed as
/// plain lines every 5% of the run and whenever forced.
class ProgressLine {
  public:
    /// Progress towards `total` steps.
    explicit ProgressLine(std::int64_t total)
        : total_(total), terminal_(isatty(fileno(stderr)) != 0) {}
    /// Shows the bar, the step and `details`.
    void show(std::int64_t step, const std::string& details, bool force) const {
        const int width = 24;
        const int filled = total_ > 0 ? int(width * std::min(step, total_) / total_) : width;
        const std::string line =
            fmt::format("[{}{}] step {}/{} {}", std::string(filled, '#'),
                        std::string(width - filled, '.'), step, total_, details);
        if (terminal_) {
            fmt::print(stderr, "\r{}\033[K", line);
            if (step == total_) {
                fmt::print(stderr, "\n");
            }
        } else if (force || step == total_ || step % std::max<std::int64_t>(1, total_ / 20) == 0) {
            fmt::print(stderr, "{}\n", line);
        }
        std::fflush(stderr);
    }
    /// Ends an updating line early (the run stopped before `total`).
    void finish() const {
        if (terminal_) {
            fmt::print(stderr, "\n");
        }
    }

  private:
    std::int64_t total_;
    bool terminal_;
};

} // namespace examples
