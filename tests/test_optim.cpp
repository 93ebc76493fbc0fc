// Optimizers and gradient clipping: trajectories against torch.optim's published formulas written
// out here as independent scalar loops, state save/restore continuation, option validation.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <functional>
#include <limits>
#include <map>
#include <string>
#include <vector>

#include "cellgrad/cellgrad.hpp"
#include "cellgrad/optim/optim.hpp"

using namespace cellgrad;

namespace {

using Vec = std::vector<double>;
/// Reference update: (theta, grad, step t starting at 1) -> theta updated in place.
using Reference = std::function<void(Vec& theta, const Vec& grad, int t)>;

const Vec initial_theta = {0.5, -1.2, 0.3, 2.0, -0.7, 0.0};
const Vec targets = {1.0, 0.5, -0.5, 1.5, 0.2, -1.0};

/// Gradient at step t: a quadratic's pull towards `targets` plus a step-dependent push whose size
/// changes sharply (large on step 1, small after) so that AMSGrad's max and momentum matter.
Vec gradient(const Vec& theta, int t) {
    Vec g(theta.size());
    for (std::size_t k = 0; k < theta.size(); ++k) {
        const double size = t == 1 ? 4.0 : (t % 3 == 0 ? 1.5 : 0.3);
        g[k] = (0.5 + 0.2 * double(k)) * (theta[k] - targets[k]) +
               size * std::sin(0.9 * t + 1.7 * double(k));
    }
    return g;
}

/// Message of the cellgrad::Error thrown by f, or "" if none.
std::string error_of(const std::function<void()>& f) {
    try {
        f();
    } catch (const Error& e) {
        return e.what();
    }
    return "";
}

/// Runs `steps` steps of `optimizer` on a (2, 3) parameter and of `reference` on a copy; checks the
/// trajectories agree to 1e-12 after every step and that the parameter moved.
template <class MakeOptimizer>
void check_trajectory(MakeOptimizer make_optimizer, const Reference& reference, int steps = 8) {
    Parameter<double> w("w", Tensor<double>(2, 3, initial_theta));
    auto optimizer = make_optimizer(std::vector<Parameter<double>*>{&w});
    Vec theta = initial_theta;
    for (int t = 1; t <= steps; ++t) {
        const Vec g = gradient(w.value.to_vector(), t);
        w.grad = Tensor<double>(2, 3, g);
        optimizer.step();
        reference(theta, gradient(theta, t), t);
        double worst = 0;
        for (std::size_t k = 0; k < theta.size(); ++k) {
            worst = std::max(worst, std::abs(w.value.data()[k] - theta[k]));
        }
        INFO("step ", t, ": cellgrad ", fmt::format("{}", w.value), " reference ",
             fmt::format("{}", Tensor<double>(2, 3, theta)));
        CHECK(worst <= 1e-12);
        CHECK(optimizer.step_count() == t);
    }
    double moved = 0;
    for (std::size_t k = 0; k < theta.size(); ++k) {
        moved = std::max(moved, std::abs(theta[k] - initial_theta[k]));
    }
    CHECK(moved > 1e-3);
}

// ---- published formulas (torch.optim algorithm boxes), scalar loops ---------------------------

Reference sgd_reference(double lr, double mu, double tau, double wd, bool nesterov) {
    Vec b(6, 0.0);
    return [=](Vec& theta, const Vec& grad, int t) mutable {
        for (std::size_t k = 0; k < theta.size(); ++k) {
            double g = grad[k] + wd * theta[k];
            if (mu != 0) {
                b[k] = t > 1 ? mu * b[k] + (1 - tau) * g : g;
                g = nesterov ? g + mu * b[k] : b[k];
            }
            theta[k] -= lr * g;
        }
    };
}

Reference adam_reference(const double& lr, double b1, double b2, double eps, double wd,
                         bool amsgrad) {
    Vec m(6, 0.0), v(6, 0.0), vmax(6, 0.0);
    return [=, &lr](Vec& theta, const Vec& grad, int t) mutable {
        for (std::size_t k = 0; k < theta.size(); ++k) {
            const double g = grad[k] + wd * theta[k];
            m[k] = b1 * m[k] + (1 - b1) * g;
            v[k] = b2 * v[k] + (1 - b2) * g * g;
            const double m_hat = m[k] / (1 - std::pow(b1, t));
            vmax[k] = std::max(vmax[k], v[k]);
            const double v_hat = (amsgrad ? vmax[k] : v[k]) / (1 - std::pow(b2, t));
            theta[k] -= lr * m_hat / (std::sqrt(v_hat) + eps);
        }
    };
}

Reference adagrad_reference(double lr, double lr_decay, double wd, double initial, double eps) {
    Vec sum(6, initial);
    return [=](Vec& theta, const Vec& grad, int t) mutable {
        const double clr = lr / (1 + (t - 1) * lr_decay);
        for (std::size_t k = 0; k < theta.size(); ++k) {
            const double g = grad[k] + wd * theta[k];
            sum[k] += g * g;
            theta[k] -= clr * g / (std::sqrt(sum[k]) + eps);
        }
    };
}

Reference rmsprop_reference(double lr, double alpha, double eps, double wd, double mu,
                            bool centered) {
    Vec v(6, 0.0), g_ave(6, 0.0), b(6, 0.0);
    return [=](Vec& theta, const Vec& grad, int) mutable {
        for (std::size_t k = 0; k < theta.size(); ++k) {
            const double g = grad[k] + wd * theta[k];
            v[k] = alpha * v[k] + (1 - alpha) * g * g;
            double v_tilde = v[k];
            if (centered) {
                g_ave[k] = alpha * g_ave[k] + (1 - alpha) * g;
                v_tilde -= g_ave[k] * g_ave[k];
            }
            if (mu > 0) {
                b[k] = mu * b[k] + g / (std::sqrt(v_tilde) + eps);
                theta[k] -= lr * b[k];
            } else {
                theta[k] -= lr * g / (std::sqrt(v_tilde) + eps);
            }
        }
    };
}

} // namespace

