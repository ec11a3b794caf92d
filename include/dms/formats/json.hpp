// dms/formats/json.hpp: strict JSON parsing and typed field access for the formats dms reads.
//
// safetensors headers, model.safetensors.index.json, config.json and adapter_config.json are all
// JSON, and all come from files dms did not write. nlohmann::json alone would accept a header
// that names the same tensor twice (keeping the last one silently), report a syntax error as a
// bare character count, and raise its own exception types. The helpers here close those gaps:
//  * parse_json rejects duplicate keys in every object (the error names the key and its byte
//    offset), converts every nlohmann exception into a dms::error located in the file, and keeps
//    the byte offset of each top-level key so that later schema errors can point at the entry;
//  * the json_* accessors read one field with the type the format requires and fail with a
//    message naming the key, what was expected and what was found.
// Objects keep their order (nlohmann::ordered_json): PEFT's rank_pattern is matched first key
// first, as Python's dict order does.
#pragma once

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <iterator>
#include <limits>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_set>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "dms/config.hpp"
#include "dms/core/error.hpp"
#include "dms/formats/mapped_file.hpp"

DMS_NAMESPACE_BEGIN

using ordered_json = nlohmann::ordered_json;

//! A parsed JSON document plus where its top-level keys start in the file.
struct json_document {
  ordered_json value;
  //! File offset of the opening quote of each top-level key, in document order (empty unless
  //! the document is an object). Indices match `value.items()` since duplicates are rejected.
  std::vector<std::uint64_t> key_offsets;

  //! Offset of top-level key `key`, or the document's base offset when unknown.
  std::uint64_t offset_of(std::string_view key, std::uint64_t fallback) const {
    if (!value.is_object()) return fallback;
    std::size_t i = 0;
    for (auto it = value.begin(); it != value.end(); ++it, ++i)
      if (it.key() == key) return i < key_offsets.size() ? key_offsets[i] : fallback;
    return fallback;
  }
};

namespace detail {

//! Offset of the first byte of `s` that does not start a well-formed UTF-8 sequence.
constexpr std::size_t first_invalid_utf8(std::string_view s) noexcept {
  std::size_t i = 0;
  while (i < s.size()) {
    const auto c = static_cast<unsigned char>(s[i]);
    const std::size_t n = c < 0x80 ? 1 : (c & 0xE0) == 0xC0 ? 2 : (c & 0xF0) == 0xE0 ? 3 : 4;
    if (!is_valid_utf8(s.substr(i, n))) return i;
    i += n;
  }
  return s.size();
}

//! An input iterator over chars that publishes how far nlohmann's lexer has read, so the parse
//! callback knows where in the text the token it is handed ended.
struct tracking_iterator {
  using iterator_category = std::input_iterator_tag;
  using value_type = char;
  using difference_type = std::ptrdiff_t;
  using pointer = const char *;
  using reference = const char &;

  const char *p = nullptr;
  const char **read_up_to = nullptr;

  reference operator*() const noexcept { return *p; }
  tracking_iterator &operator++() noexcept {
    ++p;
    *read_up_to = p;
    return *this;
  }
  tracking_iterator operator++(int) noexcept {
    tracking_iterator old = *this;
    ++*this;
    return old;
  }
  friend bool operator==(const tracking_iterator &a, const tracking_iterator &b) noexcept {
    return a.p == b.p;
  }
};

//! Start of the string token that ends just before `end` (its closing quote is end[-1]).
inline std::size_t string_token_start(std::string_view text, std::size_t end) noexcept {
  if (end == 0 || end > text.size()) return 0;
  std::size_t i = end - 1; // closing quote
  while (i-- > 0) {
    if (text[i] != '"') continue;
    std::size_t backslashes = 0;
    for (std::size_t k = i; k-- > 0 && text[k] == '\\';)
      ++backslashes;
    if (backslashes % 2 == 0) return i;
  }
  return 0;
}

inline std::string json_type_name(const ordered_json &j) {
  if (j.is_number_integer() || j.is_number_unsigned()) return "integer";
  if (j.is_number_float()) return "number " + j.dump();
  return j.type_name();
}

} // namespace detail

