// The character model: training learns, checkpoints round-trip and resume exactly, bad files and
// bad text get clear errors.
#include <doctest/doctest.h>

#include <chrono>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <limits>
#include <tuple>

#include "char_rnn.hpp"

using namespace char_rnn;
namespace fs = std::filesystem;

namespace {

/// A fresh scratch directory under the system temp dir, removed at the end of the test.
struct ScratchDir {
    fs::path path;
    ScratchDir() {
        path = fs::temp_directory_path() /
               fmt::format("cellgrad-char-rnn-{}-{}", ::getpid(), counter()++);
        fs::create_directories(path);
    }
    ~ScratchDir() { fs::remove_all(path); }
    static int& counter() {
        static int value = 0;
        return value;
    }
};

std::string repeated_text(const std::string& unit, std::size_t copies) {
    std::string text;
    for (std::size_t i = 0; i < copies; ++i) {
        text += unit;
    }
    return text;
}

/// True when every parameter of a and b has bit-identical values.
bool same_weights(CharModel& a, CharModel& b) {
    auto pa = a.parameters();
    auto pb = b.parameters();
    if (pa.size() != pb.size()) {
        return false;
    }
    for (std::size_t i = 0; i < pa.size(); ++i) {
        if (pa[i]->name != pb[i]->name || pa[i]->value.shape() != pb[i]->value.shape() ||
            std::memcmp(pa[i]->value.data(), pb[i]->value.data(),
                        sizeof(float) * pa[i]->value.size()) != 0) {
            return false;
        }
    }
    return true;
}

ModelConfig small_model(const std::string& cell) {
    ModelConfig config;
    config.cell = cell;
    config.hidden = 24;
    config.layers = 2;
    config.embedding = 8;
    return config;
}

} // namespace

TEST_CASE("char_rnn: training on a tiny periodic text drives the loss far below ln(V)") {
    const std::string text = repeated_text("the cat sat on the mat. ", 80);
    const Vocabulary vocabulary = Vocabulary::from_text(text);
    CHECK(vocabulary.size() == 11); // t h e c a s o n m . and the space
    TrainConfig train;
    train.seq = 16;
    train.batch = 8;
    train.lr = 1e-2;
    train.seed = 3;
    for (const std::string cell : {"lstm", "gru", "rnn"}) {
        CAPTURE(cell);
        Trainer trainer(small_model(cell), train, vocabulary, vocabulary.encode(text, "text"));
        const double first = trainer.train_step();
        CHECK(first == doctest::Approx(std::log(double(vocabulary.size()))).epsilon(0.1));
        double last = first;
        for (int i = 0; i < 150; ++i) {
            last = trainer.train_step();
        }
        // The text is deterministic after a few characters of context: the loss must collapse.
        CHECK(last < 0.25 * std::log(double(vocabulary.size())));
        const EvalResult eval =
            evaluate(trainer.model(), vocabulary.encode(text.substr(0, 400), "t"));
        CHECK(eval.predictions == 399);
        CHECK(eval.nats < 0.3);
        CHECK(eval.bits() == doctest::Approx(eval.nats / std::log(2.0)));
    }
}

TEST_CASE("char_rnn: a model with a zero decoder predicts uniformly: eval gives exactly ln(V)") {
    const std::string text = "abcdefgh abcdefgh";
    CharModel model(small_model("lstm"), Vocabulary::from_text(text), 1);
    for (auto* parameter : model.parameters()) {
        if (parameter->name.rfind("decoder.", 0) == 0) {
            parameter->value.fill(0.0f);
        }
    }
    const EvalResult result = evaluate(model, model.vocabulary().encode(text, "t"), 5);
    CHECK(result.predictions == text.size() - 1);
    CHECK(result.nats == doctest::Approx(std::log(9.0)).epsilon(1e-6));
}

TEST_CASE("char_rnn: parameter names and shapes follow PyTorch's state dict") {
    CharModel model(small_model("lstm"), Vocabulary::from_text("abcde"), 0);
    std::vector<std::string> names;
    for (auto* parameter : model.parameters()) {
        names.push_back(parameter->name);
    }
    const std::vector<std::string> expected = {
        "embedding.weight", "rnn.weight_ih_l0", "rnn.weight_hh_l0", "rnn.bias_ih_l0",
        "rnn.bias_hh_l0",   "rnn.weight_ih_l1", "rnn.weight_hh_l1", "rnn.bias_ih_l1",
        "rnn.bias_hh_l1",   "decoder.weight",   "decoder.bias"};
    CHECK(names == expected);
    auto parameters = model.parameters();
    CHECK(parameters[0]->value.shape() == cellgrad::Shape{5, 8});
    CHECK(parameters[1]->value.shape() == cellgrad::Shape{96, 8});
    CHECK(parameters[3]->export_shape == std::vector<std::size_t>{96});
    CHECK(parameters[9]->value.shape() == cellgrad::Shape{5, 24});
    CHECK(parameters[10]->export_shape == std::vector<std::size_t>{5});
}

