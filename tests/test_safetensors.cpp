// Tests for safetensors checkpoints: bit-exact round trips, the byte layout other readers expect,
// validation of corrupt files, and atomic writes.
#include <doctest/doctest.h>

#include <atomic>
#include <bit>
#include <chrono>
#include <csignal>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include "cellgrad/io/safetensors.hpp"

using namespace cellgrad;
using namespace cellgrad::io;
namespace fs = std::filesystem;

namespace {

/// A directory under the system temp dir, unique per run and per test, removed at the end.
struct TempDir {
    fs::path path;
    TempDir() {
        static std::atomic<int> counter{0};
        const auto now = std::chrono::steady_clock::now().time_since_epoch().count();
        path = fs::temp_directory_path() /
               fmt::format("cellgrad_safetensors_{}_{}_{}", ::getpid(), now, counter++);
        fs::create_directories(path);
    }
    ~TempDir() {
        std::error_code ignored;
        fs::remove_all(path, ignored);
    }
    TempDir(const TempDir&) = delete;
    TempDir& operator=(const TempDir&) = delete;
    /// A path inside the directory.
    fs::path operator/(const std::string& name) const { return path / name; }
    /// Names of the entries that look like leftover temp files.
    std::vector<std::string> temp_files() const {
        std::vector<std::string> found;
        for (const auto& entry : fs::recursive_directory_iterator(path)) {
            std::string name = entry.path().filename().string();
            if (name.find(".tmp.") != std::string::npos)
                found.push_back(name);
        }
        return found;
    }
};

/// The message of the cellgrad::Error thrown by f, or "" (and a failed check) if none is thrown.
template <class F>
std::string error_of(F&& f) {
    try {
        f();
    } catch (const Error& e) {
        return e.what();
    } catch (const std::exception& e) {
        FAIL("expected cellgrad::Error, got another exception: " << e.what());
        return "";
    }
    FAIL("expected cellgrad::Error, nothing was thrown");
    return "";
}

/// True when `text` contains `part`.
bool contains(const std::string& text, const std::string& part) {
    return text.find(part) != std::string::npos;
}

std::vector<std::byte> read_bytes(const fs::path& path) {
    std::ifstream in(path, std::ios::binary);
    std::vector<char> chars((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    std::vector<std::byte> bytes(chars.size());
    std::memcpy(bytes.data(), chars.data(), chars.size());
    return bytes;
}

void write_bytes(const fs::path& path, const std::vector<std::byte>& bytes) {
    std::ofstream out(path, std::ios::binary | std::ios::trunc);
    out.write(reinterpret_cast<const char*>(bytes.data()),
              static_cast<std::streamsize>(bytes.size()));
}

/// A file from a raw header text (no padding added) followed by `data_size` zero bytes.
void write_raw(const fs::path& path, const std::string& header, std::size_t data_size,
               std::uint64_t header_size_field = std::numeric_limits<std::uint64_t>::max()) {
    std::uint64_t n = header_size_field == std::numeric_limits<std::uint64_t>::max()
                          ? header.size()
                          : header_size_field;
    std::vector<std::byte> bytes;
    for (int i = 0; i < 8; ++i)
        bytes.push_back(static_cast<std::byte>((n >> (8 * i)) & 0xFF));
    for (char c : header)
        bytes.push_back(static_cast<std::byte>(c));
    bytes.resize(bytes.size() + data_size, std::byte{0});
    write_bytes(path, bytes);
}

template <class T>
bool same_bits(const T* a, const T* b, std::size_t n) {
    return std::memcmp(a, b, n * sizeof(T)) == 0;
}

/// A small checkpoint: an F32 matrix, an F64 bias vector, an I64 step scalar, and metadata.
struct Sample {
    Parameter<float> weight{"lstm.weight_ih_l0",
                            Tensor<float>(2, 3, {1.5f, -0.0f, 3.25e-39f, 1e30f, -7.0f, 0.1f})};
    Parameter<double> bias{"lstm.bias_ih_l0", Tensor<double>(1, 2, {0.1, -1e-300}), true};
    std::vector<std::int64_t> step{42};
    Metadata metadata{{"format", "pt"}, {"epoch", "3"}};

    std::vector<TensorEntry> entries() const {
        return {make_entry(weight), make_entry(bias), make_entry("step", step, {})};
    }
};

} // namespace

TEST_CASE("safetensors: round trip is bit-exact for F32, F64, I64 and keeps metadata") {
    TempDir dir;
    const float nan_f = std::bit_cast<float>(std::uint32_t{0x7fc01234});
    const double nan_d = std::bit_cast<double>(std::uint64_t{0x7ff8000000abcdefULL});
    Tensor<float> f(2, 3,
                    {0.1f, -0.0f, std::numeric_limits<float>::denorm_min(),
                     std::numeric_limits<float>::infinity(), nan_f,
                     std::numeric_limits<float>::max()});
    Tensor<double> d(3, 1, {1.0 / 3.0, nan_d, -std::numeric_limits<double>::denorm_min()});
    Parameter<double> bias("cell.bias", Tensor<double>(1, 4, {1, 2, 3, 4}), true);
    std::vector<std::int64_t> counters{0, -1, std::numeric_limits<std::int64_t>::min(),
                                       std::numeric_limits<std::int64_t>::max(), 123456789012345};
    Tensor<float> empty(0, 5);
    const Metadata metadata{{"cellgrad", "0.1.0"}, {"note", "ünïcode ✓ and \"quotes\""}};

    const fs::path path = dir / "model.safetensors";
    save_safetensors(path,
                     {make_entry("f", f), make_entry("d", d, {3}), make_entry(bias),
                      make_entry("counters", counters, {5}), make_entry("empty", empty)},
                     metadata);

    SafetensorsFile file = load_safetensors(path);
    CHECK(file.names() == std::vector<std::string>{"f", "d", "cell.bias", "counters", "empty"});
    CHECK(file.metadata() == metadata);
    CHECK(file.has("f"));
    CHECK_FALSE(file.has("g"));
    CHECK(file.dtype("f") == Dtype::F32);
    CHECK(file.dtype("d") == Dtype::F64);
    CHECK(file.dtype("counters") == Dtype::I64);
    CHECK(file.shape("f") == std::vector<std::size_t>{2, 3});
    CHECK(file.shape("d") == std::vector<std::size_t>{3});
    CHECK(file.shape("cell.bias") == std::vector<std::size_t>{4});
    CHECK(file.shape("empty") == std::vector<std::size_t>{0, 5});

    Tensor<float> f2 = file.to_tensor<float>("f");
    CHECK(f2.shape() == Shape{2, 3});
    CHECK(same_bits(f.data(), f2.data(), f.size()));

    Tensor<double> d2(3, 1);
    file.read_into("d", d2, {3});
    CHECK(same_bits(d.data(), d2.data(), d.size()));

    Parameter<double> bias2("cell.bias", Tensor<double>(1, 4), true);
    file.read_into(bias2);
    CHECK(same_bits(bias.value.data(), bias2.value.data(), 4));
    CHECK(file.to_tensor<double>("cell.bias").shape() == Shape{1, 4});

    CHECK(file.to_int64("counters") == counters);
    CHECK(file.to_tensor<float>("empty").shape() == Shape{0, 5});
    CHECK(file.raw("f").size() == 24);

    // A file with no tensors and no metadata is valid too.
    save_safetensors(dir / "empty.safetensors", {});
    SafetensorsFile nothing = load_safetensors(dir / "empty.safetensors");
    CHECK(nothing.names().empty());
    CHECK(nothing.metadata().empty());
    CHECK(dir.temp_files().empty());
}

TEST_CASE("safetensors: the exact byte layout any safetensors reader expects") {
    TempDir dir;
    Tensor<float> a(1, 2, {1.0f, -2.0f});
    std::vector<std::int64_t> b{7};
    const fs::path path = dir / "layout.safetensors";
    save_safetensors(path, {make_entry("a", a, {2}), make_entry("b", b, {})}, {{"format", "pt"}});
    const std::vector<std::byte> bytes = read_bytes(path);

    // The reference writer: metadata first, then the tensors, compact JSON, padded with spaces.
    const std::string json = R"({"__metadata__":{"format":"pt"},)"
                             R"("a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
                             R"("b":{"dtype":"I64","shape":[],"data_offsets":[8,16]}})";
    std::string header = json;
    header.append((8 - json.size() % 8) % 8, ' ');
    REQUIRE(header.size() % 8 == 0);
    REQUIRE(bytes.size() == 8 + header.size() + 16);

    // Header length: u64 little-endian.
    std::uint64_t n = 0;
    for (int i = 0; i < 8; ++i)
        n |= static_cast<std::uint64_t>(bytes[i]) << (8 * i);
    CHECK(n == header.size());
    CHECK(static_cast<unsigned>(bytes[0]) == (header.size() & 0xFF));
    CHECK(static_cast<unsigned>(bytes[7]) == 0);

    const std::string stored(reinterpret_cast<const char*>(bytes.data()) + 8, n);
    CHECK(stored == header);
    const nlohmann::json parsed = nlohmann::json::parse(stored);
    CHECK(parsed["__metadata__"]["format"] == "pt");
    CHECK(parsed["a"]["dtype"] == "F32");
    CHECK(parsed["a"]["shape"] == nlohmann::json::array({2}));
    CHECK(parsed["a"]["data_offsets"] == nlohmann::json::array({0, 8}));
    CHECK(parsed["b"]["dtype"] == "I64");
    CHECK(parsed["b"]["shape"] == nlohmann::json::array());
    CHECK(parsed["b"]["data_offsets"] == nlohmann::json::array({8, 16}));

    // 1.0f = 0x3F800000, -2.0f = 0xC0000000, 7 as i64; all little-endian.
    const std::vector<unsigned> data_expected{0x00, 0x00, 0x80, 0x3F, 0x00, 0x00, 0x00, 0xC0,
                                              0x07, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00};
    std::vector<unsigned> data_found;
    for (std::size_t i = 8 + n; i < bytes.size(); ++i) {
        data_found.push_back(static_cast<unsigned>(bytes[i]));
    }
    CHECK(data_found == data_expected);

    // The in-memory image is the same file.
    CHECK(serialize_safetensors({make_entry("a", a, {2}), make_entry("b", b, {})},
                                {{"format", "pt"}}) == bytes);
    // And a hand-made file (no padding, other key order) is read as well.
    const fs::path hand = dir / "hand.safetensors";
    const std::string hand_header =
        R"({"b":{"data_offsets":[8,16],"shape":[],"dtype":"I64"},"a":{"shape":[2],"dtype":"F32","data_offsets":[0,8]}})";
    std::vector<std::byte> hand_bytes;
    for (int i = 0; i < 8; ++i) {
        hand_bytes.push_back(static_cast<std::byte>((hand_header.size() >> (8 * i)) & 0xFF));
    }
    for (char c : hand_header)
        hand_bytes.push_back(static_cast<std::byte>(c));
    for (unsigned v : data_expected)
        hand_bytes.push_back(static_cast<std::byte>(v));
    write_bytes(hand, hand_bytes);
    SafetensorsFile file = load_safetensors(hand);
    CHECK(file.names() == std::vector<std::string>{"a", "b"});
    CHECK(file.to_tensor<float>("a").to_vector() == std::vector<float>{1.0f, -2.0f});
    CHECK(file.to_int64("b") == std::vector<std::int64_t>{7});
}

TEST_CASE("safetensors: truncated files give an error naming the file") {
    TempDir dir;
    Sample sample;
    const fs::path good = dir / "good.safetensors";
    save_safetensors(good, sample.entries(), sample.metadata);
    const std::vector<std::byte> bytes = read_bytes(good);
    std::uint64_t n = 0;
    for (int i = 0; i < 8; ++i)
        n |= static_cast<std::uint64_t>(bytes[i]) << (8 * i);

    struct Cut {
        std::size_t size;
        const char* expect;
    };
    const std::vector<Cut> cuts{
        {0, "shorter than the 8-byte header length"},
        {5, "shorter than the 8-byte header length"},
        {8, "larger than the 0 bytes that follow it"},
        {8 + n / 2, "larger than the"},
        {8 + n - 1, "larger than the"},
        {8 + n, "past the end of the 0-byte data buffer"},
        {8 + n + 5, "past the end"},
        {bytes.size() - 1, "past the end"},
    };
    const fs::path bad = dir / "cut.safetensors";
    for (const Cut& cut : cuts) {
        CAPTURE(cut.size);
        write_bytes(bad, std::vector<std::byte>(bytes.begin(), bytes.begin() + cut.size));
        const std::string message = error_of([&] { load_safetensors(bad); });
        CHECK(contains(message, bad.string()));
        CHECK(contains(message, cut.expect));
    }
    // Bytes appended after the data are not silently ignored either.
    std::vector<std::byte> longer = bytes;
    longer.push_back(std::byte{0});
    write_bytes(bad, longer);
    CHECK(contains(error_of([&] { load_safetensors(bad); }), "trailing bytes"));
}

TEST_CASE("safetensors: corrupted header length") {
    TempDir dir;
    Sample sample;
    const fs::path path = dir / "len.safetensors";
    save_safetensors(path, sample.entries(), sample.metadata);
    const std::vector<std::byte> bytes = read_bytes(path);

    auto with_length = [&](std::uint64_t n) {
        std::vector<std::byte> copy = bytes;
        for (int i = 0; i < 8; ++i)
            copy[i] = static_cast<std::byte>((n >> (8 * i)) & 0xFF);
        write_bytes(path, copy);
        return error_of([&] { load_safetensors(path); });
    };
    CHECK(contains(with_length(std::numeric_limits<std::uint64_t>::max()), "100000000-byte limit"));
    CHECK(contains(with_length(std::uint64_t{1} << 40), "100000000-byte limit"));
    CHECK(contains(with_length(100'000'001), "100000000-byte limit"));
    CHECK(contains(with_length(bytes.size()), "larger than the"));
    CHECK(contains(with_length(10), "not valid JSON"));
    CHECK(contains(with_length(0), "not a JSON object"));
    // Longer than the JSON: the data bytes (starting with a NUL here) become header text.
    CHECK(contains(with_length(bytes.size() - 8), "not valid JSON"));
    CHECK(contains(with_length(bytes.size() - 8), "NUL byte"));
}

TEST_CASE("safetensors: malformed headers each give the right error") {
    TempDir dir;
    const fs::path path = dir / "bad.safetensors";
    struct Case {
        const char* what;
        std::string header;
        std::size_t data_size;
        const char* expect;
    };
    const std::string ok_a = R"("a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]})";
    const std::vector<Case> cases{
        {"not json", R"({"a":{"dtype":"F32",)", 8, "not valid JSON"},
        {"garbage", "{\x01\x02}", 0, "not valid JSON"},
        {"invalid utf-8", "{\"\xff\":1}", 0, "not valid JSON"},
        {"array", "[1, 2]", 0, "not a JSON object"},
        {"trailing text", "{} x", 0, "not valid JSON"},
        {"text after a NUL", std::string("{}\0x", 4), 0, "NUL byte at header offset 2"},
        {"entry not object", R"({"a":[1]})", 0, "tensor 'a' is a JSON array, not an object"},
        {"no dtype", R"({"a":{"shape":[2],"data_offsets":[0,8]}})", 8,
         "tensor 'a' has no \"dtype\""},
        {"no shape", R"({"a":{"dtype":"F32","data_offsets":[0,8]}})", 8, "has no \"shape\""},
        {"no offsets", R"({"a":{"dtype":"F32","shape":[2]}})", 8, "has no \"data_offsets\""},
        {"unknown dtype", R"({"a":{"dtype":"BF16","shape":[4],"data_offsets":[0,8]}})", 8,
         "unsupported dtype \"BF16\""},
        {"dtype not string", R"({"a":{"dtype":4,"shape":[2],"data_offsets":[0,8]}})", 8,
         "dtype that is a JSON number"},
        {"negative shape", R"({"a":{"dtype":"F32","shape":[-2],"data_offsets":[0,8]}})", 8,
         "not a non-negative integer"},
        {"float shape", R"({"a":{"dtype":"F32","shape":[2.0],"data_offsets":[0,8]}})", 8,
         "not a non-negative integer"},
        {"shape overflow",
         R"({"a":{"dtype":"F64","shape":[4294967296,4294967296],"data_offsets":[0,8]}})", 8,
         "overflows"},
        {"offsets short", R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0]}})", 8,
         "not [begin, end]"},
        {"offsets reversed", R"({"a":{"dtype":"F32","shape":[0],"data_offsets":[8,0]}})", 8,
         "begin after end"},
        {"size mismatch", R"({"a":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}})", 8,
         "spanning 8 bytes, but shape [3] of F32 needs 12 bytes"},
        {"out of range", "{" + ok_a + "}", 4, "past the end of the 4-byte data buffer"},
        {"huge offsets",
         R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[18446744073709551600,18446744073709551608]}})",
         8, "past the end"},
        {"overlap", "{" + ok_a + R"(,"b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}})", 12,
         "tensor 'b' data_offsets [4, 12] overlap tensor 'a' [0, 8]"},
        {"gap", "{" + ok_a + R"(,"b":{"dtype":"F32","shape":[1],"data_offsets":[12,16]}})", 16,
         "gap of 4 bytes"},
        {"not from zero", R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})", 8,
         "gap of 4 bytes"},
        {"buffer longer", "{" + ok_a + "}", 12, "data buffer is 12 bytes but"},
        {"duplicate", "{" + ok_a + R"(,"a":{"dtype":"F32","shape":[2],"data_offsets":[8,16]}})", 16,
         "duplicate entry 'a'"},
        {"metadata value", R"({"__metadata__":{"k":1}})", 0,
         "__metadata__ value of 'k' is a JSON number, not a string"},
        {"metadata object", R"({"__metadata__":["k"]})", 0, "__metadata__ is a JSON array"},
        {"deep nesting",
         R"({"a":{"dtype":"F32","shape":)" + std::string(100, '[') + std::string(100, ']') + "}}",
         0, "nests deeper"},
    };
    for (const Case& c : cases) {
        CAPTURE(c.what);
        write_raw(path, c.header, c.data_size);
        const std::string message = error_of([&] { load_safetensors(path); });
        CHECK(contains(message, path.string()));
        CHECK_MESSAGE(contains(message, c.expect), message);
    }
    // Loading something that is not a file at all.
    CHECK(
        contains(error_of([&] { load_safetensors(dir / "missing.safetensors"); }), "no such file"));
    CHECK(contains(error_of([&] { load_safetensors(dir.path); }),
                   "is a directory, not a checkpoint file"));
}