TEST_CASE("optim: SGD follows torch's formula for every option") {
    struct Case {
        const char* label;
        SGDOptions options;
    };
    const Case cases[] = {
        {"plain", {.lr = 0.1}},
        {"momentum", {.lr = 0.1, .momentum = 0.9}},
        {"momentum + dampening", {.lr = 0.1, .momentum = 0.8, .dampening = 0.3}},
        {"nesterov", {.lr = 0.1, .momentum = 0.9, .nesterov = true}},
        {"weight decay", {.lr = 0.1, .weight_decay = 0.2}},
        {"momentum + weight decay + nesterov",
         {.lr = 0.05, .momentum = 0.7, .weight_decay = 0.1, .nesterov = true}},
    };
    for (const Case& c : cases) {
        SUBCASE(c.label) {
            const SGDOptions& o = c.options;
            check_trajectory(
                [&](auto params) { return SGD<double>(params, o); },
                sgd_reference(o.lr, o.momentum, o.dampening, o.weight_decay, o.nesterov));
        }
    }
}

TEST_CASE("optim: Adam follows torch's formula for every option") {
    struct Case {
        const char* label;
        AdamOptions options;
    };
    const Case cases[] = {
        {"defaults with a larger lr", {.lr = 0.05}},
        {"weight decay", {.lr = 0.05, .weight_decay = 0.1}},
        {"amsgrad", {.lr = 0.05, .beta2 = 0.6, .amsgrad = true}},
        {"amsgrad + weight decay + eps",
         {.lr = 0.05, .beta2 = 0.7, .eps = 1e-3, .weight_decay = 0.3, .amsgrad = true}},
        {"small betas", {.lr = 0.05, .beta1 = 0.3, .beta2 = 0.4}},
    };
    for (const Case& c : cases) {
        SUBCASE(c.label) {
            const AdamOptions& o = c.options;
            check_trajectory(
                [&](auto params) { return Adam<double>(params, o); },
                adam_reference(o.lr, o.beta1, o.beta2, o.eps, o.weight_decay, o.amsgrad));
        }
    }
}