TEST_CASE("char_rnn: checkpoint round trip is bit-exact and resume equals an uninterrupted run") {
    ScratchDir scratch;
    const std::string text = repeated_text("to be or not to be, that is the question. ", 12);
    const Vocabulary vocabulary = Vocabulary::from_text(text);
    ModelConfig model = small_model("lstm");
    model.dropout = 0.3; // the dropout RNG must be restored too
    TrainConfig train;
    train.seq = 10;
    train.batch = 4;
    train.optimizer = "adam";
    train.lr = 3e-3;
    train.clip = 1.0;
    train.seed = 11;
    const auto indices = vocabulary.encode(text, "text");

    // Enough steps that the streams wrap (carried state reset) before and after the save.
    Trainer uninterrupted(model, train, vocabulary, indices);
    const std::size_t windows = uninterrupted.windows_per_epoch();
    REQUIRE(windows >= 2);
    const std::size_t total = 2 * windows + 3;
    const std::size_t saved_at = windows + 1;
    std::vector<double> losses;
    for (std::size_t i = 0; i < total; ++i) {
        losses.push_back(uninterrupted.train_step());
    }

    Trainer first_half(model, train, vocabulary, indices);
    for (std::size_t i = 0; i < saved_at; ++i) {
        CHECK(first_half.train_step() == losses[i]);
    }
    const fs::path checkpoint = scratch.path / "run.safetensors";
    first_half.save(checkpoint);

    auto reloaded = load_model(checkpoint);
    CHECK(same_weights(*reloaded, first_half.model()));
    CHECK(reloaded->config().to_json() == model.to_json());
    CHECK(reloaded->vocabulary().bytes() == vocabulary.bytes());

    Trainer resumed(model, train, vocabulary, indices);
    resumed.resume(checkpoint);
    CHECK(resumed.step() == std::int64_t(saved_at));
    for (std::size_t i = saved_at; i < total; ++i) {
        CHECK(resumed.train_step() == losses[i]);
    }
    CHECK(same_weights(resumed.model(), uninterrupted.model()));
    for (auto* file : {&checkpoint}) {
        CHECK(fs::exists(*file));
    }
    // No temp files left next to the checkpoint.
    CHECK(std::distance(fs::directory_iterator(scratch.path), fs::directory_iterator{}) == 1);
}

TEST_CASE("char_rnn: truncated, corrupted and mismatched checkpoints give clear errors") {
    ScratchDir scratch;
    const std::string text = "hello world, hello cellgrad";
    const Vocabulary vocabulary = Vocabulary::from_text(text);
    TrainConfig train;
    train.seq = 4;
    train.batch = 2;
    Trainer trainer(small_model("gru"), train, vocabulary, vocabulary.encode(text, "t"));
    trainer.train_step();
    const fs::path good = scratch.path / "good.safetensors";
    trainer.save(good);
    const auto size = fs::file_size(good);

    std::string bytes;
    {
        std::ifstream in(good, std::ios::binary);
        bytes.assign(std::istreambuf_iterator<char>(in), {});
    }
    for (const std::size_t cut :
         {std::size_t(3), std::size_t(20), std::size_t(size / 2), std::size_t(size - 1)}) {
        CAPTURE(cut);
        const fs::path truncated = scratch.path / "truncated.safetensors";
        {
            std::ofstream out(truncated, std::ios::binary);
            out.write(bytes.data(), std::streamsize(cut));
        }
        try {
            load_model(truncated);
            FAIL("a truncated checkpoint loaded");
        } catch (const cellgrad::Error& error) {
            CHECK(std::string(error.what()).find("truncated.safetensors") != std::string::npos);
        }
    }
    {
        std::string corrupted = bytes;
        corrupted[10] = '#'; // inside the JSON header
        const fs::path path = scratch.path / "corrupted.safetensors";
        std::ofstream(path, std::ios::binary)
            .write(corrupted.data(), std::streamsize(corrupted.size()));
        CHECK_THROWS_AS(load_model(path), cellgrad::Error);
    }
    // A checkpoint of another architecture cannot be resumed into this one.
    ModelConfig other = small_model("gru");
    other.hidden = 16;
    Trainer different(other, train, vocabulary, vocabulary.encode(text, "t"));
    try {
        different.resume(good);
        FAIL("a mismatched checkpoint was resumed");
    } catch (const cellgrad::Error& error) {
        CHECK(std::string(error.what()).find("config") != std::string::npos);
    }
}