TEST_CASE("safetensors: missing tensors, wrong shapes and wrong dtypes are reported") {
    TempDir dir;
    Sample sample;
    const fs::path path = dir / "ckpt.safetensors";
    save_safetensors(path, sample.entries(), sample.metadata);
    SafetensorsFile file = load_safetensors(path);

    const std::string missing = error_of([&] { file.to_tensor<float>("lstm.weight_hh_l0"); });
    CHECK(contains(missing, path.string()));
    CHECK(contains(missing, "no tensor 'lstm.weight_hh_l0'"));
    CHECK(contains(missing, "lstm.weight_ih_l0, lstm.bias_ih_l0, step"));
    CHECK(contains(error_of([&] { file.shape("nope"); }), "no tensor 'nope'"));
    CHECK(contains(error_of([&] { file.dtype("nope"); }), "no tensor 'nope'"));

    // Shape mismatch names the tensor, the expected and the found shape.
    Tensor<float> transposed(3, 2);
    const std::string shape_error = error_of([&] {
        file.read_into("lstm.weight_ih_l0", transposed, {3, 2});
    });
    CHECK(contains(shape_error, "tensor 'lstm.weight_ih_l0' has shape [2, 3] but [3, 2] was "
                                "expected"));
    // The bias is exported as {n}: reading it as a (1, n) matrix shape is a mismatch.
    Tensor<double> bias(1, 2);
    CHECK(contains(error_of([&] {
                       file.read_into("lstm.bias_ih_l0", bias, {1, 2});
                   }),
                   "has shape [2] but [1, 2] was expected"));
    // An expected shape that does not fit the target is a caller error.
    Tensor<double> small(1, 1);
    CHECK(contains(error_of([&] { file.read_into("lstm.bias_ih_l0", small, {2}); }),
                   "does not fit the target tensor (1, 1)"));

    // Wrong dtype: no silent conversion.
    Tensor<double> as_double(2, 3);
    const std::string dtype_error = error_of([&] {
        file.read_into("lstm.weight_ih_l0", as_double, {2, 3});
    });
    CHECK(contains(dtype_error, "stored as F32 but F64 was requested"));
    CHECK(contains(dtype_error, "DtypeConversion::float_precision"));
    CHECK(contains(error_of([&] { file.to_tensor<float>("lstm.bias_ih_l0"); }),
                   "stored as F64 but F32 was requested"));
    CHECK(contains(error_of([&] { file.to_tensor<float>("step"); }),
                   "stored as I64 but F32 was requested"));
    CHECK(contains(error_of([&] { file.to_int64("lstm.bias_ih_l0"); }),
                   "stored as F64 but I64 was requested"));
    CHECK(contains(
        error_of([&] { file.to_tensor<double>("step", DtypeConversion::float_precision); }),
        "stored as I64"));

    // F32 <-> F64 only when asked.
    file.read_into("lstm.weight_ih_l0", as_double, {2, 3}, DtypeConversion::float_precision);
    for (std::size_t i = 0; i < 6; ++i) {
        CHECK(as_double.data()[i] == static_cast<double>(sample.weight.value.data()[i]));
    }
    Tensor<float> narrowed =
        file.to_tensor<float>("lstm.bias_ih_l0", DtypeConversion::float_precision);
    CHECK(narrowed.shape() == Shape{1, 2});
    CHECK(narrowed(0, 0) == static_cast<float>(0.1));

    // Parameters read back by name and export shape.
    Parameter<float> weight("lstm.weight_ih_l0", Tensor<float>(2, 3));
    file.read_into(weight);
    CHECK(same_bits(weight.value.data(), sample.weight.value.data(), 6));
    Parameter<float> wrong("lstm.weight_ih_l0", Tensor<float>(1, 6), true);
    CHECK(contains(error_of([&] { file.read_into(wrong); }), "has shape [2, 3] but [6] was"));

    // Rank > 2 cannot become a matrix by itself.
    Tensor<float> cube(2, 4);
    save_safetensors(dir / "cube.safetensors", {make_entry("cube", cube, {2, 2, 2})});
    SafetensorsFile cube_file = load_safetensors(dir / "cube.safetensors");
    CHECK(contains(error_of([&] { cube_file.to_tensor<float>("cube"); }), "rank-3"));
    Tensor<float> target(4, 2);
    cube_file.read_into("cube", target, {2, 2, 2});
}

