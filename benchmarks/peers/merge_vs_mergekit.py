#!/usr/bin/env python3
"""merge_vs_mergekit.py: wall time and peak memory of `dms merge` against `mergekit-yaml`.

Both tools run the same mergekit YAML configs (linear; ties), computing in float32 and writing
bfloat16, on the same checkpoints:
  * smollm2-135m: the real SmolLM2-135M-Instruct (the project's Q4_1 GGUF, dequantized to a BF16
    Hugging Face directory by `dms merge` with the passthrough method) as the base, and two
    "fine-tunes" = base + seeded Gaussian noise (std 0.01 x each tensor's std), written here;
  * with --large, a synthetic Llama ~10x larger (hidden 2048, 28 layers, vocab 32000: 1.36 B
    parameters, 2.7 GB per BF16 checkpoint), random BF16 weights written here tensor by tensor
    (merge speed and memory do not depend on the values). --keep-large keeps it afterwards.
Each tool runs under /usr/bin/time -v (wall clock, maximum resident set size), dms and mergekit
interleaved in the same run (the order alternates between rounds), each figure the best of
--rounds runs. Right before each round the input files are read once with 1 MiB read()s, page
cache warm (they were just written or read), which is both the read bandwidth the merge is compared
with and the warm-up both tools then see. Methods in --cold-methods (linear) get one more round,
cold: the input files are evicted from the page cache (posix_fadvise DONTNEED, those files only)
before the read measurement and before each tool, so that the read bandwidth is the disk's. The load average (os.getloadavg) is recorded with each
figure: on a shared machine only ratios measured in the same round mean much.

    ~/.cache/dms/peers-venv/bin/python benchmarks/peers/merge_vs_mergekit.py --dms build/release/tools/dms/dms \
        --work /tmp/dms-merge-bench [--large] [--threads N] [--rounds 2]
"""
import argparse
import json
import os
import re
import shutil
import struct
import subprocess
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
GGUF = os.path.expanduser("~/.cache/dms/SmolLM2-135M-Instruct.Q4_1.gguf")

# SmolLM2-135M-Instruct's config.json (HuggingFaceTB/SmolLM2-135M-Instruct), the hyper-parameters
# the GGUF metadata also holds; the dequantized directory needs it for mergekit.
SMOLLM2_CONFIG = {
    "architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 576, "intermediate_size": 1536,
    "num_hidden_layers": 30, "num_attention_heads": 9, "num_key_value_heads": 3, "vocab_size": 49152,
    "max_position_embeddings": 8192, "rms_norm_eps": 1e-5, "rope_theta": 100000.0, "tie_word_embeddings": True,
    "hidden_act": "silu", "bos_token_id": 1, "eos_token_id": 2, "torch_dtype": "bfloat16",
}
LARGE = dict(hidden=2048, intermediate=5632, layers=28, heads=32, kv_heads=4, vocab=32000)

CONFIGS = {
    "linear": """merge_method: linear
dtype: float32
out_dtype: bfloat16
models:
  - model: {d}/model_a
    parameters: {{weight: 0.4}}
  - model: {d}/model_b
    parameters: {{weight: 0.6}}
""",
    "ties": """merge_method: ties
dtype: float32
out_dtype: bfloat16
base_model: {d}/base
parameters: {{normalize: true}}
models:
  - model: {d}/model_a
    parameters: {{weight: 0.5, density: 0.5}}
  - model: {d}/model_b
    parameters: {{weight: 0.5, density: 0.3}}
""",
}
# dms only (mergekit has no whole-model trimming): the cost of the first pass of trim_scope: model.
CONFIGS["ties_model"] = CONFIGS["ties"].replace("merge_method: ties\n", "merge_method: ties\ntrim_scope: model\n")
DMS_ONLY = {"ties_model"}


# --- minimal safetensors I/O (BF16 as uint16), streaming one tensor at a time --------------------
def st_header(path):
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        return json.loads(f.read(n)), 8 + n


def bf16_to_f32(u16):
    return (u16.astype(np.uint32) << 16).view(np.float32)


def f32_to_bf16(x):
    u = x.astype(np.float32).view(np.uint32)
    return ((u + 0x7FFF + ((u >> 16) & 1)) >> 16).astype(np.uint16)  # round to nearest even


