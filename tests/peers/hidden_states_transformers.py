"""Hidden states of dms's forward pass against Hugging Face transformers on the same GGUF.

    hidden_states_transformers.py DUMPER MODEL.gguf WORKDIR

transformers loads the GGUF (`gguf_file=`), dequantizes every weight to float32 and runs its own
LlamaForCausalLM with output_hidden_states=True; DUMPER (dms_peer_hidden_states) runs dms on the
same token ids, twice: with model_options::precision exact (f32 activations on dequantized weights:
the same arithmetic as the reference up to summation order; cosine >= 0.999 required at every
layer and position) and fast (activations rounded to 8-bit blocks inside the dot products, as
llama.cpp does; measured min cosine 0.9960 (final norm) on these prompts, >= 0.99 required). Prints a per-layer
table of the smallest cosine and the largest relative L2 error for each.
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
THRESHOLDS = {"exact": 0.999, "fast": 0.99}


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
    worst = {p: np.ones(n_layers + 1) for p in THRESHOLDS}
    worst_rel = {p: np.zeros(n_layers + 1) for p in THRESHOLDS}
    positions = 0
    for i, text in enumerate(PROMPTS):
        ids = tok(text, add_special_tokens=False)["input_ids"]
        with torch.no_grad():
            out = model(torch.tensor([ids]), output_hidden_states=True)
        ref = np.stack([h[0].numpy() for h in out.hidden_states])  # [n_layers + 1, n, d]
        positions += len(ids)
        for precision in THRESHOLDS:
            dump = os.path.join(workdir, f"dms_{i}_{precision}.npy")
            subprocess.run([dumper, model_path, ",".join(map(str, ids)), dump, precision], check=True)
            got = np.load(dump)
            assert got.shape == ref.shape, (got.shape, ref.shape)
            cos = (got * ref).sum(-1) / (np.linalg.norm(got, axis=-1) * np.linalg.norm(ref, axis=-1))
            rel = np.linalg.norm(got - ref, axis=-1) / np.linalg.norm(ref, axis=-1)
            worst[precision] = np.minimum(worst[precision], cos.min(axis=1))
            worst_rel[precision] = np.maximum(worst_rel[precision], rel.max(axis=1))
    print(f"transformers {__import__('transformers').__version__}, torch {torch.__version__}: "
          f"{len(PROMPTS)} prompts, {positions} positions, {n_layers} layers")
    print("hidden state | exact: min cosine | max rel. L2 error | fast: min cosine | max rel. L2 error")
    for l in range(n_layers + 1):
        label = "embeddings" if l == 0 else ("final norm" if l == n_layers else f"block {l - 1} out")
        print(f"{label:>14} | {worst['exact'][l]:.6f} | {worst_rel['exact'][l]:.2e} | "
              f"{worst['fast'][l]:.6f} | {worst_rel['fast'][l]:.2e}")
    failed = False
    for precision, threshold in THRESHOLDS.items():
        print(f"{precision}: overall min cosine {worst[precision].min():.6f} (required >= {threshold})")
        failed |= worst[precision].min() < threshold
    if failed:
        sys.exit(1)


if __name__ == "__main__":
    main()