TEST_CASE("optim: AMSGrad's max changes the trajectory on this problem") {
    // Guards the amsgrad case above against a problem where the max never matters.
    Parameter<double> a("w", Tensor<double>(2, 3, initial_theta));
    Parameter<double> b("w", Tensor<double>(2, 3, initial_theta));
    Adam<double> plain({&a}, {.lr = 0.05, .beta2 = 0.6});
    Adam<double> ams({&b}, {.lr = 0.05, .beta2 = 0.6, .amsgrad = true});
    for (int t = 1; t <= 8; ++t) {
        a.grad = Tensor<double>(2, 3, gradient(a.value.to_vector(), t));
        b.grad = Tensor<double>(2, 3, gradient(b.value.to_vector(), t));
        plain.step();
        ams.step();
    }
    CHECK(max_abs_difference<double>(a.value.view(), b.value.view()) > 1e-3);
}

TEST_CASE("optim: Adagrad follows torch's formula for every option") {
    struct Case {
        const char* label;
        AdagradOptions options;
    };
    const Case cases[] = {
        {"defaults with a larger lr", {.lr = 0.3}},
        {"lr decay", {.lr = 0.3, .lr_decay = 0.5}},
        {"weight decay", {.lr = 0.3, .weight_decay = 0.2}},
        {"initial accumulator + eps", {.lr = 0.3, .initial_accumulator_value = 0.5, .eps = 1e-2}},
    };
    for (const Case& c : cases) {
        SUBCASE(c.label) {
            const AdagradOptions& o = c.options;
            check_trajectory([&](auto params) { return Adagrad<double>(params, o); },
                             adagrad_reference(o.lr, o.lr_decay, o.weight_decay,
                                               o.initial_accumulator_value, o.eps));
        }
    }
}

TEST_CASE("optim: RMSprop follows torch's formula for every option") {
    struct Case {
        const char* label;
        RMSpropOptions options;
    };
    const Case cases[] = {
        {"defaults", {}},
        {"centered", {.centered = true}},
        {"momentum", {.momentum = 0.9}},
        {"weight decay", {.weight_decay = 0.2}},
        {"centered + momentum + weight decay + small alpha",
         {.lr = 0.02, .alpha = 0.3, .weight_decay = 0.1, .momentum = 0.5, .centered = true}},
    };
    for (const Case& c : cases) {
        SUBCASE(c.label) {
            const RMSpropOptions& o = c.options;
            check_trajectory(
                [&](auto params) { return RMSprop<double>(params, o); },
                rmsprop_reference(o.lr, o.alpha, o.eps, o.weight_decay, o.momentum, o.centered));
        }
    }
}

TEST_CASE("optim: Adam on a quadratic loss built with the tape") {
    // loss = 0.5 * sum((w - c)^2), so dloss/dw = w - c.
    Parameter<double> w("w", Tensor<double>(2, 3, initial_theta));
    const Tensor<double> c(2, 3, targets);
    Adam<double> optimizer({&w}, {.lr = 0.1});
    Vec theta = initial_theta;
    const double lr = 0.1;
    Reference reference = adam_reference(lr, 0.9, 0.999, 1e-8, 0, false);
    Tape<double> tape;
    double first_loss = 0, last_loss = 0;
    for (int t = 1; t <= 20; ++t) {
        tape.clear();
        optimizer.zero_grad();
        Var<double> loss = scale(sum(square(sub(tape.param(w), tape.constant(c)))), 0.5);
        (t == 1 ? first_loss : last_loss) = loss.item();
        loss.backward();
        optimizer.step();
        Vec g(6);
        for (std::size_t k = 0; k < 6; ++k) {
            g[k] = theta[k] - targets[k];
        }
        reference(theta, g, t);
    }
    CHECK(max_abs_difference<double>(w.value.view(), Tensor<double>(2, 3, theta).view()) <= 1e-12);
    CHECK(last_loss < 0.5 * first_loss);
}

TEST_CASE("optim: float optimizers track the double ones") {
    Parameter<float> wf(
        "w", Tensor<float>(2, 3, std::vector<float>(initial_theta.begin(), initial_theta.end())));
    Parameter<double> wd("w", Tensor<double>(2, 3, initial_theta));
    RMSprop<float> of({&wf}, {.momentum = 0.5, .centered = true});
    RMSprop<double> od({&wd}, {.momentum = 0.5, .centered = true});
    for (int t = 1; t <= 5; ++t) {
        const Vec g = gradient(wd.value.to_vector(), t);
        wd.grad = Tensor<double>(2, 3, g);
        wf.grad = Tensor<float>(2, 3, std::vector<float>(g.begin(), g.end()));
        of.step();
        od.step();
    }
    for (std::size_t k = 0; k < 6; ++k) {
        CHECK(double(wf.value.data()[k]) == doctest::Approx(wd.value.data()[k]).epsilon(1e-4));
    }
}

