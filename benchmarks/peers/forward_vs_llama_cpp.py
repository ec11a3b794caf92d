"""Forward-pass speed of dms against llama.cpp (llama-cpp-python) on the same GGUF, in one run.

    forward_vs_llama_cpp.py DMS_BENCH [MODEL.gguf] [--repeats N]

DMS_BENCH is the dms_bench_cpu_forward binary (Release build). For 1 and 2 threads it measures:
prefill of one 512-token prompt (tokens/s) and decode (one token per step after a 64-token prompt,
tokens/s), alternating dms and llama.cpp runs so that both see the same machine state; then the
peak RSS of a dms decode-only process against the model file size plus its KV cache. Prints a
markdown table for BENCHMARKS.md. Run it on an otherwise idle machine.
"""
import json
import os
import subprocess
import sys
import time

import numpy as np
from llama_cpp import Llama

N_PREFILL, N_PROMPT, N_DECODE, N_CTX = 512, 64, 128, 1024


def ids(n, n_vocab, seed=7):
    return [int(x) for x in np.random.default_rng(seed).integers(0, n_vocab, size=n)]


def llama_cpp_rates(model, threads):
    llm = Llama(model_path=model, n_ctx=N_CTX, n_batch=N_PREFILL, n_ubatch=N_PREFILL, n_threads=threads,
                n_threads_batch=threads, verbose=False)
    n_vocab = llm.n_vocab()
    prompt = ids(N_PREFILL, n_vocab)
    llm.reset()
    llm.eval(prompt[:16])  # warm-up
    llm.reset()
    t0 = time.perf_counter()
    llm.eval(prompt)
    prefill = N_PREFILL / (time.perf_counter() - t0)
    llm.reset()
    llm.eval(prompt[:N_PROMPT])
    steps = ids(N_DECODE, n_vocab, seed=11)
    t0 = time.perf_counter()
    for tok in steps:
        llm.eval([tok])
    decode = N_DECODE / (time.perf_counter() - t0)
    del llm
    return prefill, decode


def dms_rates(bench, model, threads):
    out = subprocess.run([bench, f"--benchmark_filter=BM_(prefill|decode|decode_hooked)/{threads}/",
                          "--benchmark_format=json", "--benchmark_min_time=2"],
                         env={**os.environ, "DMS_MODEL": model}, check=True, capture_output=True, text=True).stdout
    rates = {b["name"].split("/")[0]: b["tokens/s"] for b in json.loads(out)["benchmarks"]}
    return rates["BM_prefill"], rates["BM_decode"], rates["BM_decode_hooked"]


def dms_peak_rss(bench, model):
    """Peak RSS (bytes) of one fresh decode-only process, measured by /usr/bin/time: a child of
    this Python process would inherit its high-water mark across exec (Linux keeps the larger)."""
    out = subprocess.run(["/usr/bin/time", "-f", "%M", bench, "--benchmark_filter=BM_decode/2/",
                          "--benchmark_min_time=1"], env={**os.environ, "DMS_MODEL": model}, check=True,
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True).stderr
    return int(out.strip().splitlines()[-1]) * 1024


def main():
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    repeats = int(sys.argv[sys.argv.index("--repeats") + 1]) if "--repeats" in sys.argv else 3
    if "--repeats" in sys.argv:
        args.remove(str(repeats))
    bench = args[0]
    model = args[1] if len(args) > 1 else os.path.expanduser("~/.cache/dms/SmolLM2-135M-Instruct.Q4_1.gguf")
    import llama_cpp
    print(f"model {os.path.basename(model)}, llama-cpp-python {llama_cpp.__version__}, {os.cpu_count()} CPUs, "
          f"best of {repeats} alternating runs\n")
    print("| threads | measure | dms tokens/s | llama.cpp tokens/s | dms / llama.cpp |")
    print("|---|---|---|---|---|")
    for threads in (1, 2):
        best = {"prefill": [0, 0], "decode": [0, 0], "hooked": [0, 0]}
        for _ in range(repeats):
            dp, dd, dh = dms_rates(bench, model, threads)
            lp, ld = llama_cpp_rates(model, threads)
            for key, d, l in (("prefill", dp, lp), ("decode", dd, ld), ("hooked", dh, ld)):
                best[key] = [max(best[key][0], d), max(best[key][1], l)]
        for key, label in (("prefill", f"prefill {N_PREFILL}"), ("decode", "decode"),
                           ("hooked", "decode, 1 read-only hook (vs llama.cpp unhooked)")):
            d, l = best[key]
            print(f"| {threads} | {label} | {d:.1f} | {l:.1f} | {d / l:.2f}x |")
        print(f"| {threads} | hook overhead (dms hooked vs unhooked) | | | "
              f"{100 * (1 - best['hooked'][0] / best['decode'][0]):+.1f}% |")
    rss = dms_peak_rss(bench, model)
    file_bytes = os.path.getsize(model)
    kv = 30 * 2 * N_CTX * 192 * 4  # SmolLM2: 30 layers, K and V, n_ctx, 3 KV heads x 64, f32
    print(f"\npeak RSS of a dms decode process: {rss / 2**20:.1f} MiB; model file {file_bytes / 2**20:.1f} MiB + "
          f"KV cache {kv / 2**20:.1f} MiB = {(file_bytes + kv) / 2**20:.1f} MiB; ratio {rss / (file_bytes + kv):.2f}")


if __name__ == "__main__":
    main()
