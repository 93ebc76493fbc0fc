// What the benchmarks read of their own process's memory.
#pragma once

#include <cmath>
#include <fstream>
#include <string>
#include <utility>

namespace cellgrad::bench {

/// Resident and peak resident bytes of this process (VmRSS, VmHWM of /proc/self/status; NaN when
/// unreadable).
inline std::pair<double, double> resident_bytes() {
    std::ifstream status("/proc/self/status");
    std::string key;
    double rss = std::nan(""), hwm = std::nan("");
    while (status >> key) {
        if (key == "VmRSS:" || key == "VmHWM:") {
            double kib = 0;
            status >> kib;
            (key == "VmRSS:" ? rss : hwm) = kib * 1024.0;
        }
    }
    return {rss, hwm};
}

} // namespace cellgrad::bench
