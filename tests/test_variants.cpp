// The lesson's other architectures (nn/cells/variants.hpp): each checked against its equations
// written out in scalar C++, by float64 gradient checks of a step and of a whole stacked,
// bidirectional run, and the row normalisation under the layer-norm LSTM by its own check.
#include <doctest/doctest.h>

#include <cmath>
#include <functional>
#include <map>
#include <random>
#include <string>
#include <vector>

#include "cellgrad/cellgrad.hpp"
#include "cellgrad/nn.hpp"

using namespace cellgrad;
using namespace cellgrad::nn;

namespace {

using Vec = std::vector<double>;
constexpr std::size_t kInput = 3, kHidden = 4, kBatch = 2;
/// The variants: every registered cell after the built-in rnn, lstm and gru.
const std::vector<std::string> kVariants(cell_names().begin() + 3, cell_names().end());

double sig(double v) {
    return 1.0 / (1.0 + std::exp(-v));
}

/// W[first + r] . v (+ b[first + r]) for r < count: one block of a stacked product.
Vec block(const Tensor<double>& w, std::size_t first, std::size_t count, const Vec& v,
          const Tensor<double>* b = nullptr) {
    Vec out(count);
    for (std::size_t r = 0; r < count; ++r) {
        double total = b != nullptr ? (*b)(0, first + r) : 0.0;
        for (std::size_t c = 0; c < v.size(); ++c) {
            total += w(first + r, c) * v[c];
        }
        out[r] = total;
    }
    return out;
}

/// a + b elementwise.
Vec plus(const Vec& a, const Vec& b) {
    Vec out(a.size());
    for (std::size_t i = 0; i < a.size(); ++i) {
        out[i] = a[i] + b[i];
    }
    return out;
}

/// (v - mean) / sqrt(var + 1e-5).
Vec layer_norm(const Vec& v) {
    double mean = 0, var = 0;
    for (double x : v) {
        mean += x / double(v.size());
    }
    for (double x : v) {
        var += (x - mean) * (x - mean) / double(v.size());
    }
    Vec out(v.size());
    for (std::size_t i = 0; i < v.size(); ++i) {
        out[i] = (v[i] - mean) / std::sqrt(var + 1e-5);
    }
    return out;
}

/// A cell's parameters by name without the layer suffix ("weight_ih", "weight_peephole", ...).
std::map<std::string, const Tensor<double>*> by_name(Cell<double>& cell) {
    std::map<std::string, const Tensor<double>*> params;
    for (Parameter<double>* p : cell.parameters()) {
        params[p->name.substr(0, p->name.rfind("_l0"))] = &p->value;
    }
    return params;
}

/// One step of cell `name` for one sequence, in scalar C++: (x, [h, c]) -> [h', c'].
std::vector<Vec> reference_step(const std::string& name, Cell<double>& cell, const Vec& x,
                                const std::vector<Vec>& state) {
    auto P = by_name(cell);
    const std::size_t H = kHidden;
    const Vec& h = state[0];
    Vec hn(H), cn(H);
    if (name == "layernorm-lstm") {
        const Vec xa = layer_norm(block(*P["weight_ih"], 0, 4 * H, x));
        const Vec ha = layer_norm(block(*P["weight_hh"], 0, 4 * H, h));
        Vec a(4 * H);
        for (std::size_t r = 0; r < 4 * H; ++r) {
            a[r] = (*P["ln_gain_ih"])(0, r) * xa[r] + (*P["ln_gain_hh"])(0, r) * ha[r] +
                   (*P["bias"])(0, r);
        }
        for (std::size_t j = 0; j < H; ++j) {
            cn[j] = sig(a[H + j]) * state[1][j] + sig(a[j]) * std::tanh(a[2 * H + j]);
        }
        const Vec c_norm = layer_norm(cn);
        for (std::size_t j = 0; j < H; ++j) {
            hn[j] = sig(a[3 * H + j]) *
                    std::tanh((*P["ln_gain_c"])(0, j) * c_norm[j] + (*P["ln_bias_c"])(0, j));
        }
        return {hn, cn};
    }
    const std::size_t G = P["weight_ih"]->rows() / H;
    const Vec ax = block(*P["weight_ih"], 0, G * H, x, P["bias_ih"]);
    if (name == "cho-gru" || name == "mgu") {
        const std::size_t gates = name == "cho-gru" ? 2 : 1; // blocks that read h itself
        const Vec ah = plus(block(*P["weight_hh"], 0, gates * H, h, P["bias_hh"]),
                            Vec(ax.begin(), ax.begin() + gates * H));
        Vec gated(H); // r h or f h
        for (std::size_t j = 0; j < H; ++j) {
            gated[j] = sig(ah[j]) * h[j];
        }
        const Vec an = block(*P["weight_hh"], gates * H, H, gated, P["bias_hh"]);
        for (std::size_t j = 0; j < H; ++j) {
            const double keep = name == "cho-gru" ? sig(ah[H + j]) : 1.0 - sig(ah[j]);
            hn[j] = (1.0 - keep) * std::tanh(ax[gates * H + j] + an[j]) + keep * h[j];
        }
        return {hn};
    }
    Vec recurrent_input = h;
    if (name == "concat-peephole-lstm") {
        recurrent_input.insert(recurrent_input.end(), state[1].begin(), state[1].end());
    }
    const Vec a = plus(ax, block(*P["weight_hh"], 0, G * H, recurrent_input, P["bias_hh"]));
    const Vec& c = state[1];
    Vec kept(H);
    for (std::size_t j = 0; j < H; ++j) {
        const double a0 = a[j], a1 = a[H + j], a2 = a[2 * H + j];
        if (name == "lesson-lstm") { // blocks n, i, f, v
            kept[j] = sig(a2) * c[j];
            cn[j] = kept[j] + std::tanh(a0) * sig(a1);
        } else if (name == "cifg-lstm") { // blocks f, g, o
            cn[j] = sig(a0) * c[j] + (1.0 - sig(a0)) * std::tanh(a1);
            hn[j] = sig(a2) * std::tanh(cn[j]);
        } else if (name == "nfg-lstm") { // blocks i, g, o
            cn[j] = c[j] + sig(a0) * std::tanh(a1);
            hn[j] = sig(a2) * std::tanh(cn[j]);
        } else if (name == "noaf-lstm") { // blocks i, f, g, o; h' = o c'
            cn[j] = sig(a1) * c[j] + sig(a0) * std::tanh(a2);
            hn[j] = sig(a[3 * H + j]) * cn[j];
        } else if (name == "peephole-lstm") { // blocks i, f, g, o; peepholes i, f, o
            const Tensor<double>& p = *P["weight_peephole"];
            cn[j] = sig(a1 + p(0, H + j) * c[j]) * c[j] + sig(a0 + p(0, j) * c[j]) * std::tanh(a2);
            hn[j] = sig(a[3 * H + j] + p(0, 2 * H + j) * cn[j]) * std::tanh(cn[j]);
        } else { // concat-peephole-lstm: PyTorch's gates from [h, c, x]
            cn[j] = sig(a1) * c[j] + sig(a0) * std::tanh(a2);
            hn[j] = sig(a[3 * H + j]) * std::tanh(cn[j]);
        }
    }
    if (name == "lesson-lstm") {
        const Vec u = block(*P["weight_u"], 0, H, kept, P["bias_u"]);
        for (std::size_t j = 0; j < H; ++j) {
            hn[j] = std::tanh(u[j]) * sig(a[3 * H + j]);
        }
    }
    return {hn, cn};
}

/// A one-layer layer of cell `name` with every parameter redrawn from U(-0.8, 0.8) (so that
/// gains and biases initialised to 1 and 0 are tested too).
std::unique_ptr<Recurrent<double>> random_layer(const std::string& name, std::size_t layers,
                                                bool bidirectional, std::uint64_t seed) {
    std::mt19937_64 rng(seed);
    RecurrentOptions options;
    options.input_size = kInput;
    options.hidden_size = kHidden;
    options.num_layers = layers;
    options.bidirectional = bidirectional;
    options.forget_bias = 1.0;
    auto layer = make_recurrent<double>(name, options, rng);
    for (Parameter<double>* p : layer->parameters()) {
        p->value = uniform_tensor<double>(p->value.rows(), p->value.cols(), 0.8, rng);
    }
    return layer;
}

} // namespace

