// What the example programs' command lines share: range checks whose messages give the allowed
// range in plain numbers (finite values only; a negative number is never wrapped into an unsigned
// option), and help lines that show every option's default and unit.
#pragma once

#include <cerrno>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <limits>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>
#include <fmt/format.h>

#include <cellgrad/parallel.hpp>
#include <cellgrad/tape.hpp>

namespace examples {

/// "1", "0.99", "1e+06": a bound as people write it.
inline std::string plain(double value) {
    return fmt::format("{}", value);
}

/// Makes every option added to `app` (and to subcommands added after this call) show its default
/// in --help.
inline void show_defaults(CLI::App& app) {
    app.option_defaults()->always_capture_default();
}

/// The text is a whole number from `low` to `high`; anything else (a sign, a fraction, "nan",
/// overflow) is refused with that range in the message. `unit` ("characters") follows the range.
inline CLI::Validator whole_number(std::uint64_t low, std::uint64_t high,
                                   const std::string& unit = "") {
    const std::string range =
        fmt::format("a whole number from {} to {}{}", low, high, unit.empty() ? "" : " " + unit);
    return CLI::Validator(
        [=](std::string& text) -> std::string {
            const bool digits_only =
                !text.empty() && text.find_first_not_of("0123456789") == std::string::npos;
            errno = 0;
            const unsigned long long value =
                digits_only ? std::strtoull(text.c_str(), nullptr, 10) : 0;
            if (!digits_only || errno == ERANGE || value < low || value > high) {
                return fmt::format("must be {}, got '{}'", range, text);
            }
            return {};
        },
        fmt::format("{} to {}", low, high));
}

/// Whether a bound of real_number() belongs to the range.
enum class Bound { closed, open };

/// The text is a finite number from `low` to `high` (either end open if asked); NaN, infinities
/// and anything out of range are refused with the range in plain numbers.
inline CLI::Validator real_number(double low, double high, const std::string& unit = "",
                                  Bound low_bound = Bound::closed,
                                  Bound high_bound = Bound::closed) {
    const bool open_low = low_bound == Bound::open;
    const bool open_high = high_bound == Bound::open;
    const std::string range =
        fmt::format("a number {} {} {} {}{}", open_low ? "above" : "from", plain(low),
                    open_low ? (open_high ? "and below" : "and at most")
                             : (open_high ? "up to (not including)" : "to"),
                    plain(high), unit.empty() ? "" : " " + unit);
    return CLI::Validator(
        [=](std::string& text) -> std::string {
            char* end = nullptr;
            errno = 0;
            const double value = text.empty() ? 0.0 : std::strtod(text.c_str(), &end);
            const bool parsed = !text.empty() && end == text.c_str() + text.size();
            const bool inside = std::isfinite(value) &&
                                (low_bound == Bound::closed ? value >= low : value > low) &&
                                (high_bound == Bound::closed ? value <= high : value < high);
            if (!parsed || !inside) {
                return fmt::format("must be {}, got '{}'", range, text);
            }
            return {};
        },
        fmt::format("{}{} to {}{}", plain(low), low_bound == Bound::closed ? "" : " (excluded)",
                    plain(high), high_bound == Bound::closed ? "" : " (excluded)"));
}

/// "description [unit]": how every option's help line names its unit.
inline std::string with_unit(const std::string& description, const std::string& unit) {
    return unit.empty() ? description : fmt::format("{} [{}]", description, unit);
}

/// Help text of every example's --threads: 0 picks the count from the model's shapes.
inline const char* threads_help =
    "threads (TBB and OpenBLAS); 0 = chosen from the model's shapes: 1 when a time step's "
    "recurrent GEMM is under 5 MFLOP, else every core (docs/performance.md)";

/// `requested` threads, or for 0 the count cellgrad::suggested_threads gives for the largest
/// recurrent weight (a parameter named *weight_hh*) among `parameters` at `batch` sequences.
template <class T>
int resolve_threads(int requested, const std::vector<cellgrad::Parameter<T>*>& parameters,
                    std::size_t batch) {
    if (requested > 0) {
        return requested;
    }
    std::size_t rows = 0, cols = 0;
    for (const cellgrad::Parameter<T>* parameter : parameters) {
        if (parameter->name.find("weight_hh") != std::string::npos &&
            parameter->value.size() > rows * cols) {
            rows = parameter->value.rows();
            cols = parameter->value.cols();
        }
    }
    return cellgrad::suggested_threads(batch, rows, cols);
}

} // namespace examples
