"""Tokenizes texts with llama.cpp (llama-cpp-python) for tokenizer_peer_test.cpp.

usage: tokenizer_peer_test.py MODEL.gguf TEXTS_FILE
TEXTS_FILE holds the texts, each as one line of hex. Prints, per text i:
  T i add_bos special id id ...   llama_tokenize(text, add_special=add_bos, parse_special=special)
  D i special HEX                 llama_detokenize(tokenize(text, False, True), remove_special=False,
                                                   unparse_special=special)
and once: E eos eot bos and the EOG ids among the first 1024 tokens.
"""
import ctypes
import sys

import llama_cpp

model, texts_file = sys.argv[1], sys.argv[2]
llm = llama_cpp.Llama(model_path=model, vocab_only=True, verbose=False)
vocab = llm._model.vocab
texts = [bytes.fromhex(line.strip()) for line in open(texts_file) if line.strip() or line == "\n"]
out = []
for i, text in enumerate(texts):
    for add_bos in (False, True):
        for special in (False, True):
            ids = llm.tokenize(text, add_bos=add_bos, special=special)
            out.append(f"T {i} {int(add_bos)} {int(special)} " + " ".join(map(str, ids)))
    ids = llm.tokenize(text, add_bos=False, special=True)
    arr = (llama_cpp.llama_token * max(1, len(ids)))(*ids)
    for special in (False, True):
        size = 4 * len(text) + 64
        buf = ctypes.create_string_buffer(size)
        n = llama_cpp.llama_detokenize(vocab, arr, len(ids), buf, size, False, special)
        assert n >= 0, n
        out.append(f"D {i} {int(special)} " + buf.raw[:n].hex())
eog = [t for t in range(min(1024, llama_cpp.llama_vocab_n_tokens(vocab))) if llama_cpp.llama_vocab_is_eog(vocab, t)]
out.append("E " + " ".join(map(str, [llama_cpp.llama_vocab_eos(vocab), llama_cpp.llama_vocab_eot(vocab),
                                       llama_cpp.llama_vocab_bos(vocab)] + eog)))
print("\n".join(out))