TEST_CASE("char_rnn: a byte outside the vocabulary is named with its position") {
    const Vocabulary vocabulary = Vocabulary::from_text("abc");
    try {
        vocabulary.encode("abcabxa", "input.txt");
        FAIL("encoded a byte outside the vocabulary");
    } catch (const cellgrad::Error& error) {
        const std::string message = error.what();
        CHECK(message.find("input.txt") != std::string::npos);
        CHECK(message.find("'x'") != std::string::npos);
        CHECK(message.find("position 5") != std::string::npos);
    }
}

TEST_CASE("char_rnn: sampling is reproducible from a seed, argmax is deterministic") {
    CharModel model(small_model("lstm"), Vocabulary::from_text("abcdefgh \n"), 5);
    SampleConfig config;
    config.length = 40;
    config.prime = "abc";
    config.seed = 9;
    const std::string first = sample(model, config);
    CHECK(first.size() == 43);
    CHECK(first.substr(0, 3) == "abc");
    CHECK(sample(model, config) == first);
    config.seed = 10;
    CHECK(sample(model, config) != first);
    config.argmax = true;
    CHECK(sample(model, config) == sample(model, config));
    config.prime = "xyz";
    CHECK_THROWS_AS(sample(model, config), cellgrad::Error);
}

// ---- reliability: what a careless or hostile user can do (issue 16) ---------------------------

namespace {

/// The message of the cellgrad::Error thrown by f ("" and a failed check if none).
template <class F>
std::string error_of(F&& f) {
    try {
        f();
    } catch (const cellgrad::Error& error) {
        return error.what();
    }
    FAIL("expected a cellgrad::Error, nothing was thrown");
    return "";
}

bool contains(const std::string& text, const std::string& part) {
    return text.find(part) != std::string::npos;
}

std::string file_bytes(const fs::path& path) {
    std::ifstream in(path, std::ios::binary);
    return std::string(std::istreambuf_iterator<char>(in), {});
}

/// A checkpoint of `model` with its metadata changed by `edit` and tensors dropped or added.
void write_crafted(const fs::path& path, CharModel& model,
                   const std::function<void(cellgrad::io::Metadata&)>& edit,
                   const std::string& drop = "", const cellgrad::Tensor<float>* extra = nullptr) {
    std::vector<cellgrad::io::TensorEntry> entries;
    for (cellgrad::Parameter<float>* parameter : model.parameters()) {
        if (parameter->name != drop) {
            entries.push_back(cellgrad::io::make_entry(*parameter));
        }
    }
    if (extra != nullptr) {
        entries.push_back(cellgrad::io::make_entry("rnn.weight_ih_l9", *extra));
    }
    cellgrad::io::Metadata metadata{{"format", "cellgrad.char_rnn.v1"},
                                    {"config", model.config().to_json()},
                                    {"vocabulary", "[97,98,99]"}};
    edit(metadata);
    cellgrad::io::save_safetensors(path, entries, metadata);
}

} // namespace

TEST_CASE("char_rnn: a step that makes the weights non-finite stops before anything is saved") {
    ScratchDir scratch;
    const std::string text = repeated_text("abcabd abd ", 40);
    const Vocabulary vocabulary = Vocabulary::from_text(text);
    TrainConfig train;
    train.seq = 8;
    train.batch = 4;
    train.optimizer = "sgd";
    train.lr = 1e300; // what the command line now refuses; the library must still be safe
    Trainer trainer(small_model("lstm"), train, vocabulary, vocabulary.encode(text, "t"));
    const fs::path path = scratch.path / "good.safetensors";
    trainer.save(path);
    const std::string good = file_bytes(path);
    const std::string message = error_of([&] { trainer.train_step(); });
    CHECK(contains(message, "became non-finite at step 1"));
    CHECK(contains(message, "likely cause: --lr 1e+300 is too high"));
    CHECK(contains(message, "nothing from this step was saved"));
    const std::string refused = error_of([&] { trainer.save(path); });
    CHECK(contains(refused, fmt::format("refusing to save '{}'", path.string())));
    CHECK(contains(refused, "holds inf or NaN values"));
    CHECK(file_bytes(path) == good);
    CHECK(std::distance(fs::directory_iterator(scratch.path), fs::directory_iterator{}) == 1);
}

