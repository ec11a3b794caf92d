#!/usr/bin/env python3
"""Times llama.cpp's `gguf` Python package (gguf.quants.dequantize, numpy) on the sizes and types
of benchmarks/bench_cpu_dequant.cpp, and prints the side-by-side table of BENCHMARKS.md.

    PY=$(scripts/peers)/bin/python
    $PY benchmarks/peers/dequant_gguf.py                      # gguf's figures alone
    $PY benchmarks/peers/dequant_gguf.py --dms dms.json       # plus dms's (from
        dms_bench_cpu_dequant --benchmark_format=json --benchmark_out=dms.json) and the ratios

With --benchmark_repetitions on the dms side, its medians are used. Rates are computed from process CPU time, as Google Benchmark's are by default, so that both sides
are measured the same way on a shared machine; each figure is the best of several runs. Output
rates count the f32 bytes written (4 per element), input rates the quantized bytes read.
Ratios: dms/memcpy = dms output rate / memcpy rate at the same size (same bytes written);
dms/gguf = gguf time / dms time.
"""
import argparse
import json
import re
import time

import numpy as np
import gguf
from gguf import GGMLQuantizationType as T
from gguf.constants import GGML_QUANT_SIZES

TYPES = [T.F16, T.BF16, T.Q8_0, T.Q4_0, T.Q4_1, T.Q5_0, T.Q5_1, T.Q2_K, T.Q3_K, T.Q4_K, T.Q5_K, T.Q6_K]
SIZES = [1 << 20, 1 << 24]
SCALE_OFFSETS = {T.Q4_0: [0], T.Q4_1: [0, 2], T.Q5_0: [0], T.Q5_1: [0, 2], T.Q8_0: [0],
                 T.Q2_K: [80, 82], T.Q3_K: [108], T.Q4_K: [0, 2], T.Q5_K: [0, 2], T.Q6_K: [208]}


def random_tensor(qtype, n, rng):
    """Random bytes with finite values and scales of 0.01 (as the C++ benchmark), shaped as gguf
    stores a tensor of rows of 4096 elements."""
    block_size, type_size = GGML_QUANT_SIZES[qtype]
    row = 4096
    raw = rng.integers(0, 256, (n // row, row // block_size * type_size), dtype=np.uint8)
    if qtype in (T.F16, T.BF16):
        raw[:, 1::2] &= 0x3F
        return raw.view(np.float16) if qtype == T.F16 else raw
    scale = np.array([0.01], dtype=np.float16).view(np.uint8)
    blocks = raw.reshape(-1, type_size)
    for off in SCALE_OFFSETS[qtype]:
        blocks[:, off:off + 2] = scale
    return raw


def time_gguf(qtype, n, rng, budget_s):
    data = random_tensor(qtype, n, rng)
    best = float("inf")
    spent, runs = 0.0, 0
    while runs < 3 or (spent < budget_s and runs < 20):
        t0 = time.process_time()
        out = gguf.quants.dequantize(data, qtype)
        dt = time.process_time() - t0
        assert out.size == n and out.dtype == np.float32
        best = min(best, dt)
        spent += dt
        runs += 1
    return best, data.nbytes


def load_dms(path):
    """{(type name, n): {"memcpy": GB/s, "reference": GB/s, "cpu/avx2": GB/s, ...}} of output rates."""
    with open(path) as f:
        doc = json.load(f)
    rows = {}
    # With --benchmark_repetitions, use the medians; otherwise the single runs.
    has_median = any(b.get("aggregate_name") == "median" for b in doc["benchmarks"])
    for b in doc["benchmarks"]:
        if has_median != (b.get("aggregate_name") == "median"):
            continue
        name = re.sub(r"/min_time:[0-9.]+$", "", b.get("run_name", b["name"]))
        parts = name.split("/")
        if parts[0] == "memcpy":
            rows.setdefault(("memcpy", int(parts[1])), {})["memcpy"] = b["out_GBps"]
        elif parts[0] == "dequant":
            rows.setdefault((parts[1], int(parts[-1])), {})["/".join(parts[2:-1])] = b["out_GBps"]
    return rows, doc.get("context", {})


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dms", help="JSON output of dms_bench_cpu_dequant")
    ap.add_argument("--budget", type=float, default=1.0, help="seconds of CPU time per figure (default 1)")
    args = ap.parse_args()
    rng = np.random.default_rng(1234)
    from importlib.metadata import version
    print("gguf", version("gguf"), "numpy", np.__version__)

    gguf_rates = {}
    for n in SIZES:
        for qtype in TYPES:
            dt, in_bytes = time_gguf(qtype, n, rng, args.budget)
            gguf_rates[(qtype.name, n)] = (4 * n / dt / 1e9, in_bytes / dt / 1e9)

    if not args.dms:
        print(f"{'type':6} {'elements':>9} {'gguf out GB/s':>14} {'gguf in GB/s':>13}")
        for (name, n), (out_r, in_r) in gguf_rates.items():
            print(f"{name:6} {n:>9} {out_r:14.3f} {in_r:13.3f}")
        return

    dms, context = load_dms(args.dms)
    level = next((lvl for lvl in ("cpu/avx512", "cpu/avx2") if any(lvl in r for r in dms.values())), None)
    print(f"dms: {args.dms} (detected ISA: {context.get('dms_detected_isa', '?')}, best path: {level})")
    hdr = (f"| type | elements | memcpy out GB/s | dms {level} out GB/s | dms reference out GB/s | "
           f"gguf out GB/s | dms/memcpy | dms/gguf |")
    print(hdr)
    print("|" + "---|" * (hdr.count("|") - 1))
    for n in SIZES:
        memcpy = dms.get(("memcpy", n), {}).get("memcpy")
        for qtype in TYPES:
            row = dms.get((qtype.name, n), {})
            best, ref = row.get(level), row.get("reference")
            g_out, _ = gguf_rates[(qtype.name, n)]
            fmt = lambda v, spec=".2f": "n/a" if v is None else format(v, spec)
            print(f"| {qtype.name} | 2^{n.bit_length() - 1} | {fmt(memcpy)} | {fmt(best)} | {fmt(ref)} | "
                  f"{fmt(g_out, '.3f')} | {fmt(best / memcpy if best and memcpy else None)} | "
                  f"{fmt(best / g_out if best else None, '.0f')} |")


if __name__ == "__main__":
    main()