TEST_CASE("optim: a large parameter is updated chunk by chunk like the scalar formula, at 1 and "
          "2 threads") {
    const std::size_t rows = 300, cols = 300; // 90000 elements: several chunks
    Vec start(rows * cols), grad(rows * cols);
    for (std::size_t k = 0; k < start.size(); ++k) {
        start[k] = std::sin(0.001 * double(k));
        grad[k] = std::cos(0.0037 * double(k)) * (k % 7 == 0 ? 3.0 : 0.5);
    }
    const int saved_threads = num_threads();
    std::vector<Tensor<double>> results;
    for (int threads : {1, 2}) {
        set_num_threads(threads);
        Parameter<double> w("w", Tensor<double>(rows, cols, start));
        Adam<double> optimizer({&w}, {.lr = 0.01, .weight_decay = 0.01, .amsgrad = true});
        for (int t = 1; t <= 3; ++t) {
            w.grad = Tensor<double>(rows, cols, grad);
            clip_grad_norm<double>({&w}, 50.0);
            optimizer.step();
        }
        results.push_back(w.value);
    }
    set_num_threads(saved_threads);
    CHECK(max_abs_difference<double>(results[0].view(), results[1].view()) == 0.0);

    double norm = 0;
    for (double g : grad) {
        norm += g * g;
    }
    norm = std::sqrt(norm);
    REQUIRE(norm > 50.0);
    Vec clipped(grad.size());
    for (std::size_t k = 0; k < grad.size(); ++k) {
        clipped[k] = grad[k] * (50.0 / (norm + 1e-6));
    }
    Vec theta = start;
    double lr = 0.01;
    Vec m(grad.size());
    Vec v(grad.size());
    Vec vmax(grad.size());
    for (int t = 1; t <= 3; ++t) {
        for (std::size_t k = 0; k < theta.size(); ++k) {
            const double g = clipped[k] + 0.01 * theta[k];
            m[k] = 0.9 * m[k] + 0.1 * g;
            v[k] = 0.999 * v[k] + 0.001 * g * g;
            vmax[k] = std::max(vmax[k], v[k]);
            theta[k] -= lr * (m[k] / (1 - std::pow(0.9, t))) /
                        (std::sqrt(vmax[k] / (1 - std::pow(0.999, t))) + 1e-8);
        }
    }
    CHECK(max_abs_difference<double>(results[0].view(), Tensor<double>(rows, cols, theta).view()) <=
          1e-12);
}

TEST_CASE("optim: zero_grad clears every gradient") {
    Parameter<double> a("a", Tensor<double>(2, 3, 1.0));
    Parameter<double> b("b", Tensor<double>(1, 4, 1.0), true);
    a.grad.fill(3.0);
    b.grad.fill(-2.0);
    SGD<double> optimizer({&a, &b}, {.lr = 0.1});
    optimizer.zero_grad();
    CHECK(a.grad.to_vector() == std::vector<double>(6, 0.0));
    CHECK(b.grad.to_vector() == std::vector<double>(4, 0.0));
}

