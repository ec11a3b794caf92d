// dms/tokenizer/spm.hpp: SentencePiece-style merging by token score (llama.cpp's
// llm_tokenizer_spm_session), for `tokenizer.ggml.model` = "llama".
//
// The text (spaces already replaced by U+2581) starts as one symbol per UTF-8 character; every
// adjacent pair whose concatenation is a token is queued by that token's score (highest first,
// then leftmost); merging repeats until no pair is a token. A symbol left that is not a token is
// emitted as byte-fallback tokens <0xXX> (or, failing that, the one-byte token), one per byte.
#pragma once

#include <algorithm>
#include <cstdio>
#include <string_view>
#include <vector>

#include "dms/config.hpp"
#include "dms/core/error.hpp"
#include "dms/tokenizer/unicode.hpp"
#include "dms/tokenizer/vocab.hpp"

DMS_NAMESPACE_BEGIN
namespace detail {

//! The byte-fallback token of byte `b`: "<0xXX>", else the one-byte token (llama.cpp's
//! byte_to_token for SentencePiece). A vocabulary with neither cannot encode `b`: an error.
inline token_id spm_byte_token(const vocab_data &v, unsigned char b) {
  char buf[8];
  std::snprintf(buf, sizeof buf, "<0x%02X>", static_cast<unsigned>(b));
  token_id id = v.find(buf);
  if (id == no_token) {
    const char c = static_cast<char>(b);
    id = v.find(std::string_view(&c, 1));
  }
  require(id != no_token, errc::unsupported, [&] {
    return "cannot encode byte 0x" + std::string(buf + 3, 2) +
           ": the SentencePiece vocabulary has no byte-fallback token '" + std::string(buf) + "'";
  }, {v.source});
  return id;
}

class spm_session {
public:
  explicit spm_session(const vocab_data &v) : v_(v) {}

  void encode(std::string_view text, std::vector<token_id> &out) {
    symbols_.clear();
    queue_.clear();
    for (std::size_t off = 0; off < text.size();) {
      const std::size_t len = std::min(utf8_sequence_length(static_cast<unsigned char>(text[off])), text.size() - off);
      const int index = static_cast<int>(symbols_.size());
      symbols_.push_back({index - 1, off + len == text.size() ? -1 : index + 1, off, len});
      off += len;
    }
    for (int i = 1; i < static_cast<int>(symbols_.size()); ++i) push_pair(text, i - 1, i);
    while (!queue_.empty()) {
      std::pop_heap(queue_.begin(), queue_.end(), worse);
      const pair p = queue_.back();
      queue_.pop_back();
      symbol &l = symbols_[static_cast<std::size_t>(p.left)];
      symbol &r = symbols_[static_cast<std::size_t>(p.right)];
      if (l.n == 0 || r.n == 0 || l.n + r.n != p.size) continue; // stale
      l.n += r.n;
      r.n = 0;
      l.next = r.next;
      if (r.next >= 0) symbols_[static_cast<std::size_t>(r.next)].prev = p.left;
      push_pair(text, l.prev, p.left);
      push_pair(text, p.left, l.next);
    }
    if (symbols_.empty()) return;
    for (int i = 0; i != -1; i = symbols_[static_cast<std::size_t>(i)].next) {
      const symbol &s = symbols_[static_cast<std::size_t>(i)];
      const std::string_view piece = text.substr(s.offset, s.n);
      const token_id id = v_.find(piece);
      if (id != no_token) {
        out.push_back(id);
      } else {
        for (unsigned char b : piece) out.push_back(spm_byte_token(v_, b));
      }
    }
  }

private:
  struct symbol {
    int prev, next;
    std::size_t offset, n;
  };
  struct pair {
    float score;
    int left, right;
    std::size_t size;
  };
  // Heap order: the highest score, then the leftmost pair, comes out first.
  static bool worse(const pair &a, const pair &b) noexcept {
    return a.score < b.score || (a.score == b.score && a.left > b.left);
  }
  void push_pair(std::string_view text, int left, int right) {
    if (left < 0 || right < 0) return;
    const symbol &l = symbols_[static_cast<std::size_t>(left)], &r = symbols_[static_cast<std::size_t>(right)];
    const token_id id = v_.find(text.substr(l.offset, l.n + r.n));
    if (id == no_token) return;
    queue_.push_back({v_.score[static_cast<std::size_t>(id)], left, right, l.n + r.n});
    std::push_heap(queue_.begin(), queue_.end(), worse);
  }

  const vocab_data &v_;
  std::vector<symbol> symbols_;
  std::vector<pair> queue_;
};

} // namespace detail
DMS_NAMESPACE_END
