"""One decoder linear layer on CPU: ``nn.Linear`` vs qwen3-rag's oneDNN pre-packed linear, by batch size.

    python benchmarks/bench_linear.py [--tokens 1 18 37 512 4096] [--repeats 5] [--threads N]

The layer is Qwen3-0.6B's MLP gate/up projection (1024 -> 3072, no bias), fp32, random weights. Each row is
``--tokens`` tokens through the same weights, both modules interleaved round by round; GFLOP/s = 2 x tokens x
1024 x 3072 / median seconds. 18 tokens is a query after the cached instruction prefix, 37 the same query in
full, 512-4096 document batches. The evidence behind ``qwen3_rag/_cpu_linear.py``; no model, seconds to run.
"""

from __future__ import annotations

import common
import torch

IN_FEATURES, OUT_FEATURES = 1024, 3072


def main() -> None:
    parser = common.base_parser(__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, nargs="+", default=[1, 18, 37, 512, 4096])
    parser.add_argument("--repeats", type=int, default=5, help="interleaved timed rounds (default 5)")
    args = parser.parse_args()
    threads = common.set_threads(args.threads)

    from qwen3_rag._cpu_linear import PackedLinear

    torch.manual_seed(common.SEED)
    linear = torch.nn.Linear(IN_FEATURES, OUT_FEATURES, bias=False).eval()
    packed = PackedLinear(linear)
    rows, result = [], {}
    for tokens in args.tokens:
        x = torch.randn(1, tokens, IN_FEATURES)
        calls = max(1, round(2e9 / (2 * tokens * IN_FEATURES * OUT_FEATURES)))  # ~2 GFLOP per timing

        def loop(module, x=x, calls=calls):
            def run():
                with torch.inference_mode():
                    for _ in range(calls):
                        module(x)

            return run

        with torch.inference_mode():
            diff = ((packed(x) - linear(x)).abs().max() / linear(x).abs().max()).item()
        times = common.interleaved({"nn.Linear": loop(linear), "packed": loop(packed)}, repeats=args.repeats, log=False)
        flops = calls * 2 * tokens * IN_FEATURES * OUT_FEATURES
        plain, fast = (flops / common.median(times[name]) / 1e9 for name in ("nn.Linear", "packed"))
        rows.append([tokens, f"{plain:.0f}", f"{fast:.0f}", f"{fast / plain:.2f}x", f"{diff:.1e}"])
        result[str(tokens)] = {"nn_linear_gflops": plain, "packed_gflops": fast, "max_rel_diff": diff, "times": times}
        print(f"  {tokens:>5} tokens: nn.Linear {plain:.0f}, packed {fast:.0f} GFLOP/s", flush=True)

    md = "\n\n".join(
        [
            f"{IN_FEATURES} -> {OUT_FEATURES} linear (the MLP's gate/up projection), fp32, {threads} threads, "
            f"{args.repeats} interleaved rounds, median.",
            common.table(
                ["tokens", "nn.Linear GFLOP/s", "packed oneDNN GFLOP/s", "speed-up", "max relative difference"], rows
            ),
        ]
    )
    common.save_results("linear", {"threads": threads, "tokens": result, "markdown": md}, args.out)


if __name__ == "__main__":
    main()