TEST_CASE("safetensors: the writer rejects bad entries before touching the disk") {
    TempDir dir;
    Tensor<float> t(2, 2, 1.0f);
    const fs::path path = dir / "w.safetensors";
    CHECK(contains(error_of([&] {
                       save_safetensors(path, {make_entry("x", t), make_entry("x", t)});
                   }),
                   "duplicate tensor name 'x'"));
    CHECK(contains(error_of([&] { save_safetensors(path, {make_entry("__metadata__", t)}); }),
                   "reserved"));
    CHECK(contains(error_of([&] { save_safetensors(path, {make_entry("", t)}); }), "empty name"));
    CHECK(contains(error_of([&] {
                       save_safetensors(path, {TensorEntry{"null", {3}, Dtype::F32, nullptr}});
                   }),
                   "null pointer"));
    CHECK(contains(error_of([&] { make_entry("x", t, {3}); }), "export shape [3] needs 3"));
    std::vector<std::int64_t> ints{1, 2};
    CHECK(contains(error_of([&] { make_entry("i", ints, {3}); }), "has 2 int64 values"));
    CHECK(contains(error_of([&] {
                       save_safetensors(path, {make_entry("x", t)}, {{"k", "\xff\xfe"}});
                   }),
                   "not valid UTF-8"));
    CHECK_FALSE(fs::exists(path));
    CHECK(dir.temp_files().empty());
}

