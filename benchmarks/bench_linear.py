"""One decoder linear layer on CPU: ``nn.Linear`` vs qwen3-rag's oneDNN pre-packed linear, by batch size, in fp32,
bf16 and int8.

    python benchmarks/bench_linear.py [--tokens 1 18 37 512 4096] [--repeats 5] [--threads N]

The layer is Qwen3-0.6B's MLP gate/up projection (1024 -> 3072, no bias), random weights. Each row is
``--tokens`` tokens through the same weights, every module interleaved round by round; GFLOP/s = 2 x tokens x
1024 x 3072 / median seconds. 18 tokens is a query after the cached instruction prefix, 37 the same query in
full, 512-4096 document batches. fp32 and bf16: ``nn.Linear`` and the packed oneDNN linear
(``qwen3_rag/_cpu_linear.py``); int8: qwen3-rag's int8 layer (``qwen3_rag/_quantize.py``, its per-token
activation quantisation included). The evidence behind both modules; no model, seconds to run.
"""

from __future__ import annotations

import common
import torch

IN_FEATURES, OUT_FEATURES = 1024, 3072
HEADER = ["tokens", "fp32 nn.Linear GFLOP/s", "fp32 packed oneDNN GFLOP/s", "speed-up", "max relative difference",
          "bf16 nn.Linear", "bf16 packed", "int8 (qwen3-rag)", "int8 error"]  # fmt: skip


def main() -> None:
    parser = common.base_parser(__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, nargs="+", default=[1, 18, 37, 512, 4096])
    parser.add_argument("--repeats", type=int, default=5, help="interleaved timed rounds (default 5)")
    args = parser.parse_args()
    threads = common.set_threads(args.threads)

    from qwen3_rag._cpu_linear import PackedLinear
    from qwen3_rag._precision import cpu_capability
    from qwen3_rag._quantize import make_int8_linear

    torch.manual_seed(common.SEED)
    linear = torch.nn.Linear(IN_FEATURES, OUT_FEATURES, bias=False).eval()
    packed = PackedLinear(linear)
    linear_bf16 = torch.nn.Linear(IN_FEATURES, OUT_FEATURES, bias=False).to(torch.bfloat16).eval()
    with torch.no_grad():
        linear_bf16.weight.copy_(linear.weight)
    packed_bf16 = PackedLinear(linear_bf16)
    int8 = make_int8_linear(linear)
    extra = {"bf16 nn.Linear": linear_bf16, "bf16 packed": packed_bf16, "int8": int8}
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

        xb = x.to(torch.bfloat16)

        def loop_bf16(module, x=xb, calls=calls):
            return loop(module, x, calls)

        with torch.inference_mode():
            diff = ((packed(x) - linear(x)).abs().max() / linear(x).abs().max()).item()
            int8_err = ((int8(x) - linear(x)).norm() / linear(x).norm()).item()
        fns = {"nn.Linear": loop(linear), "packed": loop(packed)}
        fns.update({name: (loop_bf16(m) if name.startswith("bf16") else loop(m)) for name, m in extra.items()})
        times = common.interleaved(fns, repeats=args.repeats, log=False)
        flops = calls * 2 * tokens * IN_FEATURES * OUT_FEATURES
        gflops = {name: flops / common.median(times[name]) / 1e9 for name in fns}
        plain, fast = gflops["nn.Linear"], gflops["packed"]
        rows.append([tokens, f"{plain:.0f}", f"{fast:.0f}", f"{fast / plain:.2f}x", f"{diff:.1e}",
                     f"{gflops['bf16 nn.Linear']:.0f}", f"{gflops['bf16 packed']:.0f}", f"{gflops['int8']:.0f}",
                     f"{int8_err:.1e}"])  # fmt: skip
        result[str(tokens)] = {"nn_linear_gflops": plain, "packed_gflops": fast, "max_rel_diff": diff, "times": times,
                               "gflops": gflops, "int8_rel_error": int8_err}  # fmt: skip
        print(f"  {tokens:>5} tokens: nn.Linear {plain:.0f}, packed {fast:.0f} GFLOP/s", flush=True)

    md = "\n\n".join(
        [
            f"{IN_FEATURES} -> {OUT_FEATURES} linear (the MLP's gate/up projection), {threads} threads, "
            f"{args.repeats} interleaved rounds, median. CPU: {cpu_capability().describe()}. int8 error: relative "
            "L2 distance to the fp32 layer's output (per-token int8 activations, int8 weights per channel).",
            common.table(HEADER, rows),
        ]
    )
    common.save_results("linear", {"threads": threads, "tokens": result, "markdown": md}, args.out)


if __name__ == "__main__":
    main()