def write_safetensors(path, tensors):
    """tensors: list of (name, shape, producer) where producer() returns uint16 BF16 data."""
    header, offset = {}, 0
    for name, shape, _ in tensors:
        n = int(np.prod(shape)) * 2
        header[name] = {"dtype": "BF16", "shape": list(shape), "data_offsets": [offset, offset + n]}
        offset += n
    header["__metadata__"] = {"format": "pt"}
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * (-len(h) % 8)
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h)
        for _, shape, produce in tensors:
            f.write(np.ascontiguousarray(produce()).reshape(-1).tobytes())
    os.replace(tmp, path)


def llama_layout(hidden, intermediate, layers, heads, kv_heads, vocab, tied=False):
    kv = kv_heads * (hidden // heads)
    t = [("model.embed_tokens.weight", (vocab, hidden))]
    for i in range(layers):
        p = f"model.layers.{i}."
        t += [(p + "input_layernorm.weight", (hidden,)), (p + "self_attn.q_proj.weight", (hidden, hidden)),
              (p + "self_attn.k_proj.weight", (kv, hidden)), (p + "self_attn.v_proj.weight", (kv, hidden)),
              (p + "self_attn.o_proj.weight", (hidden, hidden)), (p + "post_attention_layernorm.weight", (hidden,)),
              (p + "mlp.gate_proj.weight", (intermediate, hidden)), (p + "mlp.up_proj.weight", (intermediate, hidden)),
              (p + "mlp.down_proj.weight", (hidden, intermediate))]
    t.append(("model.norm.weight", (hidden,)))
    if not tied:
        t.append(("lm_head.weight", (vocab, hidden)))
    return t


def write_config(d, cfg):
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "config.json"), "w") as f:
        json.dump(cfg, f, indent=2)


def make_noisy(base_dir, out_dir, seed):
    """out = base + N(0, (0.01 std(tensor))^2), per tensor, BF16."""
    if os.path.exists(os.path.join(out_dir, "model.safetensors")):
        return
    write_config(out_dir, json.load(open(os.path.join(base_dir, "config.json"))))
    files = sorted(f for f in os.listdir(base_dir) if f.endswith(".safetensors"))
    rng = np.random.default_rng(seed)
    tensors = []
    for fname in files:
        path = os.path.join(base_dir, fname)
        header, start = st_header(path)
        mm = np.memmap(path, dtype=np.uint8, mode="r")
        for name, info in header.items():
            if name == "__metadata__":
                continue
            assert info["dtype"] == "BF16", (name, info["dtype"])
            b, e = info["data_offsets"]

            def produce(b=b, e=e, mm=mm):
                x = bf16_to_f32(mm[start + b:start + e].view(np.uint16))
                s = float(x.std()) or 1.0
                return f32_to_bf16(x + rng.standard_normal(x.shape, dtype=np.float32) * (0.01 * s))
            tensors.append((name, info["shape"], produce))
    write_safetensors(os.path.join(out_dir, "model.safetensors"), tensors)


def make_smollm2(dms, d):
    base = os.path.join(d, "base")
    if not os.path.exists(os.path.join(base, "config.json")):
        cfg = os.path.join(d, "dequantize.yaml")
        os.makedirs(d, exist_ok=True)
        with open(cfg, "w") as f:
            f.write(f"merge_method: passthrough\nmodels:\n  - model: {GGUF}\n")
        shutil.rmtree(base, ignore_errors=True)
        subprocess.run([dms, "merge", cfg, "-o", base, "--out-type", "bf16"], check=True, stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL)
        write_config(base, SMOLLM2_CONFIG)
    make_noisy(base, os.path.join(d, "model_a"), 1)
    make_noisy(base, os.path.join(d, "model_b"), 2)


def make_large(d):
    s = LARGE
    cfg = dict(SMOLLM2_CONFIG, hidden_size=s["hidden"], intermediate_size=s["intermediate"],
               num_hidden_layers=s["layers"], num_attention_heads=s["heads"], num_key_value_heads=s["kv_heads"],
               vocab_size=s["vocab"], tie_word_embeddings=False)
    layout = llama_layout(**s)
    for i, name in enumerate(["base", "model_a", "model_b"]):
        out = os.path.join(d, name)
        if os.path.exists(os.path.join(out, "model.safetensors")):
            continue
        write_config(out, cfg)
        rng = np.random.default_rng(100 + i)

        def producer(shape, norm):
            def produce():
                x = rng.standard_normal(int(np.prod(shape)), dtype=np.float32) * np.float32(0.02)
                return f32_to_bf16(x + 1.0 if norm else x)
            return produce
        write_safetensors(os.path.join(out, "model.safetensors"),
                          [(n, shape, producer(shape, "norm" in n)) for n, shape in layout])