TEST_CASE("safetensors: atomic writes never leave a partial file or a temp behind") {
    TempDir dir;
    Sample sample;

    SUBCASE("a directory that does not exist") {
        const fs::path path = dir / "no_such_dir" / "ckpt.safetensors";
        const std::string message =
            error_of([&] { save_safetensors(path, sample.entries(), sample.metadata); });
        CHECK(contains(message, path.string()));
        CHECK(contains(message, "cannot create temporary file"));
        CHECK_FALSE(fs::exists(dir / "no_such_dir"));
        CHECK(fs::is_empty(dir.path));
    }

    SUBCASE("the target is a directory: rename fails, the directory is untouched") {
        const fs::path path = dir / "ckpt.safetensors";
        fs::create_directory(path);
        write_bytes(path / "keep.txt", {std::byte{'k'}});
        const std::string message =
            error_of([&] { save_safetensors(path, sample.entries(), sample.metadata); });
        CHECK(contains(message, "cannot move the temporary file into place"));
        CHECK(fs::is_directory(path));
        CHECK(read_bytes(path / "keep.txt") == std::vector<std::byte>{std::byte{'k'}});
        CHECK(dir.temp_files().empty());
    }

    SUBCASE("a write that fails midway leaves the previous checkpoint unchanged") {
        const fs::path path = dir / "ckpt.safetensors";
        save_safetensors(path, sample.entries(), sample.metadata);
        const std::vector<std::byte> before = read_bytes(path);

        // A bigger checkpoint, written under a file-size limit smaller than it: write() fails
        // with EFBIG part way through (SIGXFSZ ignored so that the process survives).
        Tensor<double> big(64, 64, 0.5);
        rlimit old_limit{};
        REQUIRE(::getrlimit(RLIMIT_FSIZE, &old_limit) == 0);
        auto old_handler = std::signal(SIGXFSZ, SIG_IGN);
        rlimit limit = old_limit;
        limit.rlim_cur = 4096;
        REQUIRE(::setrlimit(RLIMIT_FSIZE, &limit) == 0);
        std::string message;
        try {
            save_safetensors(path, {make_entry("big", big)}, {});
        } catch (const Error& e) {
            message = e.what();
        }
        ::setrlimit(RLIMIT_FSIZE, &old_limit);
        std::signal(SIGXFSZ, old_handler);
        CHECK(contains(message, "write failed"));
        CHECK(read_bytes(path) == before);
        CHECK(load_safetensors(path).names() ==
              std::vector<std::string>{"lstm.weight_ih_l0", "lstm.bias_ih_l0", "step"});
        CHECK(dir.temp_files().empty());

        // Overwriting with a good checkpoint replaces the file completely.
        save_safetensors(path, {make_entry("big", big)}, {{"epoch", "4"}});
        SafetensorsFile after = load_safetensors(path);
        CHECK(after.names() == std::vector<std::string>{"big"});
        CHECK(after.metadata().at("epoch") == "4");
        CHECK(dir.temp_files().empty());
    }
}

