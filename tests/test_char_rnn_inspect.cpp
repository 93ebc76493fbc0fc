// char_rnn inspect: the recordings obey each cell's equations (from the gates the tape kept),
// chunking does not change them, every cell in the registry shows its own gates, the analyses
// find what was put there, the training history stays bounded and round-trips, and the page and
// JSON are self-contained and sized as promised.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>

#include <nlohmann/json.hpp>

#include "history.hpp"
#include "inspect.hpp"

using namespace char_rnn;
namespace nn = cellgrad::nn;
namespace fs = std::filesystem;

namespace {

const std::string sample_text = "In the beginning \"God\" created (the heaven) and the earth.\n"
                                "And the earth was without form, and void; 1:2\n"
                                "And God said, Let there be light: and there was light.\n";

ModelConfig config_of(const std::string& cell) {
    ModelConfig config;
    config.cell = cell;
    config.hidden = 12;
    config.layers = 2;
    config.embedding = 6;
    return config;
}

/// A library model of any registered cell: embedding, nn::make_recurrent, decoder.
struct LibraryModel {
    std::mt19937_64 rng{7};
    Vocabulary vocabulary = Vocabulary::from_text(sample_text);
    cellgrad::nn::Embedding<float> embedding{vocabulary.size(), 5, rng, "embedding."};
    std::unique_ptr<nn::Recurrent<float>> rnn;
    cellgrad::nn::Linear<float> decoder;
    explicit LibraryModel(const std::string& cell)
        : rnn(nn::make_recurrent<float>(cell, {.input_size = 5, .hidden_size = 9, .num_layers = 2},
                                        rng)),
          decoder(9, vocabulary.size(), rng, true, "decoder.") {}
    ModelParts parts(const std::string& cell) {
        return {
            rnn.get(), &embedding.weight, &decoder.weight, decoder.bias ? &*decoder.bias : nullptr,
            cell,      vocabulary.bytes()};
    }
};

float at(const Series& s, std::size_t H, std::size_t t, std::size_t j) {
    return s.values[t * H + j];
}

} // namespace

TEST_CASE("inspect: an LSTM's recorded gates rebuild its c and h, layer by layer") {
    CharModel model(config_of("lstm"), Vocabulary::from_text(sample_text), 3);
    const Inspection in = inspect(parts_of(model), sample_text, 50);
    REQUIRE(in.layers.size() == 2);
    const std::size_t H = in.hidden;
    for (std::size_t l = 0; l < 2; ++l) {
        std::vector<std::string> names;
        for (const Series& s : in.layers[l].series) {
            names.push_back(s.name);
        }
        // h and c first, then the gates lstm_gates names, in the order the tape kept them.
        REQUIRE(names.size() == 6);
        CHECK(names[0] == "h");
        CHECK(names[1] == "c");
        std::sort(names.begin() + 2, names.end());
        CHECK(names ==
              std::vector<std::string>{"h", "c", "candidate", "forget", "input", "output"});
        const Series &h = *in.find(l, "h"), &c = *in.find(l, "c"), &f = *in.find(l, "forget"),
                     &i = *in.find(l, "input"), &g = *in.find(l, "candidate"),
                     &o = *in.find(l, "output");
        for (std::size_t t = 0; t < in.length(); ++t) {
            for (std::size_t j = 0; j < H; ++j) {
                const double previous = t == 0 ? 0.0 : at(c, H, t - 1, j);
                const double c_t = at(f, H, t, j) * previous + at(i, H, t, j) * at(g, H, t, j);
                REQUIRE(at(c, H, t, j) == doctest::Approx(c_t).epsilon(1e-5));
                REQUIRE(at(h, H, t, j) ==
                        doctest::Approx(at(o, H, t, j) * std::tanh(c_t)).epsilon(1e-5));
            }
        }
    }
    // The next-character guesses are the model's own: the same probabilities as CharModel.
    cellgrad::NoGradGuard no_grad;
    cellgrad::Tape<float> tape;
    model.rnn().set_training(false);
    const cellgrad::Var<float> logits = model.forward(tape, in.tokens, 1, {}, nullptr);
    for (std::size_t t = 0; t + 1 < in.length(); t += 17) {
        const float* row = logits.value().row(t);
        double total = 0;
        for (std::size_t v = 0; v < in.vocabulary.size(); ++v) {
            total += std::exp(double(row[v]));
        }
        const auto best = in.top_index[t * Inspection::top_k];
        CHECK(in.top_prob[t * Inspection::top_k] ==
              doctest::Approx(std::exp(double(row[best])) / total).epsilon(1e-4));
        CHECK(in.next_prob[t] ==
              doctest::Approx(std::exp(double(row[in.tokens[t + 1]])) / total).epsilon(1e-4));
        CHECK(in.top_prob[t * Inspection::top_k] >= in.top_prob[t * Inspection::top_k + 1]);
    }
}

