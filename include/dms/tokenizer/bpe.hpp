// dms/tokenizer/bpe.hpp: byte-level BPE merging of one pre-tokenized word (GPT-2, Llama-3, ...).
//
// A word starts as one symbol per byte (each byte stands for its GPT-2 character, a token of
// every byte-level vocabulary). Adjacent pairs with a merge rule wait in a priority queue ordered
// by rank, then by position; the best pair is merged, its neighbours' pairs re-queued, and stale
// entries (a side already merged elsewhere) skipped: llama.cpp's llm_tokenizer_bpe_session.
// Symbols carry token ids, not strings, and the merge table is keyed by the id pair, so a merge
// step does not allocate; the queue and symbol buffers are reused across words.
#pragma once

#include <algorithm>
#include <cstdint>
#include <string_view>
#include <vector>

#include "dms/config.hpp"
#include "dms/tokenizer/vocab.hpp"

DMS_NAMESPACE_BEGIN
namespace detail {

class bpe_session {
public:
  explicit bpe_session(const vocab_data &v) : v_(v) {}

  //! Appends the tokens of `word` (raw UTF-8 bytes of one pre-tokenized word) to `out`.
  void encode_word(std::string_view word, std::vector<token_id> &out) {
    if (word.empty()) return;
    if (v_.pre.ignore_merges) { // Llama-3: a word that is a token is taken whole
      encoded_.clear();
      for (unsigned char b : word) encoded_ += v_.byte_chars[b];
      const token_id id = v_.find(encoded_);
      if (id != no_token) {
        out.push_back(id);
        return;
      }
    }
    symbols_.clear();
    queue_.clear();
    const int n = static_cast<int>(word.size());
    for (int i = 0; i < n; ++i) {
      const auto b = static_cast<unsigned char>(word[static_cast<std::size_t>(i)]);
      symbols_.push_back({v_.byte_token[b], i - 1, i + 1 == n ? -1 : i + 1, 1, b});
    }
    for (int i = 1; i < n; ++i) push_pair(i - 1, i);
    while (!queue_.empty()) {
      std::pop_heap(queue_.begin(), queue_.end(), worse);
      const pair p = queue_.back();
      queue_.pop_back();
      symbol &l = symbols_[static_cast<std::size_t>(p.left)];
      symbol &r = symbols_[static_cast<std::size_t>(p.right)];
      // Stale: a side was merged away or grew since the pair was queued (ids only change by growing).
      if (l.n == 0 || r.n == 0 || l.id != p.left_id || r.id != p.right_id) continue;
      l.id = p.result;
      l.n += r.n;
      r.n = 0;
      l.next = r.next;
      if (r.next >= 0) symbols_[static_cast<std::size_t>(r.next)].prev = p.left;
      push_pair(l.prev, p.left);
      push_pair(p.left, l.next);
    }
    for (int i = 0; i != -1; i = symbols_[static_cast<std::size_t>(i)].next) {
      const symbol &s = symbols_[static_cast<std::size_t>(i)];
      if (s.n == 0) continue;
      if (s.id != no_token) {
        out.push_back(s.id);
      } else { // a byte whose GPT-2 character is not a token (only in broken vocabularies)
        const auto &fb = v_.byte_fallback[s.first_byte];
        out.insert(out.end(), fb.begin(), fb.end());
      }
    }
  }

private:
  struct symbol {
    token_id id;
    int prev, next;
    int n; //!< bytes covered; 0 once merged into its left neighbour
    unsigned char first_byte;
  };
  struct pair {
    std::int32_t rank;
    int left, right;
    token_id left_id, right_id, result;
  };
  // Heap order: the lowest rank, then the leftmost pair, comes out first.
  static bool worse(const pair &a, const pair &b) noexcept {
    return a.rank > b.rank || (a.rank == b.rank && a.left > b.left);
  }
  void push_pair(int left, int right) {
    if (left < 0 || right < 0) return;
    const token_id a = symbols_[static_cast<std::size_t>(left)].id, b = symbols_[static_cast<std::size_t>(right)].id;
    if (a == no_token || b == no_token) return;
    const auto it = v_.merges.find((static_cast<std::uint64_t>(static_cast<std::uint32_t>(a)) << 32) | static_cast<std::uint32_t>(b));
    if (it == v_.merges.end()) return;
    queue_.push_back({it->second.rank, left, right, a, b, it->second.result});
    std::push_heap(queue_.begin(), queue_.end(), worse);
  }

  const vocab_data &v_;
  std::vector<symbol> symbols_;
  std::vector<pair> queue_;
  std::string encoded_;
};

} // namespace detail
DMS_NAMESPACE_END