def param_count(d):
    n = 0
    for f in os.listdir(d):
        if f.endswith(".safetensors"):
            header, _ = st_header(os.path.join(d, f))
            n += sum(int(np.prod(v["shape"])) for k, v in header.items() if k != "__metadata__")
    return n


# --- measurement ---------------------------------------------------------------------------------
def timed(cmd, log):
    """Runs cmd under /usr/bin/time -v; returns (wall seconds, max RSS bytes, user + system seconds)."""
    with open(log, "w") as f:
        r = subprocess.run(["/usr/bin/time", "-v"] + cmd, stdout=f, stderr=subprocess.STDOUT)
    text = open(log).read()
    if r.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({r.returncode}); see {log}")
    wall = re.search(r"Elapsed \(wall clock\) time \(h:mm:ss or m:ss\): (\S+)", text).group(1)
    parts = [float(p) for p in wall.split(":")]
    seconds = sum(p * 60 ** i for i, p in enumerate(reversed(parts)))
    rss_kb = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", text).group(1))
    cpu = sum(float(re.search(rf"{k} time \(seconds\): (\S+)", text).group(1)) for k in ("User", "System"))
    return seconds, rss_kb * 1024, cpu


def read_bandwidth(paths):
    """(bytes, bytes per second) reading every file once with 1 MiB read()s into one buffer."""
    buf = bytearray(1 << 20)
    view = memoryview(buf)
    total, t0 = 0, time.perf_counter()
    for p in paths:
        with open(p, "rb", buffering=0) as f:
            while True:
                n = f.readinto(view)
                if not n:
                    break
                total += n
    return total, total / (time.perf_counter() - t0)


def evict(paths):
    """Drops the files' pages from the page cache (posix_fadvise DONTNEED: only these files)."""
    for attempt in range(2):  # pages just read may sit in other CPUs' LRU batches: try twice
        for p in paths:
            fd = os.open(p, os.O_RDONLY)
            try:
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            finally:
                os.close(fd)
        time.sleep(1)


def inputs_of(d, names):
    return [os.path.join(d, n, f) for n in names for f in sorted(os.listdir(os.path.join(d, n)))
            if f.endswith(".safetensors")]