TEST_CASE("variants: one step equals the equations written out in scalar C++") {
    for (const std::string& name : kVariants) {
        INFO(name);
        auto layer = random_layer(name, 1, false, 31);
        Cell<double>& cell = layer->cell(0);
        std::mt19937_64 rng(32);
        const Tensor<double> x = uniform_tensor<double>(kBatch, kInput, 1.5, rng);
        std::vector<Tensor<double>> state;
        Tape<double> tape;
        cell.attach(tape);
        std::vector<Var<double>> vars;
        for (std::size_t k = 0; k < cell.state_size(); ++k) {
            state.push_back(uniform_tensor<double>(kBatch, kHidden, 1.0, rng));
            vars.push_back(tape.constant(state.back()));
        }
        const std::vector<Var<double>> next =
            cell.step(cell.project_inputs(tape.constant(x)), vars);
        REQUIRE(next.size() == cell.state_size());
        double worst = 0;
        for (std::size_t b = 0; b < kBatch; ++b) {
            std::vector<Vec> s;
            for (const Tensor<double>& part : state) {
                s.push_back(Vec(part.view().row(b), part.view().row(b) + kHidden));
            }
            const std::vector<Vec> expected =
                reference_step(name, cell, Vec(x.view().row(b), x.view().row(b) + kInput), s);
            for (std::size_t k = 0; k < next.size(); ++k) {
                for (std::size_t j = 0; j < kHidden; ++j) {
                    worst = std::max(worst, std::abs(next[k].value()(b, j) - expected[k][j]));
                }
            }
        }
        CHECK(worst < 1e-12);
    }
}

