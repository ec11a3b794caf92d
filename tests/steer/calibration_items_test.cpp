// dms/steer/calibration_data.hpp: the committed calibration files load with every field, and
// malformed lines fail with the file, the line and the field.
#include <catch2/catch.hpp>

#include <filesystem>
#include <fstream>
#include <string>

#include "dms/steer/calibration_data.hpp"
#include "support/scratch_dir.hpp"

namespace fs = std::filesystem;

namespace {
const fs::path data_dir = fs::path(__FILE__).parent_path().parent_path().parent_path() / "data/calibration";
}

TEST_CASE("load_calibration_items: the committed files", "[calibration]") {
  const auto items = dms::load_calibration_items(data_dir);
  const auto memorized = dms::select_items(items, {.kind = "memorized"});
  const auto generalization = dms::select_items(items, {.kind = "generalization"});
  CHECK(memorized.size() == 208); // data/calibration/README.md
  CHECK(generalization.size() == 234);
  CHECK(memorized.size() + generalization.size() == items.size());
  CHECK(items.front().kind == "memorized"); // memorized.jsonl is read first

  const auto train = dms::select_items(items, {.kind = "memorized", .split = "train"});
  const auto heldout = dms::select_items(items, {.kind = "memorized", .split = "heldout"});
  CHECK(train.size() + heldout.size() == memorized.size());
  CHECK(heldout.size() > 0);
  for (const auto &it : memorized) {
    CHECK(!it.text.empty());
    CHECK(!it.source.empty());
    CHECK(it.answer.empty());
  }
  const auto arithmetic = dms::select_items(items, {.category = "arithmetic"});
  REQUIRE_FALSE(arithmetic.empty());
  for (const auto &it : arithmetic) {
    CHECK(!it.expression.empty());
    CHECK(!it.answer.empty());
    CHECK(it.text.find(it.expression) != std::string::npos);
  }
}

TEST_CASE("read_calibration_jsonl: errors name the file, the line and the field", "[calibration]") {
  const fs::path dir = dms::test::scratch_dir("dms-calibration", "items");
  const auto write = [&](const std::string &text) {
    std::ofstream(dir / "x.jsonl", std::ios::binary) << text;
    return dir / "x.jsonl";
  };
  const std::string good = R"({"id": "a", "kind": "memorized", "category": "c", "split": "train", "text": "t"})";

  auto items = dms::read_calibration_jsonl(write(good + "\n\n" +
                                                 R"({"id": "b", "kind": "generalization", "category": "arithmetic", )"
                                                 R"("split": "heldout", "text": "1+1", "expression": "1 + 1", "answer": "2"})" +
                                                 "\r\n"));
  REQUIRE(items.size() == 2);
  CHECK(items[1].answer == "2");
  CHECK(items[1].split == "heldout");

  CHECK_THROWS_WITH(dms::read_calibration_jsonl(write(good + "\n" + R"({"id": "b", "kind": "m", "split": "train", "text": "t"})")),
                    Catch::Contains("x.jsonl") && Catch::Contains("missing key 'category'"));
  CHECK_THROWS_WITH(dms::read_calibration_jsonl(write(R"({"id": 3, "kind": "m", "category": "c", "split": "train", "text": "t"})")),
                    Catch::Contains("line 1: key 'id': expected a string"));
  CHECK_THROWS_WITH(dms::read_calibration_jsonl(write(R"({"id": "a", "kind": "m", "category": "c", "split": "test", "text": "t"})")),
                    Catch::Contains("split must be 'train' or 'heldout', got 'test'"));
  CHECK_THROWS_WITH(dms::read_calibration_jsonl(write(good + "\n" + good)), Catch::Contains("line 2: id 'a' appears twice"));
  CHECK_THROWS_WITH(dms::read_calibration_jsonl(write(good + "\n{not json")), Catch::Contains("line 2"));
  CHECK_THROWS_WITH(dms::read_calibration_jsonl(write("[1, 2]")), Catch::Contains("line 1: expected an object"));
  CHECK_THROWS_WITH(dms::read_calibration_jsonl(dir / "missing.jsonl"), Catch::Contains("cannot open"));
  CHECK_THROWS_WITH(dms::load_calibration_items(dir), Catch::Contains("memorized.jsonl does not exist"));
  fs::remove_all(dir);
}