//! Parses `text` (which starts at byte `base_offset` of `file`) as one JSON value. Throws
//! dms::error (invalid_format) on invalid UTF-8, a syntax error, a number out of range, or a
//! duplicate key in any object; the error carries the file and the byte offset.
inline json_document parse_json(std::string_view text, const std::string &file,
                                std::uint64_t base_offset = 0) {
  const std::size_t bad = detail::first_invalid_utf8(text);
  require(bad == text.size(), errc::invalid_format,
          [] { return std::string("JSON text is not valid UTF-8"); }, {file, base_offset + bad});

  json_document doc;
  const char *read_up_to = text.data();
  // One set of keys per open object; arrays push nothing. nlohmann calls the callback for every
  // event, in document order, so the stack mirrors the nesting.
  std::vector<std::unordered_set<std::string>> open_objects;
  auto callback = [&](int, ordered_json::parse_event_t event, ordered_json &parsed) {
    using ev = ordered_json::parse_event_t;
    if (event == ev::object_start) {
      open_objects.emplace_back();
    } else if (event == ev::object_end) {
      if (!open_objects.empty()) open_objects.pop_back();
    } else if (event == ev::key && !open_objects.empty()) {
      const std::size_t end = static_cast<std::size_t>(read_up_to - text.data());
      const std::size_t start = detail::string_token_start(text, end);
      auto key = parsed.get<std::string>();
      if (open_objects.size() == 1) doc.key_offsets.push_back(base_offset + start);
      if (!open_objects.back().insert(key).second)
        throw error(errc::invalid_format,
                    "duplicate key '" + key + "' in a JSON object (expected unique keys)",
                    {file, base_offset + start});
    }
    return true;
  };
  try {
    detail::tracking_iterator first{text.data(), &read_up_to};
    detail::tracking_iterator last{text.data() + text.size(), &read_up_to};
    doc.value = ordered_json::parse(first, last, callback);
  } catch (const nlohmann::json::parse_error &e) {
    const std::uint64_t at = e.byte > 0 ? static_cast<std::uint64_t>(e.byte - 1) : 0;
    // nlohmann's what() is "[json.exception.parse_error.101] parse error at line 1, column 9:
    // syntax error while parsing value - ..."; keep the part after the location.
    std::string what = e.what();
    if (auto colon = what.find(": "); colon != std::string::npos) what = what.substr(colon + 2);
    throw error(errc::invalid_format, "invalid JSON: " + what, {file, base_offset + at});
  } catch (const nlohmann::json::exception &e) {
    std::string what = e.what(); // "[json.exception.out_of_range.406] number overflow ..."
    if (auto bracket = what.find("] "); bracket != std::string::npos) what = what.substr(bracket + 2);
    throw error(errc::invalid_format, "invalid JSON: " + what,
                {file, base_offset + static_cast<std::uint64_t>(read_up_to - text.data())});
  }
  return doc;
}

//! Reads a whole (small) text file and parses it with parse_json.
inline json_document read_json_file(const std::filesystem::path &path) {
  mapped_file f(path.string());
  const auto bytes = f.bytes();
  return parse_json({reinterpret_cast<const char *>(bytes.data()), bytes.size()}, f.path());
}

//! JSON string literal for `s` (quotes and escapes as serde_json and nlohmann write them).
inline std::string json_quote(std::string_view s) { return ordered_json(std::string(s)).dump(); }

// --- typed field access -------------------------------------------------------------------------
// `what` names the field in messages: "key 'hidden_size'", "weight_map['lm_head.weight']".

[[noreturn]] inline void json_type_error(std::string_view what, std::string_view expected,
                                         const ordered_json &got, const error_context &where) {
  throw error(errc::invalid_format,
              std::string(what) + ": expected " + std::string(expected) + ", got " +
                  detail::json_type_name(got),
              where);
}

inline const ordered_json &json_require_object(const ordered_json &j, std::string_view what,
                                               const error_context &where) {
  if (!j.is_object()) json_type_error(what, "an object", j, where);
  return j;
}

//! The member `key` of object `obj`, or nullptr when absent (a JSON null counts as present).
inline const ordered_json *json_find(const ordered_json &obj, std::string_view key) {
  auto it = obj.find(std::string(key));
  return it == obj.end() ? nullptr : &*it;
}

//! The member `key`, which must exist.
inline const ordered_json &json_at(const ordered_json &obj, std::string_view key,
                                   const error_context &where) {
  const ordered_json *v = json_find(obj, key);
  require(
      v != nullptr, errc::invalid_format, [&] { return "missing key '" + std::string(key) + "'"; }, where);
  return *v;
}

inline std::string json_as_string(const ordered_json &j, std::string_view what, const error_context &where) {
  if (!j.is_string()) json_type_error(what, "a string", j, where);
  return j.get<std::string>();
}

inline bool json_as_bool(const ordered_json &j, std::string_view what, const error_context &where) {
  if (!j.is_boolean()) json_type_error(what, "true or false", j, where);
  return j.get<bool>();
}

//! An integer in [lo, hi]. Floats are refused even when integral (2.0): the formats write
//! integers, and a float there means the file was produced by something else.
inline std::int64_t json_as_int(const ordered_json &j, std::string_view what, const error_context &where,
                                std::int64_t lo = std::numeric_limits<std::int64_t>::min(),
                                std::int64_t hi = std::numeric_limits<std::int64_t>::max()) {
  std::string range = "an integer in [" + std::to_string(lo) + ", " + std::to_string(hi) + "]";
  if (j.is_number_unsigned()) {
    const auto u = j.get<std::uint64_t>();
    if (u > static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max()))
      json_type_error(what, range, j, where);
  } else if (!j.is_number_integer()) {
    json_type_error(what, range, j, where);
  }
  const auto v = j.get<std::int64_t>();
  if (v < lo || v > hi)
    throw error(errc::invalid_format,
                std::string(what) + ": expected " + range + ", got " + std::to_string(v), where);
  return v;
}

//! A non-negative integer that fits in 64 bits unsigned (offsets).
inline std::uint64_t json_as_uint(const ordered_json &j, std::string_view what, const error_context &where) {
  if (j.is_number_unsigned()) return j.get<std::uint64_t>();
  if (j.is_number_integer() && j.get<std::int64_t>() >= 0)
    return static_cast<std::uint64_t>(j.get<std::int64_t>());
  json_type_error(what, "a non-negative integer", j, where);
}

//! Any finite number (integers included).
inline double json_as_number(const ordered_json &j, std::string_view what, const error_context &where) {
  if (!j.is_number()) json_type_error(what, "a number", j, where);
  const double v = j.get<double>();
  if (!std::isfinite(v)) json_type_error(what, "a finite number", j, where);
  return v;
}

DMS_NAMESPACE_END