TEST_CASE("optim: set_lr changes the step size from the next step on") {
    SUBCASE("SGD with momentum") {
        Parameter<double> w("w", Tensor<double>(2, 3, initial_theta));
        SGD<double> optimizer({&w}, {.lr = 0.1, .momentum = 0.9});
        CHECK(optimizer.lr() == 0.1);
        Vec theta = initial_theta;
        // The reference keeps its buffer across the lr change, as the optimizer does.
        Vec b(6);
        for (int t = 1; t <= 6; ++t) {
            if (t == 4) {
                optimizer.set_lr(0.01);
            }
            const double lr = t >= 4 ? 0.01 : 0.1;
            w.grad = Tensor<double>(2, 3, gradient(w.value.to_vector(), t));
            optimizer.step();
            const Vec g = gradient(theta, t);
            for (std::size_t k = 0; k < 6; ++k) {
                b[k] = t > 1 ? 0.9 * b[k] + g[k] : g[k];
                theta[k] -= lr * b[k];
            }
        }
        CHECK(optimizer.lr() == 0.01);
        CHECK(max_abs_difference<double>(w.value.view(), Tensor<double>(2, 3, theta).view()) <=
              1e-12);
    }
    SUBCASE("Adam") {
        Parameter<double> w("w", Tensor<double>(2, 3, initial_theta));
        Adam<double> optimizer({&w}, {.lr = 0.05});
        double lr = 0.05;
        Reference reference = adam_reference(lr, 0.9, 0.999, 1e-8, 0, false);
        Vec theta = initial_theta;
        for (int t = 1; t <= 6; ++t) {
            lr = 0.05 * std::pow(0.5, t - 1); // exponential schedule
            optimizer.set_lr(lr);
            w.grad = Tensor<double>(2, 3, gradient(w.value.to_vector(), t));
            optimizer.step();
            reference(theta, gradient(theta, t), t);
        }
        CHECK(max_abs_difference<double>(w.value.view(), Tensor<double>(2, 3, theta).view()) <=
              1e-12);
    }
}

// ---- gradient clipping -------------------------------------------------------------------------

namespace {

struct TwoParameters {
    Parameter<double> weight{"encoder.weight", Tensor<double>(2, 3)};
    Parameter<double> bias{"decoder.bias", Tensor<double>(1, 2), true};
    TwoParameters() {
        weight.grad = Tensor<double>(2, 3, {3.0, -4.0, 1.0, 0.5, -2.0, 2.5});
        bias.grad = Tensor<double>(1, 2, {-6.0, 1.5});
    }
    std::vector<Parameter<double>*> list() { return {&weight, &bias}; }
    Vec grads() const {
        Vec all = weight.grad.to_vector();
        for (double g : bias.grad.to_vector()) {
            all.push_back(g);
        }
        return all;
    }
};

} // namespace

TEST_CASE("clip_grad_norm: 2-norm over all parameters, torch's scale factor") {
    TwoParameters p;
    const Vec before = p.grads();
    double sum_sq = 0;
    for (double g : before) {
        sum_sq += g * g;
    }
    const double norm = std::sqrt(sum_sq); // sqrt(93.75)

    SUBCASE("norm above max_norm: scaled by max_norm / (norm + 1e-6)") {
        const double returned = clip_grad_norm(p.list(), 2.0);
        CHECK(returned == doctest::Approx(norm).epsilon(1e-15));
        const Vec after = p.grads();
        double after_sq = 0;
        for (std::size_t k = 0; k < before.size(); ++k) {
            CHECK(after[k] == doctest::Approx(before[k] * 2.0 / (norm + 1e-6)).epsilon(1e-14));
            after_sq += after[k] * after[k];
        }
        CHECK(std::sqrt(after_sq) < 2.0);
        CHECK(std::sqrt(after_sq) == doctest::Approx(2.0).epsilon(1e-6));
    }
    SUBCASE("norm below max_norm: gradients untouched") {
        CHECK(clip_grad_norm(p.list(), 100.0) == doctest::Approx(norm).epsilon(1e-15));
        CHECK(p.grads() == before);
    }
    SUBCASE("infinity norm is the largest |g|") {
        const double returned = clip_grad_norm(p.list(), 3.0, inf_norm);
        CHECK(returned == 6.0);
        const Vec after = p.grads();
        for (std::size_t k = 0; k < before.size(); ++k) {
            CHECK(after[k] == doctest::Approx(before[k] * 3.0 / (6.0 + 1e-6)).epsilon(1e-14));
        }
    }
    SUBCASE("unsupported norm type and negative max_norm throw") {
        CHECK(error_of([&] { clip_grad_norm(p.list(), 1.0, 1.0); }).find("norm_type") !=
              std::string::npos);
        CHECK(error_of([&] { clip_grad_norm(p.list(), -1.0); }).find("max_norm") !=
              std::string::npos);
    }
}

