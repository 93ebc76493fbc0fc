// What the gradient-flow lab computes besides the graph's own gradients: which model an id names,
// quantiles over seeds, and the least-squares decay of log10 norms against the lag.
// Shared by examples/vanishing_gradients and tests/test_tasks.cpp (header-only).
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <limits>
#include <string>
#include <tuple>
#include <vector>

#include "adding.hpp"
#include "cellgrad/nn.hpp"

namespace flow {

/// A model the lab compares: its id (CSV), its label (plot, table) and how it is built.
struct ModelEntry {
    std::string id;
    std::string label;
    adding::ModelSpec spec;
};

/// The readable name of a cell of nn::cell_names() (the name itself for an unknown one).
inline std::string cell_label(const std::string& cell) {
    static const std::vector<std::pair<std::string, std::string>> labels{
        {"rnn", "tanh RNN"},
        {"lstm", "LSTM"},
        {"gru", "GRU"},
        {"lesson-lstm", "lesson's LSTM"},
        {"peephole-lstm", "peephole LSTM"},
        {"concat-peephole-lstm", "lesson's peephole LSTM"},
        {"cifg-lstm", "CIFG LSTM"},
        {"nfg-lstm", "no-forget-gate LSTM"},
        {"noaf-lstm", "no-output-activation LSTM"},
        {"layernorm-lstm", "layer-norm LSTM"},
        {"cho-gru", "Cho's GRU"},
        {"mgu", "minimal gated unit"}};
    for (const auto& [name, label] : labels) {
        if (name == cell) {
            return label;
        }
    }
    return cell;
}

/// The spec behind a model id: a cell of nn::cell_names() (forget bias 0), or `<cell>_fb<bias>`
/// for a forget-gate bias (lstm_fb0, lstm_fb1, cifg-lstm_fb1, ...); throws naming the known cells.
inline ModelEntry model_entry(const std::string& id, std::size_t hidden) {
    std::string cell = id;
    double bias = 0.0;
    bool with_bias = false;
    const std::size_t mark = id.rfind("_fb");
    if (mark != std::string::npos) {
        cell = id.substr(0, mark);
        const std::string number = id.substr(mark + 3);
        std::size_t used = 0;
        try {
            bias = std::stod(number, &used);
        } catch (const std::exception&) {
            used = 0;
        }
        if (number.empty() || used != number.size()) {
            throw cellgrad::Error(fmt::format(
                "vanishing_gradients: model '{}': '_fb' must be followed by the forget-gate bias, "
                "e.g. lstm_fb1",
                id));
        }
        with_bias = true;
    }
    const auto& names = cellgrad::nn::cell_names();
    if (std::find(names.begin(), names.end(), cell) == names.end()) {
        throw cellgrad::Error(fmt::format("vanishing_gradients: unknown model '{}'; a cell ({}), "
                                          "optionally followed by _fb<forget "
                                          "bias>, e.g. lstm_fb1",
                                          id, fmt::join(names, ", ")));
    }
    std::string label = cell_label(cell);
    if (with_bias) {
        label += fmt::format(" forget bias {}", bias);
    }
    return {id, label, {cell, hidden, bias}};
}

/// Quantile q in [0, 1] of the finite values (linear interpolation); NaN when there are none.
inline double quantile(std::vector<double> values, double q) {
    std::erase_if(values, [](double v) { return !std::isfinite(v); });
    if (values.empty()) {
        return std::numeric_limits<double>::quiet_NaN();
    }
    std::sort(values.begin(), values.end());
    const double position = q * double(values.size() - 1);
    const auto below = static_cast<std::size_t>(std::floor(position));
    const std::size_t above = std::min(below + 1, values.size() - 1);
    return values[below] + (position - double(below)) * (values[above] - values[below]);
}

/// Least-squares line y = a + slope * x through the finite points; {slope, r^2, points}.
inline std::tuple<double, double, std::size_t> fit_line(const std::vector<double>& x,
                                                        const std::vector<double>& y) {
    double n = 0, sx = 0, sy = 0, sxx = 0, sxy = 0, syy = 0;
    for (std::size_t i = 0; i < x.size(); ++i) {
        if (!std::isfinite(y[i])) {
            continue;
        }
        n += 1;
        sx += x[i];
        sy += y[i];
        sxx += x[i] * x[i];
        sxy += x[i] * y[i];
        syy += y[i] * y[i];
    }
    if (n < 2) {
        return {std::numeric_limits<double>::quiet_NaN(), std::numeric_limits<double>::quiet_NaN(),
                std::size_t(n)};
    }
    const double cxx = sxx - sx * sx / n, cxy = sxy - sx * sy / n, cyy = syy - sy * sy / n;
    const double slope = cxy / cxx;
    const double r2 = cyy > 0 ? cxy * cxy / (cxx * cyy) : 1.0;
    return {slope, r2, std::size_t(n)};
}

/// Slope of log10 norm against lag over [from, to] for a curve indexed by t (lag = T - 1 - t).
inline std::tuple<double, double, std::size_t> fit_curve(const std::vector<double>& curve,
                                                         std::size_t from, std::size_t to) {
    std::vector<double> lags, values;
    const std::size_t steps = curve.size();
    for (std::size_t lag = from; lag <= to && lag < steps; ++lag) {
        lags.push_back(double(lag));
        values.push_back(curve[steps - 1 - lag]);
    }
    return fit_line(lags, values);
}

} // namespace flow
