// The inspector's exports: JSON with exact values (schema "cellgrad.inspect.v1") and the
// self-contained HTML page (quantised, deflated and base64-encoded recordings inline).
#include <algorithm>
#include <cmath>

#include <nlohmann/json.hpp>
#include <zlib.h>

#include "inspect.hpp"

namespace char_rnn {

extern const char* const inspect_page_template; // inspect_page.html, compiled in

using cellgrad::Error;
using json = nlohmann::json;

namespace {

/// How a character is shown: printable ASCII as itself, the rest by name.
std::string shown(std::uint8_t byte) {
    switch (byte) {
    case '\n':
        return "\\n";
    case '\t':
        return "\\t";
    case '\r':
        return "\\r";
    case ' ':
        return " ";
    default:
        break;
    }
    if (byte >= 33 && byte < 127) {
        return std::string(1, char(byte));
    }
    return fmt::format("\\x{:02x}", byte);
}

/// Rounded for JSON: `digits` significant decimals after the point.
double rounded(double value, int digits) {
    const double scale = std::pow(10.0, digits);
    return std::round(value * scale) / scale;
}

json history_of(const Inspection& inspection) {
    if (inspection.history_json.empty()) {
        return nullptr;
    }
    json history = json::parse(inspection.history_json, nullptr, false);
    return history.is_discarded() ? json(nullptr) : history;
}

/// Everything but the per-unit recordings: text, guesses, analyses, history.
json summary(const Inspection& inspection) {
    json vocabulary = json::array();
    for (const std::uint8_t byte : inspection.vocabulary) {
        vocabulary.push_back(shown(byte));
    }
    json saturations = json::array();
    for (const Saturation& s : saturation(inspection)) {
        json left = json::array(), right = json::array();
        for (std::size_t j = 0; j < s.left.size(); ++j) {
            left.push_back(rounded(s.left[j], 4));
            right.push_back(rounded(s.right[j], 4));
        }
        saturations.push_back(
            {{"gate", s.gate}, {"layer", s.layer}, {"left", left}, {"right", right}});
    }
    json interesting = json::array();
    for (const Correlation& c : interesting_units(inspection)) {
        interesting.push_back({{"feature", c.feature},
                               {"layer", c.layer},
                               {"series", c.series},
                               {"unit", c.unit},
                               {"r", rounded(c.r, 4)}});
    }
    json features = json::array();
    for (const TextFeature& f : text_features(inspection.text)) {
        features.push_back({{"name", f.name}, {"description", f.description}});
    }
    json top = json::array(), top_prob = json::array(), next = json::array();
    for (std::size_t i = 0; i < inspection.top_index.size(); ++i) {
        top.push_back(inspection.top_index[i]);
        top_prob.push_back(rounded(inspection.top_prob[i], 4));
    }
    for (const float p : inspection.next_prob) {
        next.push_back(rounded(p, 4));
    }
    return {{"cell", inspection.cell},
            {"hidden", inspection.hidden},
            {"num_layers", inspection.num_layers},
            {"source", inspection.source},
            {"length", inspection.length()},
            {"vocabulary", vocabulary},
            {"vocabulary_bytes", inspection.vocabulary},
            {"tokens", inspection.tokens},
            {"top_k", Inspection::top_k},
            {"top_index", top},
            {"top_prob", top_prob},
            {"next_prob", next},
            {"saturation", saturations},
            {"interesting", interesting},
            {"features", features},
            {"history", history_of(inspection)}};
}

std::string base64(const std::vector<unsigned char>& bytes) {
    static constexpr char digits[] =
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    std::string out;
    out.reserve((bytes.size() + 2) / 3 * 4);
    for (std::size_t i = 0; i < bytes.size(); i += 3) {
        const std::uint32_t a = bytes[i];
        const std::uint32_t b = i + 1 < bytes.size() ? bytes[i + 1] : 0;
        const std::uint32_t c = i + 2 < bytes.size() ? bytes[i + 2] : 0;
        const std::uint32_t triple = (a << 16) | (b << 8) | c;
        out += digits[(triple >> 18) & 63];
        out += digits[(triple >> 12) & 63];
        out += i + 1 < bytes.size() ? digits[(triple >> 6) & 63] : '=';
        out += i + 2 < bytes.size() ? digits[triple & 63] : '=';
    }
    return out;
}

std::vector<unsigned char> deflate(const std::vector<unsigned char>& raw, int level) {
    uLongf size = compressBound(uLong(raw.size()));
    std::vector<unsigned char> out(size);
    if (compress2(out.data(), &size, raw.data(), uLong(raw.size()), level) != Z_OK) {
        throw Error("inspect: zlib could not compress the page's data");
    }
    out.resize(size);
    return out;
}

/// The range a series is quantised over: [0, 1] for gates, [-1, 1] for tanh-bounded values and
/// tanh(c), else its own minimum and maximum.
struct Range {
    double lo = 0, hi = 1;
    bool tanh = false;
};

Range range_of(const Series& series) {
    Range range;
    range.tanh = series.name == "c";
    if (range.tanh) {
        range.lo = -1;
        return range;
    }
    const auto [low, high] = std::minmax_element(series.values.begin(), series.values.end());
    if (*low >= 0 && *high <= 1) {
        return range;
    }
    if (*low >= -1 && *high <= 1) {
        range.lo = -1;
        return range;
    }
    range.lo = *low;
    range.hi = *high > *low ? double(*high) : *low + 1.0;
    return range;
}

std::string replace_all(std::string text, const std::string& from, const std::string& to) {
    for (std::size_t at = text.find(from); at != std::string::npos;
         at = text.find(from, at + to.size())) {
        text.replace(at, from.size(), to);
    }
    return text;
}

/// JSON safe inside a <script> element.
std::string script_json(const json& value) {
    return replace_all(value.dump(-1, ' ', false, json::error_handler_t::replace), "</", "<\\/");
}

} // namespace

std::string inspection_json(const Inspection& inspection) {
    json out = summary(inspection);
    out["format"] = "cellgrad.inspect.v1";
    out["text"] = inspection.text;
    json layers = json::array();
    for (const LayerRecording& layer : inspection.layers) {
        json series = json::object();
        for (const Series& s : layer.series) {
            json rows = json::array();
            for (std::size_t t = 0; t < inspection.length(); ++t) {
                rows.push_back(std::vector<float>(
                    s.values.begin() + std::ptrdiff_t(t * inspection.hidden),
                    s.values.begin() + std::ptrdiff_t((t + 1) * inspection.hidden)));
            }
            series[s.name] = rows;
        }
        json names = json::array();
        for (const Series& s : layer.series) {
            names.push_back(s.name);
        }
        layers.push_back(
            {{"name", layer.name}, {"layer", layer.layer}, {"order", names}, {"series", series}});
    }
    out["layers"] = layers;
    return out.dump(-1, ' ', false, json::error_handler_t::replace);
}

std::string make_page(const Inspection& inspection, const PageOptions& options, PageInfo* info) {
    const std::size_t N = inspection.length();
    const std::size_t H = inspection.hidden;
    json meta = summary(inspection);
    meta["title"] = options.title;
    json layers = json::array();
    std::vector<const Series*> order;
    std::vector<Range> ranges;
    for (const LayerRecording& layer : inspection.layers) {
        json series = json::array();
        for (const Series& s : layer.series) {
            const Range range = range_of(s);
            series.push_back({{"name", s.name},
                              {"lo", range.lo},
                              {"hi", range.hi},
                              {"transform", range.tanh ? "tanh" : "none"}});
            order.push_back(&s);
            ranges.push_back(range);
        }
        layers.push_back({{"name", layer.name}, {"layer", layer.layer}, {"series", series}});
    }
    meta["layers"] = layers;
    // Unit-major: H rows of N characters per series, so that a unit's runs of similar values (a
    // saturated gate, a slowly moving LTM) deflate well.
    auto quantised = [&](std::size_t s, int bits) {
        const int levels = (1 << bits) - 1;
        const Range& range = ranges[s];
        std::vector<unsigned char> raw;
        raw.reserve(N * H);
        for (std::size_t j = 0; j < H; ++j) {
            for (std::size_t t = 0; t < N; ++t) {
                double v = order[s]->values[t * H + j];
                v = range.tanh ? std::tanh(v) : v;
                const double x = std::clamp((v - range.lo) / (range.hi - range.lo), 0.0, 1.0);
                raw.push_back(static_cast<unsigned char>(std::lround(x * levels)));
            }
        }
        return raw;
    };
    // Each series starts at 8 bits; while the page would exceed the budget, the series that
    // costs the most bytes loses a bit (down to 4), so the series that deflate well (a quiet
    // LTM, saturated gates) keep their precision.
    std::vector<int> bits(order.size(), 8);
    std::vector<std::size_t> cost(order.size());
    for (std::size_t s = 0; s < order.size(); ++s) {
        cost[s] = deflate(quantised(s, bits[s]), 6).size();
    }
    const std::string page_template = inspect_page_template;
    std::string page;
    while (true) {
        std::size_t k = 0;
        for (std::size_t l = 0; l < inspection.layers.size(); ++l) {
            for (json& series : meta["layers"][l]["series"]) {
                series["bits"] = bits[k++];
            }
        }
        meta["bits"] = *std::min_element(bits.begin(), bits.end());
        std::size_t total = 0;
        for (const std::size_t c : cost) {
            total += c;
        }
        const std::size_t estimate =
            page_template.size() + script_json(meta).size() + total * 4 / 3;
        std::size_t worst = order.size();
        for (std::size_t s = 0; s < order.size(); ++s) {
            if (bits[s] > 4 && (worst == order.size() || cost[s] > cost[worst])) {
                worst = s;
            }
        }
        if (estimate > options.max_bytes && worst < order.size()) {
            cost[worst] = deflate(quantised(worst, --bits[worst]), 6).size();
            continue;
        }
        std::vector<unsigned char> raw;
        raw.reserve(order.size() * N * H);
        for (std::size_t s = 0; s < order.size(); ++s) {
            const std::vector<unsigned char> part = quantised(s, bits[s]);
            raw.insert(raw.end(), part.begin(), part.end());
        }
        // The data first: base64 has no '@', while the text in the metadata may hold anything.
        page = replace_all(page_template, "@DATA@", base64(deflate(raw, 9)));
        page = replace_all(page, "/*@META@*/", script_json(meta));
        if (page.size() <= options.max_bytes || worst == order.size()) {
            break;
        }
        // The whole deflated a little worse than its parts: one more bit off the costliest.
        cost[worst] = deflate(quantised(worst, --bits[worst]), 6).size();
    }
    if (info != nullptr) {
        info->bytes = page.size();
        info->bits = int(meta["bits"]);
        info->max_bits = *std::max_element(bits.begin(), bits.end());
    }
    return page;
}

} // namespace char_rnn