TEST_CASE("char_rnn: configs read from files are range-checked before any conversion") {
    const std::string base =
        R"({"cell":"lstm","hidden":8,"layers":1,"embedding":4,"dropout":0.0,"forget_bias":0.0})";
    CHECK(ModelConfig::from_json(base).hidden == 8);
    const std::pair<std::string, std::string> cases[] = {
        {R"("hidden":1e300)", "'hidden' must be a whole number from 1 to 65536, got 1e+300"},
        {R"("hidden":-1)", "'hidden' must be a whole number from 1 to 65536, got -1"},
        {R"("hidden":65537)", "'hidden' must be a whole number from 1 to 65536, got 65537"},
        {R"("layers":0)", "'layers' must be a whole number from 1 to 64, got 0"},
        {R"("dropout":null)", "'dropout' must be a number from 0 to 0.99, got null"},
        {R"("forget_bias":"x")", "'forget_bias' must be a number from -100 to 100, got \"x\""},
        {R"("cell":"lstmx")", "'cell' must be one of rnn, lstm, gru, lesson-lstm, "
                              "peephole-lstm, concat-peephole-lstm, cifg-lstm, nfg-lstm, "
                              "noaf-lstm, layernorm-lstm, cho-gru, mgu, got \"lstmx\""},
    };
    for (const auto& item : cases) {
        const std::string& field = item.first;
        const std::string& expected = item.second;
        CAPTURE(field);
        const std::string key = field.substr(0, field.find(':') + 1);
        std::string json = base;
        const std::size_t at = json.find(key);
        const std::size_t end = json.find_first_of(",}", at);
        json.replace(at, end - at, field);
        const std::string message = error_of([&] { ModelConfig::from_json(json); });
        CHECK(contains(message, expected));
    }
    CHECK(contains(error_of([] { ModelConfig::from_json("[1,2]"); }), "is not a JSON object"));
    TrainConfig train;
    train.lr = std::numeric_limits<double>::quiet_NaN();
    CHECK(contains(error_of([&] { train.validate(); }), "'lr' must be a number from 0 to 100"));
}

TEST_CASE("char_rnn: crafted checkpoints are refused with the file named, before any big "
          "allocation") {
    ScratchDir scratch;
    ModelConfig config = small_model("lstm");
    CharModel model(config, Vocabulary::from_text("abc"), 1);
    const fs::path path = scratch.path / "crafted.safetensors";
    auto load_error = [&] {
        const std::string message = error_of([&] { load_model(path); });
        CHECK(contains(message, path.string()));
        return message;
    };
    write_crafted(path, model, [](auto&) {});
    CHECK(load_model(path)->config().to_json() == config.to_json());

    // Vocabulary entries outside 0-255 are not narrowed (256 used to load as byte 0).
    write_crafted(path, model, [](auto& m) { m["vocabulary"] = "[97,98,256]"; });
    CHECK(contains(load_error(), "entries must be whole numbers from 0 to 255, got 256"));
    write_crafted(path, model, [](auto& m) { m["vocabulary"] = "[97,98,1e300]"; });
    CHECK(contains(load_error(), "entries must be whole numbers from 0 to 255, got 1e+300"));
    write_crafted(path, model, [](auto& m) { m["vocabulary"] = "[97,98,-1]"; });
    CHECK(contains(load_error(), "got -1"));

    // Strict both ways: fewer layers than the tensors, more layers, a missing tensor, an extra one.
    ModelConfig fewer = config;
    fewer.layers = 1;
    write_crafted(path, model, [&](auto& m) { m["config"] = fewer.to_json(); });
    CHECK(contains(load_error(), "unexpected tensor 'rnn.weight_ih_l1'"));
    ModelConfig more = config;
    more.layers = 3;
    write_crafted(path, model, [&](auto& m) { m["config"] = more.to_json(); });
    CHECK(contains(load_error(), "needs tensor 'rnn.weight_ih_l2', which the file does not have"));
    write_crafted(
        path, model, [](auto&) {}, "decoder.bias");
    CHECK(contains(load_error(), "no tensor 'decoder.bias'"));
    const cellgrad::Tensor<float> stray(2, 2, 0.0f);
    write_crafted(
        path, model, [](auto&) {}, "", &stray);
    CHECK(contains(load_error(), "unexpected tensor 'rnn.weight_ih_l9'"));

    // A config asking for 64 layers of 65536 units fails on the first shape, at once.
    ModelConfig huge = config;
    huge.layers = 64;
    huge.hidden = 65536;
    write_crafted(path, model, [&](auto& m) { m["config"] = huge.to_json(); });
    const auto start = std::chrono::steady_clock::now();
    CHECK(contains(load_error(), "tensor 'rnn.weight_ih_l0' has shape [96, 8] but model config"));
    CHECK(std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count() < 1.0);

    // Non-finite weights are named rather than sampled from.
    model.parameters()[2]->value(0, 0) = std::numeric_limits<float>::quiet_NaN();
    write_crafted(path, model, [](auto&) {});
    CHECK(contains(load_error(), "tensor 'rnn.weight_hh_l0' holds inf or NaN values"));
}