TEST_CASE("clip_grad_norm: a non-finite norm names the parameter or propagates like torch") {
    for (double bad :
         {std::numeric_limits<double>::quiet_NaN(), std::numeric_limits<double>::infinity()}) {
        for (double norm_type : {2.0, inf_norm}) {
            TwoParameters p;
            p.bias.grad(0, 1) = bad;
            const std::string message =
                error_of([&] { clip_grad_norm(p.list(), 1.0, norm_type, true); });
            INFO(message);
            CHECK(message.find("decoder.bias") != std::string::npos);
            CHECK(message.find("non-finite") != std::string::npos);
            CHECK(message.find("encoder.weight") == std::string::npos);
            CHECK(p.weight.grad(0, 0) == 3.0); // nothing scaled before the throw

            TwoParameters q;
            q.bias.grad(0, 1) = bad;
            const double returned = clip_grad_norm(q.list(), 1.0, norm_type);
            CHECK(!std::isfinite(returned));
            // torch multiplies by max_norm / (norm + 1e-6): NaN for a NaN norm, 0 for an Inf one.
            if (std::isnan(bad)) {
                CHECK(std::isnan(q.weight.grad(0, 0)));
            } else {
                CHECK(q.weight.grad(0, 0) == 0.0);
                CHECK(std::isnan(q.bias.grad(0, 1)));
            }
        }
    }
}

TEST_CASE("clip_grad_value: clamps every element to [-v, v]") {
    TwoParameters p;
    clip_grad_value(p.list(), 2.0);
    CHECK(p.weight.grad.to_vector() == Vec{2.0, -2.0, 1.0, 0.5, -2.0, 2.0});
    CHECK(p.bias.grad.to_vector() == Vec{-2.0, 1.5});
    CHECK(error_of([&] { clip_grad_value(p.list(), -0.5); }).find("clip_value") !=
          std::string::npos);
}

// ---- state for checkpoints ---------------------------------------------------------------------

namespace {

/// Gradient of the two-parameter problem at step t (depends on the current values).
void set_gradients(Parameter<double>& a, Parameter<double>& b, int t) {
    a.grad = Tensor<double>(2, 3, gradient(a.value.to_vector(), t));
    const Vec bv = b.value.to_vector();
    b.grad = Tensor<double>(1, 2, {std::cos(t * 1.1) + bv[0], 0.3 * std::sin(t * 0.4) - bv[1]});
}

/// Runs 10 steps uninterrupted, and 4 steps + save + restore into a fresh optimizer + 6 steps;
/// checks the two end states are bit-identical and returns the listed state names.
template <class Make>
std::vector<std::string> check_continuation(Make make, bool restore_step_count = true) {
    const Tensor<double> a0(2, 3, initial_theta), b0(1, 2, {0.25, -0.75});

    Parameter<double> a("layer.weight", a0), b("layer.bias", b0, true);
    auto straight = make(std::vector<Parameter<double>*>{&a, &b});
    for (int t = 1; t <= 10; ++t) {
        set_gradients(a, b, t);
        straight.step();
        if (t == 7) {
            straight.set_lr(straight.lr() * 0.5);
        }
    }

    // First half, then "save": values, state tensors by name, step count and lr.
    Parameter<double> a1("layer.weight", a0), b1("layer.bias", b0, true);
    auto first = make(std::vector<Parameter<double>*>{&a1, &b1});
    for (int t = 1; t <= 4; ++t) {
        set_gradients(a1, b1, t);
        first.step();
    }
    std::map<std::string, Tensor<double>> saved;
    for (const StateTensor<double>& s : first.state_tensors()) {
        saved[s.name] = *s.tensor;
    }
    const std::int64_t saved_steps = first.step_count();
    const double saved_lr = first.lr();

    // Restore into fresh parameters and a fresh optimizer, then continue.
    Parameter<double> a2("layer.weight", a1.value), b2("layer.bias", b1.value, true);
    auto second = make(std::vector<Parameter<double>*>{&a2, &b2});
    std::vector<std::string> names;
    for (const StateTensor<double>& s : second.state_tensors()) {
        names.push_back(s.name);
        REQUIRE(saved.count(s.name) == 1);
        copy<double>(saved.at(s.name).view(), s.tensor->view());
    }
    if (restore_step_count) {
        second.set_step_count(saved_steps);
    }
    second.set_lr(saved_lr);
    for (int t = 5; t <= 10; ++t) {
        set_gradients(a2, b2, t);
        second.step();
        if (t == 7) {
            second.set_lr(second.lr() * 0.5);
        }
    }
    const bool identical =
        a.value.to_vector() == a2.value.to_vector() && b.value.to_vector() == b2.value.to_vector();
    CHECK(identical == restore_step_count);
    if (restore_step_count) {
        CHECK(straight.step_count() == second.step_count());
        auto lhs = straight.state_tensors();
        auto rhs = second.state_tensors();
        REQUIRE(lhs.size() == rhs.size());
        for (std::size_t i = 0; i < lhs.size(); ++i) {
            CHECK(lhs[i].name == rhs[i].name);
            CHECK(lhs[i].tensor->to_vector() == rhs[i].tensor->to_vector());
        }
    }
    return names;
}

} // namespace

