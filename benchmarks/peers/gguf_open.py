"""Time gguf-py (llama.cpp's Python reader) opening and indexing a GGUF file, the peer of
benchmarks/bench_gguf_open.cpp.   $(scripts/peers)/bin/python benchmarks/peers/gguf_open.py MODEL"""
import sys
import time

import gguf


def main() -> None:
    path = sys.argv[1]
    best = float("inf")
    for _ in range(3):
        t0 = time.perf_counter()
        r = gguf.GGUFReader(path)
        n = len(r.tensors), len(r.fields)
        best = min(best, time.perf_counter() - t0)
    print(f"gguf-py {gguf.__version__ if hasattr(gguf, '__version__') else ''}: open+index {best * 1e3:.1f} ms "
          f"(best of 3), {n[0]} tensors, {n[1]} fields")


if __name__ == "__main__":
    main()
