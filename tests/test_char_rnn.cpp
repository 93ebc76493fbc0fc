// The character model: training learns, checkpoints round-trip and resume exactly, bad files and
// bad text get clear errors.
#include <doctest/doctest.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>

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