TEST_CASE("inspect: chunks carry the state, so the recording does not depend on them") {
    CharModel model(config_of("lstm"), Vocabulary::from_text(sample_text), 5);
    const Inspection whole = inspect(parts_of(model), sample_text, 1000);
    const Inspection pieces = inspect(parts_of(model), sample_text, 7);
    for (std::size_t l = 0; l < whole.layers.size(); ++l) {
        REQUIRE(whole.layers[l].series.size() == pieces.layers[l].series.size());
        for (std::size_t s = 0; s < whole.layers[l].series.size(); ++s) {
            const auto& a = whole.layers[l].series[s].values;
            const auto& b = pieces.layers[l].series[s].values;
            for (std::size_t k = 0; k < a.size(); ++k) {
                REQUIRE(a[k] == doctest::Approx(b[k]).epsilon(1e-5));
            }
        }
    }
    CHECK(whole.top_index == pieces.top_index);
}

TEST_CASE("inspect: a GRU's recorded gates rebuild h; a plain RNN records h only") {
    CharModel gru(config_of("gru"), Vocabulary::from_text(sample_text), 3);
    const Inspection in = inspect(parts_of(gru), sample_text);
    const std::size_t H = in.hidden;
    for (std::size_t l = 0; l < 2; ++l) {
        REQUIRE(in.layers[l].series.size() == 4); // h, reset, update, candidate
        const Series &h = *in.find(l, "h"), &z = *in.find(l, "update"),
                     &n = *in.find(l, "candidate");
        CHECK(in.find(l, "reset") != nullptr);
        for (std::size_t t = 0; t < in.length(); ++t) {
            for (std::size_t j = 0; j < H; ++j) {
                const double previous = t == 0 ? 0.0 : at(h, H, t - 1, j);
                const double zt = at(z, H, t, j);
                REQUIRE(at(h, H, t, j) ==
                        doctest::Approx((1 - zt) * at(n, H, t, j) + zt * previous).epsilon(1e-5));
            }
        }
    }
    CharModel rnn(config_of("rnn"), Vocabulary::from_text(sample_text), 3);
    const Inspection plain = inspect(parts_of(rnn), sample_text);
    REQUIRE(plain.layers[1].series.size() == 1);
    CHECK(plain.layers[1].series[0].name == "h");
    CHECK(saturation(plain).empty()); // no gates to saturate
}

