#include "cellgrad/grad_check.hpp"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <random>

namespace cellgrad {

std::string GradCheckReport::summary() const {
    const std::string where = worst.direction
                                  ? fmt::format("{} (random direction)", worst.name)
                                  : fmt::format("{}[{}, {}]", worst.name, worst.row, worst.col);
    return fmt::format("grad_check {}: {} comparisons; max rel error {:.3e}, max abs error {:.3e}; "
                       "worst at {}: analytic {:.12g}, numeric {:.12g}",
                       passed ? "passed" : "FAILED", checked, max_rel_error, max_abs_error, where,
                       worst.analytic, worst.numeric);
}

namespace {

double evaluate(const LossFunction& loss, Tape<double>& tape) {
    NoGradGuard no_grad;
    tape.clear();
    const Var<double> value = loss(tape);
    const double result = value.item();
    tape.clear();
    return result;
}

void record(GradCheckReport& report, const GradCheckOptions& options, GradCheckEntry entry) {
    entry.abs_error = std::abs(entry.analytic - entry.numeric);
    const double scale = std::max(std::abs(entry.analytic), std::abs(entry.numeric));
    entry.rel_error = entry.abs_error / std::max(scale, options.relative_floor);
    if (!std::isfinite(entry.analytic) || !std::isfinite(entry.numeric)) {
        entry.rel_error = std::numeric_limits<double>::infinity();
    }
    const bool ok = entry.abs_error <= options.atol + options.rtol * scale;
    report.passed = report.passed && ok && std::isfinite(entry.rel_error);
    ++report.checked;
    report.max_abs_error = std::max(report.max_abs_error, entry.abs_error);
    if (report.checked == 1 || entry.rel_error > report.max_rel_error) {
        report.max_rel_error = entry.rel_error;
        report.worst = entry;
    }
}

} // namespace

GradCheckReport grad_check(const LossFunction& loss, std::span<Parameter<double>* const> targets,
                           const GradCheckOptions& options) {
    Tape<double> tape;
    for (Parameter<double>* target : targets) {
        target->zero_grad();
    }
    {
        const Var<double> value = loss(tape);
        if (value.shape() != Shape{1, 1}) {
            throw Error(fmt::format("grad_check: the loss must be (1, 1), got {}", value.shape()));
        }
        tape.backward(value);
    }
    tape.clear();
    std::vector<Tensor<double>> analytic;
    for (Parameter<double>* target : targets) {
        analytic.push_back(target->grad);
    }

    GradCheckReport report;
    std::mt19937_64 rng(options.seed);
    const double eps = options.eps;
    for (std::size_t t = 0; t < targets.size(); ++t) {
        Parameter<double>& target = *targets[t];
        double* values = target.value.data();
        const std::size_t size = target.value.size();
        std::vector<std::size_t> chosen(size);
        std::iota(chosen.begin(), chosen.end(), std::size_t(0));
        const bool sampled = size > options.full_check_limit;
        if (sampled) {
            std::shuffle(chosen.begin(), chosen.end(), rng);
            chosen.resize(std::min(options.samples, size)); // never more than there are
            std::sort(chosen.begin(), chosen.end());
        }
        for (const std::size_t i : chosen) {
            const double original = values[i];
            values[i] = original + eps;
            const double plus = evaluate(loss, tape);
            values[i] = original - eps;
            const double minus = evaluate(loss, tape);
            values[i] = original;
            GradCheckEntry entry;
            entry.name = target.name;
            entry.row = i / target.value.cols();
            entry.col = i % target.value.cols();
            entry.analytic = analytic[t].data()[i];
            entry.numeric = (plus - minus) / (2 * eps);
            record(report, options, entry);
        }
        if (sampled && options.random_direction) {
            std::normal_distribution<double> normal;
            std::vector<double> direction(size);
            double norm = 0;
            for (double& v : direction) {
                v = normal(rng);
                norm += v * v;
            }
            norm = std::sqrt(norm);
            const std::vector<double> original(values, values + size);
            double directional = 0;
            for (std::size_t i = 0; i < size; ++i) {
                direction[i] /= norm;
                directional += analytic[t].data()[i] * direction[i];
            }
            for (std::size_t i = 0; i < size; ++i) {
                values[i] = original[i] + eps * direction[i];
            }
            const double plus = evaluate(loss, tape);
            for (std::size_t i = 0; i < size; ++i) {
                values[i] = original[i] - eps * direction[i];
            }
            const double minus = evaluate(loss, tape);
            std::copy(original.begin(), original.end(), values);
            GradCheckEntry entry;
            entry.name = target.name;
            entry.direction = true;
            entry.analytic = directional;
            entry.numeric = (plus - minus) / (2 * eps);
            record(report, options, entry);
        }
    }
    return report;
}

GradCheckReport grad_check(const LossFunction& loss,
                           std::initializer_list<Parameter<double>*> targets,
                           const GradCheckOptions& options) {
    return grad_check(loss, std::span<Parameter<double>* const>(targets.begin(), targets.size()),
                      options);
}

} // namespace cellgrad
