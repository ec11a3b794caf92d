// The real model's tokenizer (SmolLM2-135M-Instruct: byte-level BPE, pre "smollm", ChatML), and
// parity with llama.cpp through llama-cpp-python ([peer]).
#include <catch2/catch.hpp>

#include <cstdio>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include <dms/formats/gguf_writer.hpp>
#include <dms/tokenizer/chat_template.hpp>
#include <dms/tokenizer/tokenizer.hpp>

#include "corpus.hpp"
#include "support/external.hpp"
#include "support/scratch_dir.hpp"
#include "synthetic_vocab.hpp"

using dms::token_id;
using ids = std::vector<token_id>;

TEST_CASE("SmolLM2's tokenizer loads and encodes known text", "[.model][tokenizer]") {
  const auto dir = dms::test::scratch_dir("dms-tok", "model");
  const auto tok = dms::tokenizer::from_file(dms::test::model_path(dir));
  CHECK(tok.n_vocab() == 49152);
  CHECK(tok.kind() == dms::vocab_kind::bpe);
  CHECK(tok.pre_tokenizer_name() == "smollm");
  CHECK(tok.bos() == 1);
  CHECK(tok.eos() == 2);
  CHECK_FALSE(tok.add_bos());
  CHECK(tok.is_eog(2));
  CHECK(tok.is_eog(0));
  CHECK_FALSE(tok.is_eog(1));
  // Known answers (llama.cpp gives the same ids).
  CHECK(tok.encode("Hello world") == ids{19556, 905});
  CHECK(tok.encode("<|im_start|>user\nHi 12345<|im_end|>", true, true) == ids{1, 4093, 198, 26843, 216, 33, 34, 35, 36, 37, 2});
  CHECK(tok.token_text(1) == "<|im_start|>");
  CHECK(tok.piece(905) == " world");
  // The model's chat template is ChatML.
  REQUIRE_FALSE(tok.chat_template().empty());
  const std::vector<dms::chat_message> chat{{"user", "Hi"}};
  CHECK(dms::apply_chat_template(tok.chat_template(), chat, true) == "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n");
}

TEST_CASE("SmolLM2: decode(encode(text)) == text over the corpus", "[.model][tokenizer]") {
  const auto dir = dms::test::scratch_dir("dms-tok", "roundtrip");
  const auto tok = dms::tokenizer::from_file(dms::test::model_path(dir));
  for (const std::string &text : dms::test::corpus_texts()) {
    INFO(text);
    const auto plain = tok.encode(text, true, false);
    CHECK(tok.decode(plain) == text);
    const auto special = tok.encode(text, true, true);
    CHECK(tok.decode(special, true) == text);
    dms::incremental_decoder dec(tok, true);
    std::string streamed;
    for (token_id id : special) streamed += dec.push(id);
    CHECK(streamed + dec.flush() == text);
  }
}

namespace {
std::string to_hex(std::string_view s) {
  static constexpr char hex[] = "0123456789abcdef";
  std::string h;
  for (unsigned char c : s) {
    h.push_back(hex[c >> 4]);
    h.push_back(hex[c & 15]);
  }
  return h;
}

// Runs tokenizer_peer_test.py on `texts` and compares every line with dms.
void check_parity(const dms::tokenizer &tok, const std::string &model, const std::vector<std::string> &texts,
                  const std::filesystem::path &dir, const std::string &python) {
  {
    std::ofstream f(dir / "texts.hex");
    for (const auto &t : texts) f << to_hex(t) << "\n";
  }
  const auto script = std::filesystem::path(__FILE__).parent_path() / "tokenizer_peer_test.py";
  const auto r = dms::test::run(dms::test::quote(python) + " " + dms::test::quote(script.string()) + " " +
                                    dms::test::quote(model) + " " + dms::test::quote((dir / "texts.hex").string()),
                                dir);
  INFO("python stderr:\n" << r.err);
  REQUIRE(r.rc == 0);
  std::istringstream in(r.out);
  std::string line;
  std::size_t n_checked = 0;
  while (std::getline(in, line)) {
    std::istringstream ls(line);
    std::string kind;
    ls >> kind;
    if (kind == "T") {
      std::size_t i;
      int add_bos, special;
      ls >> i >> add_bos >> special;
      ids expected;
      for (token_id id; ls >> id;) expected.push_back(id);
      REQUIRE(i < texts.size());
      INFO("text " << i << " add_bos=" << add_bos << " special=" << special << ": " << texts[i]);
      // llama-cpp-python's add_bos is llama_tokenize's add_special.
      CHECK(tok.encode(texts[i], add_bos != 0, special != 0) == expected);
      ++n_checked;
    } else if (kind == "D") {
      std::size_t i;
      int special;
      std::string hex;
      ls >> i >> special >> hex;
      std::string expected;
      for (std::size_t k = 0; k + 1 < hex.size(); k += 2) expected.push_back(static_cast<char>(std::stoi(hex.substr(k, 2), nullptr, 16)));
      INFO("decode of text " << i << " special=" << special << ": " << texts[i]);
      CHECK(tok.decode(tok.encode(texts[i], false, true), special != 0) == expected);
      ++n_checked;
    } else if (kind == "E") {
      token_id eos, eot, bos;
      ls >> eos >> eot >> bos;
      CHECK(tok.eos() == eos);
      CHECK(tok.bos() == bos);
      ids eog;
      for (token_id id; ls >> id;) eog.push_back(id);
      for (token_id id = 0; id < std::min<token_id>(1024, static_cast<token_id>(tok.n_vocab())); ++id)
        CHECK(tok.is_eog(id) == (std::find(eog.begin(), eog.end(), id) != eog.end()));
      // llama.cpp's eot is the first match in its hash map's order; dms prefers the list's order.
      if (eot >= 0) CHECK(tok.eot().has_value());
    }
  }
  CHECK(n_checked == texts.size() * 6);
}
} // namespace

