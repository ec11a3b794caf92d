// tools/dms/tokenize.hpp: `dms tokenize` and `dms detokenize`: a model's tokenizer from the shell.
//
// `dms tokenize --model M` reads text from stdin and prints its token ids, separated by spaces,
// exactly as llama.cpp's llama_tokenize gives them (BOS/EOS as the model asks; --no-bos adds
// neither; --special turns special-token text such as <|im_start|> into the special token).
// `--pieces` prints one "id<TAB>piece" line per token instead, with unprintable bytes escaped.
// `dms detokenize --model M` reads whitespace-separated ids from stdin and prints their text.
#pragma once

#include <cctype>
#include <charconv>
#include <cstdio>
#include <iostream>
#include <iterator>
#include <string>
#include <vector>

#include <dms/tokenizer/tokenizer.hpp>

#include "args.hpp"

namespace dms::cli {

namespace detail {
inline std::string read_stdin() {
  std::ios::sync_with_stdio(false);
  std::cin >> std::noskipws;
  return {std::istreambuf_iterator<char>(std::cin), std::istreambuf_iterator<char>()};
}
//! `s` with newlines, tabs, backslashes and other bytes below 0x20 (and 0x7F) escaped, so that
//! one token stays on one line.
inline std::string escape_piece(std::string_view s) {
  std::string out;
  for (unsigned char c : s) {
    if (c == '\n') out += "\\n";
    else if (c == '\t') out += "\\t";
    else if (c == '\r') out += "\\r";
    else if (c == '\\') out += "\\\\";
    else if (c < 0x20 || c == 0x7F) {
      char buf[8];
      std::snprintf(buf, sizeof buf, "\\x%02x", c);
      out += buf;
    } else out.push_back(static_cast<char>(c));
  }
  return out;
}
} // namespace detail

inline command_spec tokenize_command() {
  command_spec c("dms tokenize", "Print the token ids of the text on stdin, as llama.cpp tokenizes it with the model's "
                                 "vocabulary (GGUF metadata: byte-level BPE or SentencePiece).");
  c.option({"model", 'm', "MODEL", "GGUF file whose tokenizer to use (required)", ""})
      .option({"no-bos", 0, "", "add no BOS/EOS even if the model asks for them", ""})
      .option({"special", 0, "", "parse special-token text (<|im_start|>, <|endoftext|>, ...) as special tokens", ""})
      .option({"pieces", 0, "", "print one 'id<TAB>piece' line per token (unprintable bytes escaped)", ""})
      .epilog("Examples:\n  echo -n 'Hello world' | dms tokenize --model SmolLM2-135M-Instruct.Q4_1.gguf\n"
              "  printf '<|im_start|>user\\nHi' | dms tokenize -m model.gguf --special --pieces");
  return c;
}

inline int run_tokenize(const parsed_args &args) {
  const auto tok = tokenizer::from_file(args.get("model"));
  const std::string text = detail::read_stdin();
  const auto ids = tok.encode(text, !args.has("no-bos"), args.has("special"));
  std::string out;
  if (args.has("pieces")) {
    for (const token_id id : ids) out += std::to_string(id) + "\t" + detail::escape_piece(tok.piece(id, true)) + "\n";
  } else {
    for (std::size_t i = 0; i < ids.size(); ++i) out += (i ? " " : "") + std::to_string(ids[i]);
    out += "\n";
  }
  std::fwrite(out.data(), 1, out.size(), stdout);
  return 0;
}

inline command_spec detokenize_command() {
  command_spec c("dms detokenize", "Print the text of the token ids on stdin (whitespace separated), as llama.cpp's "
                                   "llama_detokenize renders them.");
  c.option({"model", 'm', "MODEL", "GGUF file whose tokenizer to use (required)", ""})
      .option({"special", 0, "", "render control tokens (<|im_start|>, ...) instead of dropping them", ""})
      .epilog("Example:\n  echo '19556 905' | dms detokenize --model SmolLM2-135M-Instruct.Q4_1.gguf");
  return c;
}

inline int run_detokenize(const parsed_args &args) {
  const auto tok = tokenizer::from_file(args.get("model"));
  const std::string in = detail::read_stdin();
  std::vector<token_id> ids;
  for (std::size_t i = 0; i < in.size();) {
    while (i < in.size() && std::isspace(static_cast<unsigned char>(in[i]))) ++i;
    if (i == in.size()) break;
    std::size_t end = i;
    while (end < in.size() && !std::isspace(static_cast<unsigned char>(in[end]))) ++end;
    token_id id = 0;
    const auto [p, ec] = std::from_chars(in.data() + i, in.data() + end, id);
    require(ec == std::errc() && p == in.data() + end, errc::invalid_argument,
            [&] { return "'" + in.substr(i, end - i) + "' on stdin is not a token id (expected integers separated by whitespace)"; });
    ids.push_back(id);
    i = end;
  }
  const std::string text = tok.decode(ids, args.has("special"));
  std::fwrite(text.data(), 1, text.size(), stdout);
  return 0;
}

} // namespace dms::cli