TEST_CASE("inspect: every registered cell shows the gates its math names, no inspector code") {
    for (const std::string& cell : nn::cell_names()) {
        CAPTURE(cell);
        LibraryModel model(cell);
        const Inspection in = inspect(model.parts(cell), sample_text, 40);
        REQUIRE(in.layers.size() == 2);
        for (const LayerRecording& layer : in.layers) {
            CHECK(layer.series.front().name == "h");
            for (const Series& s : layer.series) {
                REQUIRE(s.values.size() == in.length() * in.hidden);
                for (const float v : s.values) {
                    REQUIRE(std::isfinite(v));
                }
            }
        }
        if (cell != "rnn") {
            CHECK(in.layers[0].series.size() >= 3); // h and at least two named gates
        }
    }
    // The peephole LSTM's own gates rebuild its c: c_t = f c_{t-1} + i g.
    LibraryModel peephole("peephole-lstm");
    const Inspection in = inspect(peephole.parts("peephole-lstm"), sample_text);
    const std::size_t H = in.hidden;
    const Series &c = *in.find(1, "c"), &f = *in.find(1, "forget"), &i = *in.find(1, "input"),
                 &g = *in.find(1, "candidate");
    for (std::size_t t = 1; t < in.length(); ++t) {
        for (std::size_t j = 0; j < H; ++j) {
            REQUIRE(at(c, H, t, j) == doctest::Approx(at(f, H, t, j) * at(c, H, t - 1, j) +
                                                      at(i, H, t, j) * at(g, H, t, j))
                                          .epsilon(1e-5));
        }
    }
    // Cho's GRU names its own gates too.
    LibraryModel cho("cho-gru");
    const Inspection cho_in = inspect(cho.parts("cho-gru"), sample_text);
    CHECK(cho_in.find(0, "update") != nullptr);
    CHECK(cho_in.find(0, "reset") != nullptr);
}

TEST_CASE("inspect: saturation fractions and correlated units find what is there") {
    Inspection in;
    in.text = "ab\"cd\"ef\ngh";
    in.hidden = 2;
    in.num_layers = 1;
    const std::size_t N = in.text.size();
    LayerRecording layer{
        "l0", 0, {{"h", std::vector<float>(N * 2)}, {"gate", std::vector<float>(N * 2)}}};
    const std::vector<TextFeature> features = text_features(in.text);
    const TextFeature& quotes = features[0];
    CHECK(quotes.name == "quotes");
    CHECK(quotes.values == std::vector<float>{0, 0, 1, 1, 1, 1, 0, 0, 0, 0, 0});
    CHECK(features[2].values == std::vector<float>{0, 1, 2, 3, 4, 5, 6, 7, 8, 0, 1}); // column
    for (std::size_t t = 0; t < N; ++t) {
        layer.series[0].values[t * 2 + 1] = quotes.values[t] * 0.5f - 0.2f; // unit 1 follows quotes
        layer.series[0].values[t * 2] = float(t % 3);
        layer.series[1].values[t * 2] = 0.95f;                    // always open
        layer.series[1].values[t * 2 + 1] = t < 4 ? 0.05f : 0.5f; // shut for 4 characters
    }
    in.layers.push_back(layer);
    const std::vector<Saturation> s = saturation(in);
    REQUIRE(s.size() == 1);
    CHECK(s[0].gate == "gate");
    CHECK(s[0].right[0] == doctest::Approx(1.0));
    CHECK(s[0].left[0] == doctest::Approx(0.0));
    CHECK(s[0].left[1] == doctest::Approx(4.0 / double(N)));
    bool found = false;
    for (const Correlation& c : interesting_units(in, 1)) {
        if (c.feature == "quotes") {
            found = c.series == "h" && c.unit == 1 && c.r == doctest::Approx(1.0);
        }
    }
    CHECK(found);
}