TEST_CASE("char_rnn: corrupt step counters give clear messages naming the file") {
    ScratchDir scratch;
    const std::string text = repeated_text("abcabd abd ", 40);
    const Vocabulary vocabulary = Vocabulary::from_text(text);
    TrainConfig train;
    train.seq = 8;
    train.batch = 4;
    Trainer trainer(small_model("gru"), train, vocabulary, vocabulary.encode(text, "t"));
    trainer.train_step();
    const fs::path good = scratch.path / "good.safetensors";
    trainer.save(good);
    const cellgrad::io::SafetensorsFile file = cellgrad::io::load_safetensors(good);
    const fs::path bad = scratch.path / "bad.safetensors";
    auto rewrite = [&](const std::string& key, const std::string& value) {
        std::vector<cellgrad::io::TensorEntry> entries;
        for (const std::string& name : file.names()) {
            const auto raw = file.raw(name);
            entries.push_back({name, file.shape(name), file.dtype(name), raw.data()});
        }
        cellgrad::io::Metadata metadata = file.metadata();
        metadata[key] = value;
        cellgrad::io::save_safetensors(bad, entries, metadata);
    };
    const std::tuple<std::string, std::string, std::string> cases[] = {
        {"step", "abc",
         "the step count must be a whole number from 0 to 1000000000000000, got 'abc'"},
        {"step", "9223372036854775807", "got '9223372036854775807'"},
        {"step", "-1", "got '-1'"},
        {"optimizer", R"({"name":"Adam","lr":0.002,"step_count":9223372036854775807})",
         "'step_count' must be a whole number from 0 to 1000000000000000"},
        {"optimizer", R"({"name":"Adam","lr":1e300,"step_count":1})",
         "'lr' must be a number from 0 to 100, got 1e+300"},
        {"best_val", R"({"nats":null})", "'nats' must be a number from 0 to 1000000, got null"},
    };
    for (const auto& item : cases) {
        const std::string& key = std::get<0>(item); // not bindings: CAPTURE's lambda needs names
        const std::string& value = std::get<1>(item);
        const std::string& expected = std::get<2>(item);
        CAPTURE(value);
        rewrite(key, value);
        Trainer resumed(small_model("gru"), train, vocabulary, vocabulary.encode(text, "t"));
        const std::string message = error_of([&] { resumed.resume(bad); });
        CHECK(contains(message, bad.string()));
        CHECK(contains(message, expected));
    }
}

TEST_CASE("char_rnn: read_file refuses directories, devices and oversized files by name") {
    ScratchDir scratch;
    CHECK(contains(error_of([&] { read_file(scratch.path); }), "is a directory, not a text file"));
    CHECK(contains(error_of([] { read_file("/dev/zero"); }),
                   "'/dev/zero' is not a regular file (a device, pipe or socket)"));
    const fs::path text = scratch.path / "text.txt";
    std::ofstream(text) << "0123456789abc";
    CHECK(contains(error_of([&] { read_file(text, 10); }), "is 13 bytes, more than the 10-byte "
                                                           "limit"));
    CHECK(read_file(text, 13) == "0123456789abc");
    CHECK(contains(error_of([&] { read_file(scratch.path / "missing"); }), "no such file"));
}

TEST_CASE(
    "char_rnn: a checkpoint written before the first step resumes like an uninterrupted run") {
    ScratchDir scratch;
    const std::string text = repeated_text("abcabd abd ", 40);
    const Vocabulary vocabulary = Vocabulary::from_text(text);
    TrainConfig train;
    train.seq = 8;
    train.batch = 4;
    Trainer uninterrupted(small_model("lstm"), train, vocabulary, vocabulary.encode(text, "t"));
    const fs::path path = scratch.path / "step0.safetensors";
    uninterrupted.save(path);
    CHECK_FALSE(cellgrad::io::load_safetensors(path).has("carry.0.0"));
    Trainer resumed(small_model("lstm"), train, vocabulary, vocabulary.encode(text, "t"));
    resumed.resume(path);
    for (int i = 0; i < 3; ++i) {
        CHECK(resumed.train_step() == uninterrupted.train_step());
    }
    CHECK(same_weights(resumed.model(), uninterrupted.model()));
}
