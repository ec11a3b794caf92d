"""Peer side of tests/model/llama_smollm2_tests.cpp: llama-cpp-python's logits and greedy tokens.

usage: llama_cpp_peer.py MODEL OUT_DIR N_CTX N_GREEDY KV_TYPE

KV_TYPE is f16 (llama.cpp's default cache) or f32 (dms's: the same arithmetic as dms).

For every prompt below, tokenized by llama.cpp's own tokenizer (BOS as the model's metadata
says), writes OUT_DIR/prompt_<i>.bin:
    int32 n_tokens, int32 n_vocab, int32 tokens[n_tokens], float32 logits[n_tokens][n_vocab]
(every position's logits: Llama(logits_all=True), one eval() of the whole prompt). For the first
N_GREEDY prompts, also OUT_DIR/greedy_<i>.bin: int32 n, int32 ids[n], the 64 tokens picked by
argmax after the prompt, one eval() per token (what a greedy decode loop does).
"""
import sys
from pathlib import Path

import numpy as np
from llama_cpp import Llama

PROMPTS = [
    "The capital of France is",
    "Once upon a time, in a small village by the sea,",
    "def fibonacci(n):\n    if n < 2:\n        return n\n    return",
    "1, 2, 3, 5, 8, 13, 21,",
    "The chemical symbol for gold is",
    "Translate to French: I would like a cup of coffee.",
    "<|im_start|>user\nWhat is the tallest mountain in the world?<|im_end|>\n<|im_start|>assistant\n",
    "In 1969, Neil Armstrong became the first person to",
    "SELECT name, age FROM users WHERE",
    "The quick brown fox jumps over the lazy",
    "Photosynthesis is the process by which plants",
    "Q: What is 12 times 12?\nA:",
    "Der Hund läuft schnell über die Wiese und",
    "import numpy as np\nx = np.arange(10)\nprint(x.",
    "My favourite colours are red, green and",
    "The theory of general relativity, published by Albert Einstein in",
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\nWrite a haiku about rain.<|im_end|>\n<|im_start|>assistant\n",
    "Water boils at 100 degrees Celsius at sea level, but at higher altitudes it boils at",
    "for (int i = 0; i < n; ++i) {\n    sum +=",
    "The best way to learn a new language is",
    "Monday, Tuesday, Wednesday,",
    "A haiku is a short poem with three lines of",
    "The stock market fell sharply on Tuesday after",
    "HTTP status code 404 means",
]


def main() -> None:
    model, out, n_ctx, n_greedy = sys.argv[1], Path(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
    kv = {} if sys.argv[5] == "f16" else {"type_k": 0, "type_v": 0}  # 0 = GGML_TYPE_F32
    llm = Llama(model_path=model, logits_all=True, n_ctx=n_ctx, n_threads=2, n_batch=512, verbose=False, **kv)
    n_vocab = llm.n_vocab()
    for i, prompt in enumerate(PROMPTS):
        tokens = llm.tokenize(prompt.encode("utf-8"), add_bos=True, special=True)
        llm.reset()
        llm.eval(tokens)
        logits = np.asarray(llm.scores[: len(tokens)], dtype=np.float32)
        with open(out / f"prompt_{i}.bin", "wb") as f:
            np.asarray([len(tokens), n_vocab], dtype=np.int32).tofile(f)
            np.asarray(tokens, dtype=np.int32).tofile(f)
            logits.tofile(f)
        if i < n_greedy:
            ids = []
            for _ in range(64):
                nxt = int(np.argmax(llm.scores[llm.n_tokens - 1]))
                ids.append(nxt)
                llm.eval([nxt])
            with open(out / f"greedy_{i}.bin", "wb") as f:
                np.asarray([len(ids)] + ids, dtype=np.int32).tofile(f)
    print(len(PROMPTS))


if __name__ == "__main__":
    main()
