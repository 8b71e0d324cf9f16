"""Hardware efficiency: the embedder's achieved FLOP/s on long batches over this machine's measured fp32 GEMM
FLOP/s (torch.mm), measured interleaved so both see the same machine load.

    python benchmarks/bench_efficiency.py [--layers 2] [--docs 16] [--doc-tokens 1024] [--repeats 3]

Model FLOPs per call (forward only, multiply-add = 2 FLOPs):

    2 * P * T  +  2 * L * (n_heads * head_dim) * sum_i s_i^2

P: parameters of the decoder layers (the input embedding is a lookup, the embedder has no output head);
T: tokens, padding included (computed is computed); L: layers; s_i: padded length of each row. The second
term is QK^T and AV under the causal mask (half of the 4 * L * d * s^2 of a full square). Achieved FLOP/s =
model FLOPs / wall time of ``Qwen3Embedder.embed_documents`` (tokenization and pooling included). The GEMM
reference is the best size-median of two fp32 GEMMs on n x n matrices, n in --gemm-sizes: ``torch.mm`` (MKL)
and oneDNN's linear with a pre-packed weight (what qwen3-rag's CPU linear layers run, see
``qwen3_rag/_cpu_linear.py``), so the kernel the embedder uses cannot beat its own reference. The
"transformers forward" row runs the same batches through a plain ``AutoModel`` (``nn.Linear``) of the same
checkpoint.
"""

from __future__ import annotations

import common
import torch

TARGET = 0.70


def gemm_loop(n: int, repeats: int):
    """``repeats`` products of two n x n fp32 matrices."""
    a, b, c = torch.randn(n, n), torch.randn(n, n), torch.empty(n, n)

    def run():
        for _ in range(repeats):
            torch.mm(a, b, out=c)

    return run


def packed_linear_loop(n: int, repeats: int):
    """``repeats`` n x n fp32 products through oneDNN's linear with a pre-packed n x n weight."""
    x = torch.randn(n, n)
    weight = torch.ops.mkldnn._reorder_linear_weight(torch.randn(n, n))

    def run():
        for _ in range(repeats):
            torch.ops.mkldnn._linear_pointwise(x, weight, None, "none", [], "")

    return run


def model_flops(model, rows: list[int]) -> tuple[float, dict[str, float]]:
    """FLOPs of one forward over rows of the given (padded) lengths, by the formula in the module docstring."""
    config = model.config
    params = sum(p.numel() for name, p in model.named_parameters() if "embed_tokens" not in name)
    tokens = sum(rows)
    d_attn = config.num_attention_heads * config.head_dim
    dense = 2 * params * tokens
    attention = 2 * config.num_hidden_layers * d_attn * sum(s * s for s in rows)
    return dense + attention, {"params": params, "tokens": tokens, "dense": dense, "attention": attention}


