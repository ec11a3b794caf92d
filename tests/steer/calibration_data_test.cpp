// data/calibration: the generator is deterministic and reproduces the committed files; counts,
// splits and arithmetic answers are checked independently of the script.
#include <catch2/catch.hpp>

#include <cctype>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "support/external.hpp"
#include "support/scratch_dir.hpp"

namespace fs = std::filesystem;

namespace {

const fs::path repo = fs::path(__FILE__).parent_path().parent_path().parent_path();

std::vector<nlohmann::json> read_jsonl(const fs::path &p) {
  std::ifstream in(p);
  std::vector<nlohmann::json> out;
  std::string line;
  while (std::getline(in, line)) out.push_back(nlohmann::json::parse(line));
  return out;
}

//! Integer + - * / (exact) with parentheses, written independently of the script's evaluator.
struct expression_parser {
  std::string s;
  std::size_t i = 0;
  void spaces() {
    while (i < s.size() && s[i] == ' ') ++i;
  }
  std::int64_t number() {
    spaces();
    if (s[i] == '(') {
      ++i;
      const std::int64_t v = sum();
      spaces();
      REQUIRE(s[i] == ')');
      ++i;
      return v;
    }
    REQUIRE(std::isdigit(static_cast<unsigned char>(s[i])));
    std::int64_t v = 0;
    while (i < s.size() && std::isdigit(static_cast<unsigned char>(s[i]))) v = v * 10 + (s[i++] - '0');
    return v;
  }
  std::int64_t product() {
    std::int64_t v = number();
    for (spaces(); i < s.size() && (s[i] == '*' || s[i] == '/'); spaces()) {
      const char op = s[i++];
      const std::int64_t r = number();
      if (op == '*') v *= r;
      else {
        REQUIRE(v % r == 0); // the script promises exact division
        v /= r;
      }
    }
    return v;
  }
  std::int64_t sum() {
    std::int64_t v = product();
    for (spaces(); i < s.size() && (s[i] == '+' || s[i] == '-'); spaces()) {
      const char op = s[i++];
      const std::int64_t r = product();
      v = op == '+' ? v + r : v - r;
    }
    return v;
  }
  std::int64_t parse() {
    const std::int64_t v = sum();
    spaces();
    REQUIRE(i == s.size());
    return v;
  }
};

} // namespace

TEST_CASE("calibration data: the script is deterministic and the committed files are its output", "[steer][data]") {
  const auto dir = dms::test::scratch_dir("dms-steer", "calibration");
  const fs::path script = repo / "scripts/make-calibration-data";
  const auto a = dms::test::run("python3 " + dms::test::quote(script.string()) + " --out " + dms::test::quote((dir / "a").string()), dir);
  INFO(a.err);
  if (a.rc == 127) dms::test::skip("python3 is not installed");
  REQUIRE(a.rc == 0);
  const auto b = dms::test::run("python3 " + dms::test::quote(script.string()) + " --out " + dms::test::quote((dir / "b").string()), dir);
  REQUIRE(b.rc == 0);
  for (const char *name : {"memorized.jsonl", "generalization.jsonl", "neutral.txt", "manifest.json"}) {
    INFO(name);
    const std::string first = dms::test::slurp(dir / "a" / name);
    CHECK(!first.empty());
    CHECK(first == dms::test::slurp(dir / "b" / name));
    CHECK(first == dms::test::slurp(repo / "data/calibration" / name)); // committed == generated
  }
  fs::remove_all(dir);
}

TEST_CASE("calibration data: counts, unique ids, disjoint splits, correct answers", "[steer][data]") {
  const auto mem = read_jsonl(repo / "data/calibration/memorized.jsonl");
  const auto gen = read_jsonl(repo / "data/calibration/generalization.jsonl");
  CHECK(mem.size() >= 200);
  CHECK(gen.size() >= 200);
  std::set<std::string> ids, train, heldout;
  std::size_t arithmetic = 0, checked = 0;
  for (const auto *group : {&mem, &gen}) {
    std::size_t held = 0;
    for (const auto &it : *group) {
      const std::string id = it.at("id");
      CHECK(ids.insert(id).second);
      const std::string split = it.at("split");
      REQUIRE((split == "train" || split == "heldout"));
      (split == "train" ? train : heldout).insert(id);
      held += split == "heldout";
      CHECK(!it.at("text").get<std::string>().empty());
      CHECK(it.at("kind") == (group == &mem ? "memorized" : "generalization"));
      if (group == &mem) CHECK(it.contains("source"));
      if (it.contains("expression")) {
        INFO(id << ": " << it.at("expression"));
        const std::int64_t v = expression_parser{it.at("expression").get<std::string>()}.parse();
        CHECK(std::to_string(v) == it.at("answer").get<std::string>());
        // the question shows the expression for arithmetic
        if (it.at("category") == "arithmetic") {
          ++arithmetic;
          CHECK(it.at("text").get<std::string>().find(it.at("expression").get<std::string>()) != std::string::npos);
        }
        ++checked;
      }
    }
    const double frac = double(held) / double(group->size());
    CHECK(frac > 0.2);
    CHECK(frac < 0.3);
  }
  CHECK(arithmetic >= 50);
  CHECK(checked >= 100);
  for (const auto &id : heldout) CHECK(train.count(id) == 0);
  CHECK(train.size() + heldout.size() == mem.size() + gen.size());
  // The generated sequences are what they claim (spot checks against independent arithmetic).
  for (const auto &it : mem) {
    if (it.at("id") == "mem-fibonacci") CHECK(it.at("text").get<std::string>().rfind("0, 1, 1, 2, 3, 5, 8, 13, 21", 0) == 0);
    if (it.at("id") == "mem-pi-digits") CHECK(it.at("text").get<std::string>().rfind("3.14159265358979323846264338327950288419716939937510", 0) == 0);
    if (it.at("id") == "mem-primes") CHECK(it.at("text").get<std::string>().find(", 97, 101, 103,") != std::string::npos);
  }
  std::ifstream neutral(repo / "data/calibration/neutral.txt");
  std::stringstream ss;
  ss << neutral.rdbuf();
  CHECK(ss.str().size() > 1000);
}
