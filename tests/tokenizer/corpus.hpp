// Test support: the texts of tests/data/tokenizer_corpus.txt: each sample (samples are separated
// by a line "%%%%"), each non-empty line, and the whole file. tokenizer_peer_test.py builds the
// same list in the same order.
#pragma once

#include <filesystem>
#include <string>
#include <vector>

#include "support/external.hpp"

namespace dms::test {

inline std::filesystem::path corpus_path() {
  return std::filesystem::path(__FILE__).parent_path().parent_path() / "data/tokenizer_corpus.txt";
}

inline std::vector<std::string> corpus_texts() {
  const std::string file = slurp(corpus_path());
  REQUIRE(!file.empty());
  REQUIRE(file.back() == '\n');
  const std::string body = file.substr(0, file.size() - 1);
  std::vector<std::string> texts;
  const std::string sep = "\n%%%%\n";
  for (std::size_t begin = 0;;) {
    const std::size_t end = body.find(sep, begin);
    texts.push_back(body.substr(begin, end == std::string::npos ? std::string::npos : end - begin));
    if (end == std::string::npos) break;
    begin = end + sep.size();
  }
  for (std::size_t begin = 0; begin <= file.size();) {
    std::size_t end = file.find('\n', begin);
    if (end == std::string::npos) end = file.size();
    const std::string line = file.substr(begin, end - begin);
    if (!line.empty() && line != "%%%%") texts.push_back(line);
    begin = end + 1;
  }
  texts.push_back(file);
  return texts;
}

} // namespace dms::test