TEST_CASE("optim: state save/restore continues bit-identically") {
    using Names = std::vector<std::string>;
    SUBCASE("SGD") {
        CHECK(check_continuation([](auto p) { return SGD<double>(p, {.lr = 0.1}); }).empty());
        CHECK(check_continuation([](auto p) {
                  return SGD<double>(p, {.lr = 0.1, .momentum = 0.9, .nesterov = true});
              }) == Names{"momentum_buffer.layer.weight", "momentum_buffer.layer.bias"});
    }
    SUBCASE("Adam") {
        CHECK(check_continuation([](auto p) {
                  return Adam<double>(p, {.lr = 0.05, .weight_decay = 0.1, .amsgrad = true});
              }) == Names{"exp_avg.layer.weight", "exp_avg.layer.bias", "exp_avg_sq.layer.weight",
                          "exp_avg_sq.layer.bias", "max_exp_avg_sq.layer.weight",
                          "max_exp_avg_sq.layer.bias"});
        CHECK(check_continuation([](auto p) { return Adam<double>(p, {.lr = 0.05}); }).size() == 4);
    }
    SUBCASE("Adagrad") {
        CHECK(check_continuation([](auto p) {
                  return Adagrad<double>(
                      p, {.lr = 0.3, .lr_decay = 0.1, .initial_accumulator_value = 0.2});
              }) == Names{"sum.layer.weight", "sum.layer.bias"});
    }
    SUBCASE("RMSprop") {
        CHECK(check_continuation([](auto p) {
                  return RMSprop<double>(p, {.momentum = 0.5, .centered = true});
              }) == Names{"square_avg.layer.weight", "square_avg.layer.bias",
                          "momentum_buffer.layer.weight", "momentum_buffer.layer.bias",
                          "grad_avg.layer.weight", "grad_avg.layer.bias"});
        CHECK(check_continuation([](auto p) { return RMSprop<double>(p); }) ==
              Names{"square_avg.layer.weight", "square_avg.layer.bias"});
    }
    SUBCASE("the step counter is part of the state") {
        // Without it, Adam's bias correction and Adagrad's lr decay restart: the runs differ.
        check_continuation([](auto p) { return Adam<double>(p, {.lr = 0.05}); }, false);
        check_continuation([](auto p) { return Adagrad<double>(p, {.lr_decay = 0.1}); }, false);
        check_continuation([](auto p) { return SGD<double>(p, {.lr = 0.1, .momentum = 0.9}); },
                           false);
    }
}

TEST_CASE("optim: hyperparameters list the options with torch's names") {
    Parameter<double> w("w", Tensor<double>(2, 3));
    Adam<double> adam({&w}, {.lr = 0.01, .beta2 = 0.99, .amsgrad = true});
    adam.set_lr(0.02);
    const auto h = adam.hyperparameters();
    REQUIRE(h.size() == 6);
    CHECK(h[0] == std::pair<std::string, double>{"lr", 0.02});
    CHECK(h[2] == std::pair<std::string, double>{"beta2", 0.99});
    CHECK(h[5] == std::pair<std::string, double>{"amsgrad", 1.0});
    CHECK(adam.name() == "Adam");
    CHECK(SGD<double>({&w}).lr() == 1e-3); // torch 2.x defaults
    CHECK(Adagrad<double>({&w}).lr() == 1e-2);
    CHECK(RMSprop<double>({&w}).options().alpha == 0.99);
    CHECK(Adam<double>({&w}).options().eps == 1e-8);
}

// ---- validation --------------------------------------------------------------------------------

