// dms/steer/calibration_data.hpp: the calibration passages and prompts of data/calibration.
//
// Probes, steering vectors and their evaluation start from two kinds of text: passages a model
// may recite (memorized.jsonl) and prompts it must compute (generalization.jsonl), each line one
// JSON object with id, kind, category, split (train / heldout) and text, plus source (memorized)
// or expression and answer (arithmetic and word problems). This loader reads them into plain
// structs so that the labelling and evaluation code (dms/steer/labels.hpp, evaluation.hpp) and the
// CLI need no JSON of their own. Needs dms::io (JSON).
//
// @code
//   auto items = dms::load_calibration_items("data/calibration");
//   auto train = dms::select_items(items, {.kind = "memorized", .split = "train"});
// @endcode
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "dms/config.hpp"
#include "dms/core/error.hpp"
#include "dms/formats/json.hpp"

DMS_NAMESPACE_BEGIN

//! One line of a calibration JSONL file. Optional fields are empty when the line lacks them.
struct calibration_item {
  std::string id;
  std::string kind;       //!< "memorized" or "generalization"
  std::string category;   //!< "sequence", "licence", "arithmetic", ...
  std::string split;      //!< "train" or "heldout"
  std::string text;
  std::string source;     //!< memorized passages: where the text comes from
  std::string expression; //!< arithmetic / word problems: the expression computed
  std::string answer;     //!< arithmetic / word problems: the exact answer, as text
};

//! The calibration files, in the order load_calibration_items reads them.
inline constexpr std::string_view calibration_files[] = {"memorized.jsonl", "generalization.jsonl"};

//! Parses one JSONL file. Errors (dms::error, invalid_format) name the file, the line and the
//! field: a line that is not a JSON object, a missing or non-string required field (id, kind,
//! category, split, text), a non-string optional field, a split other than train / heldout, an
//! id seen twice in the file. Blank lines are skipped. errc::io when the file cannot be read.
inline std::vector<calibration_item> read_calibration_jsonl(const std::filesystem::path &path) {
  std::ifstream in(path, std::ios::binary);
  require(static_cast<bool>(in), errc::io, [&] { return "cannot open " + path.string(); });
  std::vector<calibration_item> items;
  std::string line;
  std::uint64_t offset = 0;
  for (std::size_t line_no = 1; std::getline(in, line); ++line_no) {
    const std::uint64_t line_offset = offset;
    offset += line.size() + 1;
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (line.find_first_not_of(" \t") == std::string::npos) continue;
    const std::string where_file = path.string() + ": line " + std::to_string(line_no);
    const error_context where(path.string(), line_offset);
    const json_document doc = parse_json(line, where_file, 0);
    const ordered_json &obj = json_require_object(doc.value, "line " + std::to_string(line_no), where);
    const auto field = [&](std::string_view key) {
      return json_as_string(json_at(obj, key, where), "line " + std::to_string(line_no) + ": key '" +
                                                          std::string(key) + "'", where);
    };
    const auto optional_field = [&](std::string_view key) {
      const ordered_json *v = json_find(obj, key);
      return v ? json_as_string(*v, "line " + std::to_string(line_no) + ": key '" + std::string(key) + "'", where)
               : std::string();
    };
    calibration_item it;
    it.id = field("id");
    it.kind = field("kind");
    it.category = field("category");
    it.split = field("split");
    it.text = field("text");
    it.source = optional_field("source");
    it.expression = optional_field("expression");
    it.answer = optional_field("answer");
    require(it.split == "train" || it.split == "heldout", errc::invalid_format, [&] {
      return "line " + std::to_string(line_no) + ": split must be 'train' or 'heldout', got '" + it.split + "'";
    }, where);
    for (const auto &seen : items)
      require(seen.id != it.id, errc::invalid_format,
              [&] { return "line " + std::to_string(line_no) + ": id '" + it.id + "' appears twice"; }, where);
    items.push_back(std::move(it));
  }
  return items;
}

//! Reads memorized.jsonl then generalization.jsonl from `dir` (both must exist), in file order.
inline std::vector<calibration_item> load_calibration_items(const std::filesystem::path &dir) {
  std::vector<calibration_item> all;
  for (std::string_view name : calibration_files) {
    const auto path = dir / name;
    require(std::filesystem::is_regular_file(path), errc::io,
            [&] { return "calibration data: " + path.string() + " does not exist"; });
    auto part = read_calibration_jsonl(path);
    all.insert(all.end(), std::make_move_iterator(part.begin()), std::make_move_iterator(part.end()));
  }
  return all;
}

//! Which items select_items keeps: every non-empty field must match exactly.
struct item_filter {
  std::string kind = {};
  std::string split = {};
  std::string category = {};
};

//! The items matching `filter`, in their original order.
inline std::vector<calibration_item> select_items(std::span<const calibration_item> items,
                                                  const item_filter &filter) {
  std::vector<calibration_item> out;
  for (const auto &it : items)
    if ((filter.kind.empty() || it.kind == filter.kind) && (filter.split.empty() || it.split == filter.split) &&
        (filter.category.empty() || it.category == filter.category))
      out.push_back(it);
  return out;
}

DMS_NAMESPACE_END