TEST_CASE("training history: bounded, thinned evenly, and round-trips through JSON") {
    TrainingHistory history;
    for (std::int64_t step = 1; step <= 1000; ++step) {
        history.add_point(
            {step, step == 1 ? std::nullopt : std::optional(4.0 / double(step)), 3.0});
        history.add_sample(step, std::string(500, 'x') + std::to_string(step));
    }
    CHECK(history.points().size() <= TrainingHistory::max_points);
    CHECK(history.points().front().step == 1);
    CHECK(history.points().back().step == 1000);
    CHECK(history.samples().size() == TrainingHistory::max_samples);
    CHECK(history.samples().front().step == 1);
    CHECK(history.samples().back().step == 1000);
    CHECK(history.samples().back().text.size() == TrainingHistory::max_sample_bytes);
    const std::string json = history.to_json();
    CHECK(json.size() < 60'000);
    const TrainingHistory back = TrainingHistory::from_json(json);
    CHECK(back.to_json() == json);
    CHECK(!back.points().front().train.has_value());
    CHECK_THROWS_WITH_AS(TrainingHistory::from_json("{\"points\": 3}"),
                         doctest::Contains("arrays 'points' and 'samples'"), cellgrad::Error);
    CHECK_THROWS_WITH_AS(
        TrainingHistory::from_json(R"({"points":[{"step":1,"train":null,"val":-1}],"samples":[]})"),
        doctest::Contains("'val' must be a loss"), cellgrad::Error);
}

TEST_CASE("inspect: the page is self-contained and fits its budget; JSON has the schema") {
    CharModel model(config_of("lstm"), Vocabulary::from_text(sample_text), 3);
    Inspection in = inspect(parts_of(model), sample_text);
    TrainingHistory history;
    history.add_point({100, 2.5, 2.6});
    history.add_sample(100, "And </script> said");
    in.history_json = history.to_json();
    PageInfo info;
    const std::string page = make_page(in, {}, &info);
    CHECK(info.bits == 8);
    CHECK(info.bytes == page.size());
    CHECK(page.find("@DATA@") == std::string::npos);
    CHECK(page.find("/*@META@*/") == std::string::npos);
    CHECK(page.find("http://") == std::string::npos);
    CHECK(page.find("https://") == std::string::npos);
    CHECK(page.find(" src=") == std::string::npos);
    CHECK(page.find("And </script>") == std::string::npos); // escaped inside the inline JSON
    // A tight budget lowers the precision instead of growing the page.
    PageInfo small;
    const std::string tight = make_page(in, {page.size() - 1, ""}, &small);
    CHECK(small.bits < 8);
    CHECK(tight.size() < page.size());
    CHECK(small.max_bits >= small.bits);
    // An impossible budget ends at 4 bits for every series (the page says so; nothing loops).
    PageInfo none;
    make_page(in, {1000, ""}, &none);
    CHECK(none.bits == 4);
    CHECK(none.max_bits == 4);

    const nlohmann::json json = nlohmann::json::parse(inspection_json(in));
    CHECK(json["format"] == "cellgrad.inspect.v1");
    CHECK(json["text"] == sample_text);
    CHECK(json["layers"].size() == 2);
    CHECK(json["layers"][0]["order"][1] == "c");
    CHECK(json["layers"][1]["series"]["forget"].size() == sample_text.size());
    CHECK(json["layers"][1]["series"]["forget"][3].size() == in.hidden);
    CHECK(json["layers"][1]["series"]["forget"][3][2].get<float>() ==
          in.find(1, "forget")->values[3 * in.hidden + 2]);
    CHECK(json["history"]["points"][0]["val"] == 2.6);
}

TEST_CASE("inspect: LSTMVis files (when this build has HDF5)") {
    CharModel model(config_of("lstm"), Vocabulary::from_text(sample_text), 3);
    const Inspection in = inspect(parts_of(model), sample_text);
    const fs::path dir = fs::temp_directory_path() / fmt::format("cellgrad-lstmvis-{}", ::getpid());
    if (!lstmvis_supported()) {
        CHECK_THROWS_WITH_AS(write_lstmvis(in, dir), doctest::Contains("without HDF5"),
                             cellgrad::Error);
        return;
    }
    write_lstmvis(in, dir);
    for (const char* name : {"states.h5", "train.h5", "words.dict", "lstm.yml"}) {
        CHECK(fs::exists(dir / name));
    }
    std::ifstream dict(dir / "words.dict");
    std::string word;
    std::size_t id = 0, lines = 0;
    bool space_named = false;
    while (dict >> word >> id) {
        space_named = space_named || word == "<space>";
        ++lines;
    }
    CHECK(lines == in.vocabulary.size());
    CHECK(space_named);
    std::ifstream yml(dir / "lstm.yml");
    const std::string config((std::istreambuf_iterator<char>(yml)), {});
    CHECK(config.find("{type: state, layer: 2, path: states2}") != std::string::npos);
    CHECK(config.find("path: word_ids") != std::string::npos);
    fs::remove_all(dir);
}