TEST_CASE("optim: bad options and parameter lists throw naming the optimizer and option") {
    Parameter<double> w("w", Tensor<double>(2, 3));
    const std::vector<Parameter<double>*> params{&w};
    struct Case {
        std::function<void()> make;
        const char* optimizer;
        const char* option;
    };
    const double nan = std::numeric_limits<double>::quiet_NaN();
    const Case cases[] = {
        {[&] { SGD<double>(params, {.lr = -0.1}); }, "SGD", "lr"},
        {[&] { SGD<double>(params, {.lr = nan}); }, "SGD", "lr"},
        {[&] { SGD<double>(params, {.momentum = -0.5}); }, "SGD", "momentum"},
        {[&] { SGD<double>(params, {.weight_decay = -1}); }, "SGD", "weight_decay"},
        {[&] { SGD<double>(params, {.nesterov = true}); }, "SGD", "nesterov"},
        {[&] { SGD<double>(params, {.momentum = 0.9, .dampening = 0.1, .nesterov = true}); }, "SGD",
         "dampening"},
        {[&] { Adam<double>(params, {.lr = -1e-3}); }, "Adam", "lr"},
        {[&] { Adam<double>(params, {.beta1 = 1.0}); }, "Adam", "beta1"},
        {[&] { Adam<double>(params, {.beta1 = -0.1}); }, "Adam", "beta1"},
        {[&] { Adam<double>(params, {.beta2 = 1.5}); }, "Adam", "beta2"},
        {[&] { Adam<double>(params, {.eps = -1e-8}); }, "Adam", "eps"},
        {[&] { Adam<double>(params, {.weight_decay = -0.1}); }, "Adam", "weight_decay"},
        {[&] { Adagrad<double>(params, {.lr = -1}); }, "Adagrad", "lr"},
        {[&] { Adagrad<double>(params, {.lr_decay = -1}); }, "Adagrad", "lr_decay"},
        {[&] { Adagrad<double>(params, {.weight_decay = -1}); }, "Adagrad", "weight_decay"},
        {[&] { Adagrad<double>(params, {.initial_accumulator_value = -1}); }, "Adagrad",
         "initial_accumulator_value"},
        {[&] { Adagrad<double>(params, {.eps = -1}); }, "Adagrad", "eps"},
        {[&] { RMSprop<double>(params, {.lr = -1}); }, "RMSprop", "lr"},
        {[&] { RMSprop<double>(params, {.alpha = -0.5}); }, "RMSprop", "alpha"},
        {[&] { RMSprop<double>(params, {.eps = -1}); }, "RMSprop", "eps"},
        {[&] { RMSprop<double>(params, {.weight_decay = -1}); }, "RMSprop", "weight_decay"},
        {[&] { RMSprop<double>(params, {.momentum = -1}); }, "RMSprop", "momentum"},
        {[&] { Adam<double>(params).set_lr(-0.5); }, "Adam", "lr"},
        {[&] { Adam<double>(params).set_step_count(-1); }, "Adam", "set_step_count"},
        {[&] { Adam<double>({}); }, "Adam", "empty"},
        {[&] {
             SGD<double>({&w, nullptr});
         },
         "SGD", "null"},
        {[&] {
             RMSprop<double>({&w, &w});
         },
         "RMSprop", "'w' appears twice"},
    };
    for (const Case& c : cases) {
        const std::string message = error_of(c.make);
        INFO(c.optimizer, " ", c.option, ": '", message, "'");
        CHECK(message.rfind(c.optimizer, 0) == 0);
        CHECK(message.find(c.option) != std::string::npos);
    }

    SUBCASE("a gradient shaped unlike its value") {
        Parameter<double> bad("bad", Tensor<double>(2, 3));
        bad.grad = Tensor<double>(3, 2);
        CHECK(error_of([&] { Adam<double>({&bad}); }).find("'bad'") != std::string::npos);
        Parameter<double> later("later", Tensor<double>(2, 3));
        Adam<double> adam({&later});
        later.value = Tensor<double>(4, 4);
        later.grad = Tensor<double>(4, 4);
        CHECK(error_of([&] { adam.step(); }).find("'later'") != std::string::npos);
        CHECK(adam.step_count() == 0);
    }
}