TEST_CASE("safetensors: a header with many entries parses in linear time; the count is bounded") {
    TempDir dir;
    // 50000 empty tensors: the std::vector-backed ordered map made this quadratic (tens of
    // seconds).
    auto header_of = [](std::size_t count) {
        std::string header = "{";
        for (std::size_t i = 0; i < count; ++i) {
            header +=
                fmt::format("{}\"t{}\":{{\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[0,0]}}",
                            i == 0 ? "" : ",", i);
        }
        return header + "}";
    };
    const fs::path many = dir / "many.safetensors";
    write_raw(many, header_of(50000), 0);
    const auto start = std::chrono::steady_clock::now();
    const SafetensorsFile file = load_safetensors(many);
    const double seconds =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    CHECK(file.names().size() == 50000);
    CHECK(file.names()[0] == "t0"); // ties in the data order keep the header order
    CHECK(file.names()[49999] == "t49999");
    CHECK(seconds < 3.0);

    const fs::path too_many = dir / "too_many.safetensors";
    write_raw(too_many, header_of(65537), 0);
    const std::string message = error_of([&] { load_safetensors(too_many); });
    CHECK(contains(message, too_many.string()));
    CHECK(contains(message, "header has more than 65536 entries"));
}

TEST_CASE("safetensors: shapes whose element count overflows are refused, not wrapped") {
    TempDir dir;
    const fs::path path = dir / "overflow.safetensors";
    // 2^62 + 1 rows of 4 floats: 2^64 + 4 elements, 16 bytes after wrapping.
    write_raw(path,
              R"({"w":{"dtype":"F32","shape":[4611686018427387905,4],"data_offsets":[0,16]}})", 16);
    const std::string message = error_of([&] { load_safetensors(path); });
    CHECK(contains(message, path.string()));
    CHECK(contains(message, "tensor 'w' has shape [4611686018427387905, 4] whose size overflows"));
}