TEST_CASE("SmolLM2: ids and decoded text identical to llama.cpp over the corpus", "[.peer][model][tokenizer]") {
  const auto dir = dms::test::scratch_dir("dms-tok", "peer");
  const std::string python = dms::test::peer_python(dir, "llama_cpp");
  const std::string model = dms::test::model_path(dir);
  const auto tok = dms::tokenizer::from_file(model);
  auto texts = dms::test::corpus_texts();
  // A few edge cases beyond the corpus: empty text, invalid UTF-8, lone specials.
  for (const char *t : {"", " ", "\n", "\xFF\xFE invalid \xC3", "<|im_start|>", "a<|endoftext|>", "   \n\n  x"}) texts.push_back(t);
  check_parity(tok, model, texts, dir, python);
}

TEST_CASE("SentencePiece: ids identical to llama.cpp on a synthetic llama vocabulary", "[.peer][tokenizer]") {
  const auto dir = dms::test::scratch_dir("dms-tok", "peer-spm");
  const std::string python = dms::test::peer_python(dir, "llama_cpp");
  // A vocab-only llama GGUF: the hyper-parameters llama.cpp reads before it looks at the vocabulary.
  dms::test::vocab_spec v;
  v.model = "llama";
  v.pre = "";
  v.add("<unk>", dms::gguf_token_type::unknown);
  v.add("<s>", dms::gguf_token_type::control);
  v.add("</s>", dms::gguf_token_type::control);
  for (int b = 0; b < 256; ++b) {
    char buf[8];
    std::snprintf(buf, sizeof buf, "<0x%02X>", b);
    v.add(buf, dms::gguf_token_type::byte);
  }
  float score = -1.0f;
  for (const char *p : {"\xE2\x96\x81", "\xE2\x96\x81t", "\xE2\x96\x81the", "he", "th", "e", "t", "h", "a", "n", "d",
                        "\xE2\x96\x81" "a", "\xE2\x96\x81" "an", "\xE2\x96\x81" "and", "in", "\xE2\x96\x81in", "g", "ing", "o",
                        "\xE2\x96\x81o", "\xE2\x96\x81on", "s", "\xE2\x96\x81s", "es", "\xE2\x96\x81\xE2\x96\x81", "\n", ",", ".",
                        "\xE4\xBD\xA0", "\xC3\xA9"})
    v.add(p, dms::gguf_token_type::normal, score -= 0.5f);
  v.extra.emplace_back("llama.context_length", std::uint32_t{128});
  v.extra.emplace_back("llama.embedding_length", std::uint32_t{64});
  v.extra.emplace_back("llama.block_count", std::uint32_t{1});
  v.extra.emplace_back("llama.feed_forward_length", std::uint32_t{128});
  v.extra.emplace_back("llama.attention.head_count", std::uint32_t{2});
  v.extra.emplace_back("llama.attention.head_count_kv", std::uint32_t{2});
  v.extra.emplace_back("llama.attention.layer_norm_rms_epsilon", 1e-5f);
  v.extra.emplace_back("llama.rope.dimension_count", std::uint32_t{32});
  v.extra.emplace_back("llama.vocab_size", static_cast<std::uint32_t>(v.tokens.size()));
  v.extra.emplace_back("tokenizer.ggml.bos_token_id", std::uint32_t{1});
  v.extra.emplace_back("tokenizer.ggml.eos_token_id", std::uint32_t{2});
  v.extra.emplace_back("tokenizer.ggml.unknown_token_id", std::uint32_t{0});
  const auto bytes = v.bytes();
  const auto path = dir / "spm.gguf";
  std::ofstream(path, std::ios::binary).write(reinterpret_cast<const char *>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
  const auto tok = dms::tokenizer::from_file(path);
  std::vector<std::string> texts{"the and in on", "  the  ", "thing seen, and\nthen.", "</s>the<s>and", "caf\xC3\xA9 \xE4\xBD\xA0\xE5\xA5\xBD!",
                                 "", "x", " ", "\xF0\x9F\x98\x80 and", "<unk>"};
  check_parity(tok, path.string(), texts, dir, python);
}