TEST_CASE("variants: float64 gradient check of a 2-layer bidirectional run with lengths") {
    for (const std::string& name : kVariants) {
        INFO(name);
        auto layer = random_layer(name, 2, true, 33);
        std::mt19937_64 rng(34);
        constexpr std::size_t T = 4;
        Parameter<double> x("x", uniform_tensor<double>(T * kBatch, kInput, 1.0, rng));
        const Tensor<double> weights = uniform_tensor<double>(T * kBatch, 2 * kHidden, 1.0, rng);
        const std::vector<std::int32_t> lengths{4, 3};
        std::vector<Parameter<double>*> targets = layer->parameters();
        targets.push_back(&x);
        const auto loss = [&](Tape<double>& tape) {
            const RecurrentOutput<double> out = layer->forward(tape.param(x), kBatch, {}, lengths);
            return add(sum(mul(out.output, tape.constant(weights))),
                       sum(out.final_state.back().back()));
        };
        GradCheckOptions options;
        options.eps = 1e-5;
        const GradCheckReport report = grad_check(loss, targets, options);
        INFO(report.summary());
        CHECK(report.passed);
        CHECK(report.max_rel_error < 1e-6);
    }
}

TEST_CASE("variants: parameter names and shapes; unknown cells are refused by name") {
    std::mt19937_64 rng(35);
    RecurrentOptions options;
    options.input_size = kInput;
    options.hidden_size = kHidden;
    options.parameter_prefix = "rnn.";
    const std::map<std::string, std::vector<std::string>> expected{
        {"lesson-lstm",
         {"weight_ih_l0", "weight_hh_l0", "bias_ih_l0", "bias_hh_l0", "weight_u_l0", "bias_u_l0"}},
        {"peephole-lstm",
         {"weight_ih_l0", "weight_hh_l0", "bias_ih_l0", "bias_hh_l0", "weight_peephole_l0"}},
        {"layernorm-lstm",
         {"weight_ih_l0", "weight_hh_l0", "ln_gain_ih_l0", "ln_gain_hh_l0", "bias_l0",
          "ln_gain_c_l0", "ln_bias_c_l0"}},
        {"mgu", {"weight_ih_l0", "weight_hh_l0", "bias_ih_l0", "bias_hh_l0"}}};
    for (const auto& [name, names] : expected) {
        auto layer = make_recurrent<double>(name, options, rng);
        const auto params = layer->parameters();
        REQUIRE(params.size() == names.size());
        for (std::size_t i = 0; i < names.size(); ++i) {
            CHECK(params[i]->name == "rnn." + names[i]);
        }
    }
    auto concat = make_recurrent<double>("concat-peephole-lstm", options, rng);
    CHECK(concat->parameters()[1]->value.shape() == Shape{4 * kHidden, 2 * kHidden});
    auto cifg = make_recurrent<double>("cifg-lstm", options, rng);
    CHECK(cifg->parameters()[0]->value.shape() == Shape{3 * kHidden, kInput});
    CHECK(cell_names().size() == 12);
    CHECK_THROWS_WITH_AS(make_recurrent<double>("lstmm", options, rng),
                         doctest::Contains("unknown cell 'lstmm'; known cells: rnn, lstm, gru"),
                         Error);
}