def main() -> None:
    parser = common.base_parser(__doc__.splitlines()[0])
    parser.add_argument("--docs", type=int, default=16, help="long documents per call (default 16)")
    parser.add_argument("--doc-tokens", type=int, default=1024, help="tokens per document (default 1024)")
    parser.add_argument("--repeats", type=int, default=3, help="interleaved timed rounds (default 3)")
    parser.add_argument("--gemm-sizes", type=int, nargs="+", default=[1024, 2048, 4096])
    parser.add_argument(
        "--budgets",
        type=int,
        nargs="*",
        default=[],
        help="side experiment: also qwen3-rag with these max_batch_tokens (batch_size 1024)",
    )
    args = parser.parse_args()
    threads = common.set_threads(args.threads)
    ck = common.checkpoints(args.layers)

    from transformers import AutoModel

    from qwen3_rag import Qwen3Embedder
    from qwen3_rag._batching import plan_batches, token_budget

    emb = Qwen3Embedder(ck.embedding, device="cpu", show_progress=False)
    model = AutoModel.from_pretrained(ck.embedding, dtype=torch.float32, attn_implementation="sdpa").eval()
    docs = common.long_documents(args.docs, args.doc_tokens)
    lengths = [len(ids) for ids in emb.tokenize(docs)]
    plan = plan_batches(lengths, emb.batch_size, token_budget(emb.max_batch_tokens, emb.device))
    padded_rows = [max(lengths[i] for i in batch) for batch in plan for _ in batch]
    flops, parts = model_flops(model, padded_rows)
    print(
        f"efficiency: {ck.layers} layers, {threads} threads, {common.describe_lengths(lengths)}, "
        f"{len(plan)} batches, {flops / 1e12:.2f} TFLOP per call"
    )

    # the same batches straight through the transformers module: what the wrapper costs on top
    def raw_forward():
        with torch.inference_mode():
            for batch in plan:
                width = max(lengths[i] for i in batch)
                model(input_ids=torch.randint(0, 151000, (len(batch), width)))

    reps = {n: max(1, round(3e11 / (2 * n**3))) for n in args.gemm_sizes}  # ~0.3 TFLOP per timing
    gemms = {f"torch.mm {n}x{n}": (n, gemm_loop(n, reps[n])) for n in args.gemm_sizes}
    if torch.backends.mkldnn.is_available():
        gemms |= {f"oneDNN packed linear {n}x{n}": (n, packed_linear_loop(n, reps[n])) for n in args.gemm_sizes}
    fns = {name: run for name, (_, run) in gemms.items()}
    fns["qwen3-rag embed_documents"] = lambda: emb.embed_documents(docs)
    fns["transformers forward, same batches"] = raw_forward
    side = {}
    for budget in args.budgets:
        variant = Qwen3Embedder(ck.embedding, device="cpu", show_progress=False, batch_size=1024,
                                max_batch_tokens=budget)  # fmt: skip
        v_plan = plan_batches(lengths, variant.batch_size, budget)
        v_flops, _ = model_flops(model, [max(lengths[i] for i in b) for b in v_plan for _ in b])
        name = f"qwen3-rag, max_batch_tokens={budget}"
        side[name] = v_flops
        fns[name] = lambda v=variant: v.embed_documents(docs)
    times = common.interleaved(fns, repeats=args.repeats)

    gemm = {name: reps[n] * 2 * n**3 / common.median(times[name]) for name, (n, _) in gemms.items()}
    peak = max(gemm.values())
    achieved = flops / common.median(times["qwen3-rag embed_documents"])
    raw = flops / common.median(times["transformers forward, same batches"])
    rows = [[name, f"{g / 1e9:.1f}", common.spread(times[name]), f"{100 * g / peak:.0f}%"] for name, g in gemm.items()]
    rows += [
        [
            "qwen3-rag embed_documents",
            f"{achieved / 1e9:.1f}",
            common.spread(times["qwen3-rag embed_documents"]),
            f"{100 * achieved / peak:.0f}%",
        ],
        [
            "transformers forward (plain nn.Linear), same batches",
            f"{raw / 1e9:.1f}",
            common.spread(times["transformers forward, same batches"]),
            f"{100 * raw / peak:.0f}%",
        ],
    ]
    for name, v_flops in side.items():
        v = v_flops / common.median(times[name])
        rows.append(
            [name + " (side experiment)", f"{v / 1e9:.1f}", common.spread(times[name]), f"{100 * v / peak:.0f}%"]
        )
    ratio = achieved / peak
    md = "\n\n".join(
        [
            f"{args.docs} documents of ~{args.doc_tokens} tokens ({common.describe_lengths(lengths)}) in {len(plan)} "
            f"qwen3-rag batches, {ck.layers} of 28 layers, fp32, {threads} threads, {args.repeats} interleaved rounds. "
            f"Model FLOPs = 2 x {parts['params']:,} layer parameters x {parts['tokens']:,} tokens "
            f"+ 2 x layers x heads x head_dim x sum(s^2) (causal attention) = {flops / 1e12:.3f} TFLOP "
            f"({100 * parts['attention'] / flops:.0f}% attention).",
            common.table(["what", "GFLOP/s", "±", "of best GEMM"], rows),
            common.table(
                ["target", "measured", "verdict"],
                [[f"embedder >= {TARGET:.0%} of fp32 GEMM FLOP/s", f"{ratio:.0%}", common.verdict(ratio >= TARGET)]],
            ),
        ]
    )
    result = {
        "layers": ck.layers,
        "threads": threads,
        "docs": args.docs,
        "doc_tokens": args.doc_tokens,
        "flops": parts | {"total": flops},
        "gemm_flops_per_s": gemm,
        "achieved_flops_per_s": achieved,
        "raw_forward_flops_per_s": raw,
        "fraction_of_gemm": ratio,
        "times": times,
        "markdown": md,
    }
    common.save_results("efficiency", result, args.out)


if __name__ == "__main__":
    main()
