"""Hidden states of dms's forward pass against Hugging Face transformers on the same GGUF.

    hidden_states_transformers.py DUMPER MODEL.gguf WORKDIR

transformers loads the GGUF (`gguf_file=`), dequantizes every weight to float32 and runs its own
LlamaForCausalLM with output_hidden_states=True; DUMPER (dms_peer_hidden_states) runs dms on the
same token ids with its quantized kernels. For every layer and position we compare the two hidden
vectors by cosine similarity and require >= 0.999 (the dequantized reference differs slightly from
dms's quantized arithmetic: activations are rounded to 8 bits inside the dot products, as llama.cpp
does). Prints a per-layer table of the smallest cosine and the largest relative L2 error.
Exit 77 (skipped) when torch/transformers are not installed in the peer venv.
"""
import os
import subprocess
import sys

try:
    import numpy as np
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
except ImportError as e:
    print(f"SKIPPED: the peer venv lacks torch/transformers ({e}); run scripts/peers")
    sys.exit(77)

PROMPTS = [
    "The capital of France is",
    "def fibonacci(n):\n    if n < 2:\n        return n\n    return",
    "Once upon a time, in a small village by the sea, there lived an old fisherman who",
    "1, 2, 3, 5, 8, 13, 21, 34,",
    "<|im_start|>user\nWhat is the boiling point of water?<|im_end|>\n<|im_start|>assistant\n",
    "Les fleurs du jardin sont magnifiques au printemps, surtout quand",
    "東京は日本の首都であり、",
    "   Whitespace\t\tand tabs\n\n and numbers 3.14159 and 2718281828.",
]
THRESHOLD = 0.999


def main():
    dumper, model_path, workdir = sys.argv[1:4]
    os.makedirs(workdir, exist_ok=True)
    torch.manual_seed(0)
    torch.set_num_threads(2)
    directory, name = os.path.split(os.path.abspath(model_path))
    tok = AutoTokenizer.from_pretrained(directory, gguf_file=name)
    model = AutoModelForCausalLM.from_pretrained(directory, gguf_file=name, dtype=torch.float32)
    model.eval()
    n_layers = model.config.num_hidden_layers
    worst = np.ones(n_layers + 1)
    worst_rel = np.zeros(n_layers + 1)
    positions = 0
    for i, text in enumerate(PROMPTS):
        ids = tok(text, add_special_tokens=False)["input_ids"]
        with torch.no_grad():
            out = model(torch.tensor([ids]), output_hidden_states=True)
        ref = np.stack([h[0].numpy() for h in out.hidden_states])  # [n_layers + 1, n, d]
        dump = os.path.join(workdir, f"dms_{i}.npy")
        subprocess.run([dumper, model_path, ",".join(map(str, ids)), dump], check=True)
        got = np.load(dump)
        assert got.shape == ref.shape, (got.shape, ref.shape)
        dot = (got * ref).sum(-1)
        cos = dot / (np.linalg.norm(got, axis=-1) * np.linalg.norm(ref, axis=-1))
        rel = np.linalg.norm(got - ref, axis=-1) / np.linalg.norm(ref, axis=-1)
        worst = np.minimum(worst, cos.min(axis=1))
        worst_rel = np.maximum(worst_rel, rel.max(axis=1))
        positions += len(ids)
    print(f"transformers {__import__('transformers').__version__}, torch {torch.__version__}: "
          f"{len(PROMPTS)} prompts, {positions} positions, {n_layers} layers")
    print("hidden state | min cosine | max relative L2 error")
    for l in range(n_layers + 1):
        label = "embeddings" if l == 0 else ("final norm" if l == n_layers else f"block {l - 1} out")
        print(f"{label:>14} | {worst[l]:.6f} | {worst_rel[l]:.2e}")
    print(f"overall min cosine {worst.min():.6f} (required >= {THRESHOLD})")
    if worst.min() < THRESHOLD:
        sys.exit(1)


if __name__ == "__main__":
    main()
