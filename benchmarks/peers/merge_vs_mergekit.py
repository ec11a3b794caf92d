#!/usr/bin/env python3
"""merge_vs_mergekit.py: wall time and peak memory of `dms merge` against `mergekit-yaml`.

Both tools run the same mergekit YAML configs (linear, ties; float32) on the same checkpoints:
  * a SmolLM2-135M-sized pair plus base (Llama, 30 layers, n_embd 576, vocab 49152), F32 safetensors
    made by scripts/make-tiny-llama (random weights: speed does not depend on the values);
  * with --large, a synthetic model about 10x larger (TinyLlama-1.1B shapes); mergekit runs there
    too unless --skip-mergekit-large (it can take long on a small machine).
Each tool is run under /usr/bin/time -v (wall clock, maximum resident set size). The read bandwidth
of the input files is measured in the same run (reading every input byte once, page cache as the
merges find it), so the merge times can be compared with what the disk or cache can deliver.
Prints a markdown table; run it on a quiet machine:

    ~/.cache/dms/peers-venv/bin/python benchmarks/peers/merge_vs_mergekit.py --dms build/release/tools/dms/dms \
        --work /tmp/dms-merge-bench [--large] [--threads N]
"""
import argparse
import os
import re
import shutil
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))

SIZES = {
    "smollm2-135m": dict(hidden=576, intermediate=1536, layers=30, heads=9, kv_heads=3, vocab=49152),
    "tinyllama-1.1b": dict(hidden=2048, intermediate=5632, layers=22, heads=32, kv_heads=4, vocab=32000),
}

CONFIGS = {
    "linear": """merge_method: linear
dtype: float32
models:
  - model: {d}/model_a
    parameters: {{weight: 0.4}}
  - model: {d}/model_b
    parameters: {{weight: 0.6}}
""",
    "ties": """merge_method: ties
dtype: float32
base_model: {d}/base
parameters: {{normalize: true}}
models:
  - model: {d}/model_a
    parameters: {{weight: 0.5, density: 0.5}}
  - model: {d}/model_b
    parameters: {{weight: 0.5, density: 0.3}}
""",
}


def make_models(python, d, size):
    if os.path.exists(os.path.join(d, "model_b", "config.json")):
        return
    s = SIZES[size]
    cmd = [python, os.path.join(REPO, "scripts", "make-tiny-llama"), d, "--models", "2",
           "--hidden", str(s["hidden"]), "--intermediate", str(s["intermediate"]), "--layers", str(s["layers"]),
           "--heads", str(s["heads"]), "--kv-heads", str(s["kv_heads"]), "--vocab", str(s["vocab"])]
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)


def timed(cmd, log):
    """Runs cmd under /usr/bin/time -v; returns (wall seconds, max RSS bytes)."""
    with open(log, "w") as f:
        r = subprocess.run(["/usr/bin/time", "-v"] + cmd, stdout=f, stderr=subprocess.STDOUT)
    text = open(log).read()
    if r.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({r.returncode}); see {log}")
    wall = re.search(r"Elapsed \(wall clock\) time \(h:mm:ss or m:ss\): (\S+)", text).group(1)
    parts = [float(p) for p in wall.split(":")]
    seconds = sum(p * 60 ** i for i, p in enumerate(reversed(parts)))
    rss_kb = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", text).group(1))
    return seconds, rss_kb * 1024


def read_bandwidth(paths):
    """Bytes per second reading every file once (1 MiB reads)."""
    total, t0 = 0, time.perf_counter()
    for p in paths:
        with open(p, "rb", buffering=0) as f:
            while True:
                b = f.read(1 << 20)
                if not b:
                    break
                total += len(b)
    return total, total / (time.perf_counter() - t0)


def inputs_of(d, names):
    out = []
    for n in names:
        for f in sorted(os.listdir(os.path.join(d, n))):
            if f.endswith(".safetensors"):
                out.append(os.path.join(d, n, f))
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dms", required=True, help="the dms binary")
    ap.add_argument("--mergekit", default=os.path.join(os.path.dirname(sys.executable), "mergekit-yaml"))
    ap.add_argument("--work", default="/tmp/dms-merge-bench")
    ap.add_argument("--threads", type=int, default=0, help="dms --threads (0: all cores)")
    ap.add_argument("--large", action="store_true", help="also the ~10x larger synthetic model")
    ap.add_argument("--skip-mergekit-large", action="store_true")
    a = ap.parse_args()
    if not shutil.which("/usr/bin/time"):
        sys.exit("needs /usr/bin/time (Debian package `time`)")
    sizes = ["smollm2-135m"] + (["tinyllama-1.1b"] if a.large else [])
    rows = []
    for size in sizes:
        d = os.path.join(a.work, size)
        make_models(sys.executable, d, size)
        for method, text in CONFIGS.items():
            cfg = os.path.join(a.work, f"{size}-{method}.yaml")
            with open(cfg, "w") as f:
                f.write(text.format(d=d))
            names = ["model_a", "model_b"] + (["base"] if "base_model" in text else [])
            in_bytes, bw = read_bandwidth(inputs_of(d, names))
            tools = [("dms merge", [a.dms, "merge", cfg, "-o", None, "--threads", str(a.threads)])]
            if not (size != "smollm2-135m" and a.skip_mergekit_large):
                tools.append(("mergekit-yaml", [a.mergekit, cfg, None, "--no-copy-tokenizer", "--quiet"]))
            for tool, cmd in tools:
                out = os.path.join(a.work, f"out-{size}-{method}-{tool.split()[0]}")
                shutil.rmtree(out, ignore_errors=True)
                cmd = [out if c is None else c for c in cmd]
                wall, rss = timed(cmd, out + ".log")
                rows.append((size, method, tool, in_bytes, wall, rss, bw))
                shutil.rmtree(out, ignore_errors=True)
    print("| model | method | tool | input | wall (s) | input MB/s | peak RSS (MiB) | input read bandwidth (MB/s) |")
    print("| --- | --- | --- | --- | ---: | ---: | ---: | ---: |")
    for size, method, tool, in_bytes, wall, rss, bw in rows:
        print(f"| {size} | {method} | {tool} | {in_bytes / 1e9:.2f} GB | {wall:.1f} | {in_bytes / 1e6 / wall:.0f} | "
              f"{rss / 2**20:.0f} | {bw / 1e6:.0f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
