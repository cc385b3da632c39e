"""XLA:CPU vs PyTorch dense matmul throughput for the GPT peer benchmark's shapes, one process.

    python benchmarks/peers/matmul_probe.py [--repeats 3] [--iters 20]

Tests the claim "the GPT step is slower in JAX because XLA:CPU's matmuls are slower": each shape
is a jitted `a @ b` (float32) against `torch.mm`, 2 threads each, interleaved repeats, GFLOP/s
as 2*M*K*N / time. Shapes: (B*L, D) x (D, F) and friends for batch 16, seq 256, d_model 256,
d_ff 1024.
"""

import argparse
import os
import statistics
import time

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # see compare.py

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import torch  # noqa: E402

SHAPES = [(1024, 1024, 1024), (4096, 256, 1024), (4096, 1024, 256), (4096, 256, 768)]


def jax_gflops(m: int, k: int, n: int, iters: int) -> float:
    a, b = jnp.ones((m, k), jnp.float32), jnp.ones((k, n), jnp.float32)
    f = jax.jit(lambda a, b: a @ b)
    f(a, b).block_until_ready()
    start = time.perf_counter()
    for _ in range(iters):
        out = f(a, b)
    out.block_until_ready()
    return 2 * m * k * n * iters / (time.perf_counter() - start) / 1e9


def torch_gflops(m: int, k: int, n: int, iters: int) -> float:
    a, b = torch.ones(m, k), torch.ones(k, n)
    torch.mm(a, b)
    start = time.perf_counter()
    for _ in range(iters):
        torch.mm(a, b)
    return 2 * m * k * n * iters / (time.perf_counter() - start) / 1e9


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--iters", type=int, default=20)
    args = parser.parse_args()
    torch.set_num_threads(2)
    print("| M x K x N | XLA GFLOP/s | torch GFLOP/s | XLA / torch |")
    print("|---|---|---|---|")
    for shape in SHAPES:
        j, t = [], []
        for r in range(args.repeats):
            order = (jax_gflops, torch_gflops) if r % 2 == 0 else (torch_gflops, jax_gflops)
            for fn in order:
                (j if fn is jax_gflops else t).append(fn(*shape, args.iters))
        mj, mt = statistics.median(j), statistics.median(t)
        print(f"| {' x '.join(map(str, shape))} | {mj:.1f} | {mt:.1f} | {mj / mt:.2f} |")
    print(f"jax {jax.__version__}, torch {torch.__version__}, load {os.getloadavg()}")


if __name__ == "__main__":
    main()