TEST_CASE("normalize_rows: values, and a float64 gradient check") {
    Tape<double> tape;
    const Var<double> x = tape.constant(Tensor<double>(2, 4, {1, 2, 3, 4, -1, -1, 1, 1}));
    const Var<double> y = normalize_rows(x, 1e-5);
    const double s1 = std::sqrt(1.25 + 1e-5), s2 = std::sqrt(1.0 + 1e-5);
    CHECK(y.value()(0, 0) == doctest::Approx(-1.5 / s1).epsilon(1e-14));
    CHECK(y.value()(0, 3) == doctest::Approx(1.5 / s1).epsilon(1e-14));
    CHECK(y.value()(1, 1) == doctest::Approx(-1.0 / s2).epsilon(1e-14));
    std::mt19937_64 rng(36);
    Parameter<double> p("x", uniform_tensor<double>(3, 5, 2.0, rng));
    const Tensor<double> w = uniform_tensor<double>(3, 5, 1.0, rng);
    const GradCheckReport report = grad_check(
        [&](Tape<double>& t) { return sum(mul(normalize_rows(t.param(p)), t.constant(w))); }, {&p});
    INFO(report.summary());
    CHECK(report.passed);
    CHECK(report.max_rel_error < 1e-6);
    CHECK_THROWS_WITH_AS(normalize_rows(tape.constant(Tensor<double>(3, 1))),
                         doctest::Contains("normalize_rows: needs at least 2 columns"), Error);
}

TEST_CASE("variants: cell_shape gives every cell's stacked weight shapes") {
    for (const std::string& name : cell_names()) {
        INFO(name);
        std::mt19937_64 rng(37);
        RecurrentOptions options;
        options.input_size = kInput;
        options.hidden_size = kHidden;
        auto layer = make_recurrent<double>(name, options, rng);
        const CellShape shape = cell_shape(name);
        const auto params = layer->parameters();
        CHECK(params[0]->value.shape() == Shape{shape.gates * kHidden, kInput});
        CHECK(params[1]->value.shape() ==
              Shape{shape.gates * kHidden, shape.recurrent_inputs * kHidden});
    }
    CHECK_THROWS_WITH_AS(cell_shape("lstm2"), doctest::Contains("unknown cell 'lstm2'"), Error);
}