def load():
    return os.getloadavg()[0]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dms", required=True, help="the dms binary")
    ap.add_argument("--mergekit", default=os.path.join(os.path.dirname(sys.executable), "mergekit-yaml"))
    ap.add_argument("--work", default="/tmp/dms-merge-bench")
    ap.add_argument("--threads", type=int, default=0, help="dms --threads (0: all cores)")
    ap.add_argument("--rounds", type=int, default=2, help="interleaved runs per tool; the best is reported")
    ap.add_argument("--large", action="store_true", help="also the ~10x larger synthetic model")
    ap.add_argument("--large-mergekit", default="linear",
                    help="comma-separated methods mergekit runs on the large model ('' for none)")
    ap.add_argument("--keep-large", action="store_true", help="keep the large checkpoints (2.7 GB each)")
    ap.add_argument("--cold-methods", default="linear",
                    help="methods that also get a cold round: inputs evicted from the page cache (posix_fadvise) "
                         "before the read measurement and before each tool")
    ap.add_argument("--json", help="also write the raw figures here")
    ap.add_argument("--methods", default=",".join(CONFIGS), help="comma-separated configs to run (default: all)")
    ap.add_argument("--skip-small", action="store_true", help="only the large model (with --large)")
    a = ap.parse_args()
    if not shutil.which("/usr/bin/time"):
        sys.exit("needs /usr/bin/time (Debian package `time`)")
    sizes = ([] if a.skip_small and a.large else ["smollm2-135m"]) + (["synthetic-1.4b"] if a.large else [])
    rows = []
    for size in sizes:
        d = os.path.join(a.work, size)
        t0 = time.perf_counter()
        if size == "smollm2-135m":
            make_smollm2(a.dms, d)
        else:
            make_large(d)
        print(f"# {size}: {param_count(os.path.join(d, 'base')) / 1e9:.3f} B parameters per checkpoint "
              f"(made in {time.perf_counter() - t0:.0f} s)", file=sys.stderr, flush=True)
        for method, text in CONFIGS.items():
            if method not in a.methods.split(","):
                continue
            cfg = os.path.join(a.work, f"{size}-{method}.yaml")
            with open(cfg, "w") as f:
                f.write(text.format(d=d))
            names = ["model_a", "model_b"] + (["base"] if "base_model" in text else [])
            tools = [("dms", [a.dms, "merge", cfg, "-o", None, "--threads", str(a.threads)])]
            if method not in DMS_ONLY and os.path.exists(a.mergekit) and (
                    size == "smollm2-135m" or method in a.large_mergekit.split(",")):
                tools.append(("mergekit", [a.mergekit, cfg, None, "--no-copy-tokenizer"]))
            files = inputs_of(d, names)
            caches = ["warm"] * a.rounds + (["cold"] if method in a.cold_methods.split(",") else [])
            for r, cache in enumerate(caches):
                if cache == "cold":
                    evict(files)
                in_bytes, bw = read_bandwidth(files)
                for tool, cmd in (tools if r % 2 == 0 else tools[::-1]):
                    out = os.path.join(a.work, f"out-{size}-{method}-{tool}")
                    shutil.rmtree(out, ignore_errors=True)
                    # Neither tool pays for the other's writeback: mergekit leaves its output dirty in
                    # the page cache (no fsync), and dms, which fsyncs before its rename, then waited
                    # for those gigabytes too (2026-12-03: 1.4 B linear 2.4-3.5 s alone, 6.2 s after
                    # mergekit). Not timed.
                    os.sync()
                    if cache == "cold":
                        evict(files)
                    la = load()
                    wall, rss, cpu = timed([out if c is None else c for c in cmd], out + ".log")
                    rows.append(dict(size=size, method=method, tool=tool, round=r, cache=cache, bytes=in_bytes, wall=wall,
                                     rss=rss, cpu=cpu, read_bw=bw, load=la,
                                     command=" ".join(out if c is None else c for c in cmd)))
                    print(f"# {size} {method} {tool} round {r} ({cache}): {wall:.2f} s (cpu {cpu:.2f} s), "
                          f"{rss / 2**20:.0f} MiB, load {la:.1f}, read {bw / 1e6:.0f} MB/s", file=sys.stderr, flush=True)
                    shutil.rmtree(out, ignore_errors=True)
        if size != "smollm2-135m" and not a.keep_large:
            shutil.rmtree(d, ignore_errors=True)
    if a.json:
        with open(a.json, "w") as f:
            json.dump(rows, f, indent=1)

    print("| model | method | tool | input | best wall (s) | CPU (s) | input MB/s | peak RSS (MiB) | load (1 min) |")
    print("| --- | --- | --- | --- | ---: | ---: | ---: | ---: | ---: |")
    best = {}
    for r in rows:
        k = (r["size"], r["method"] + (" (cold)" if r["cache"] == "cold" else ""), r["tool"])
        if k not in best or r["wall"] < best[k]["wall"]:
            best[k] = dict(r, rss=max(r["rss"], best.get(k, r)["rss"]))
    for (size, method, tool), r in best.items():
        print(f"| {size} | {method} | {tool} | {r['bytes'] / 1e9:.2f} GB | {r['wall']:.2f} | {r['cpu']:.2f} | "
              f"{r['bytes'] / 1e6 / r['wall']:.0f} | {r['rss'] / 2**20:.0f} | {r['load']:.1f} |")
    print()
    print("| model | method | mergekit / dms wall | mergekit / dms CPU | mergekit / dms peak RSS | "
          "dms input rate / read bandwidth (same round) |")
    print("| --- | --- | ---: | ---: | ---: | ---: |")
    for size in sizes:
        for method in [m + c for m in CONFIGS for c in ("", " (cold)")]:
            dm = best.get((size, method, "dms"))
            mk = best.get((size, method, "mergekit"))
            if not dm:
                continue
            ratio = f"{mk['wall'] / dm['wall']:.1f}x" if mk else "n/a"
            cpu = f"{mk['cpu'] / dm['cpu']:.1f}x" if mk else "n/a"
            rss = f"{mk['rss'] / dm['rss']:.1f}x" if mk else "n/a"
            bw = dm["bytes"] / dm["wall"] / dm["read_bw"]
            print(f"| {size} | {method} | {ratio} | {cpu} | {rss} | {100 * bw:.0f}% (read {dm['read_bw'] / 1e6:.0f} MB/s) |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