TEST_CASE("safetensors: saves clean up orphaned temporary files, follow links, keep the mode") {
    TempDir dir;
    Sample sample;
    const fs::path path = dir / "ckpt.safetensors";

    SUBCASE("a temp file of a process that no longer runs is removed; a live one is kept") {
        const pid_t child = ::fork();
        if (child == 0) {
            ::_exit(0);
        }
        REQUIRE(child > 0);
        int status = 0;
        REQUIRE(::waitpid(child, &status, 0) == child);
        const fs::path orphan = dir / fmt::format("ckpt.safetensors.tmp.{}.0", child);
        const fs::path live = dir / "ckpt.safetensors.tmp.1.0"; // pid 1 always runs
        const fs::path other = dir / fmt::format("other.safetensors.tmp.{}.0", child);
        for (const fs::path& file : {orphan, live, other}) {
            write_bytes(file, {std::byte{'x'}});
        }
        save_safetensors(path, sample.entries(), sample.metadata);
        CHECK_FALSE(fs::exists(orphan));
        CHECK(fs::exists(live));
        CHECK(fs::exists(other)); // another checkpoint's temp files are not ours to judge
        CHECK(load_safetensors(path).names().size() == 3);
    }

    SUBCASE("a symbolic link stays a link and its target is replaced") {
        const fs::path target = dir / "runs" / "real.safetensors";
        fs::create_directories(target.parent_path());
        write_bytes(target, {std::byte{'o'}, std::byte{'l'}, std::byte{'d'}});
        fs::create_symlink(fs::path("runs") / "real.safetensors", path);
        save_safetensors(path, sample.entries(), sample.metadata);
        CHECK(fs::is_symlink(fs::symlink_status(path)));
        CHECK(load_safetensors(target).metadata().at("epoch") == "3");
        CHECK(dir.temp_files().empty());
    }

    SUBCASE("the file mode of an existing checkpoint is kept") {
        save_safetensors(path, sample.entries(), sample.metadata);
        fs::permissions(path, fs::perms::owner_read | fs::perms::owner_write);
        save_safetensors(path, sample.entries(), {{"epoch", "5"}});
        CHECK(fs::status(path).permissions() == (fs::perms::owner_read | fs::perms::owner_write));
        CHECK(load_safetensors(path).metadata().at("epoch") == "5");
    }

    SUBCASE("a directory is named as one when loading") {
        fs::create_directory(path);
        const std::string message = error_of([&] { load_safetensors(path); });
        CHECK(contains(message, path.string()));
        CHECK(contains(message, "is a directory, not a checkpoint file"));
    }
}
