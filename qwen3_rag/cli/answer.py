"""``qwen3-rag ask``: a local chat model (transformers) answers from the retrieved passages, citing them."""

from __future__ import annotations

import json
import os
import re
import threading
from collections.abc import Sequence
from typing import Any, TextIO

from qwen3_rag._cpu_linear import pack_linear_layers
from qwen3_rag._loading import ModelLoadError, load_causal_lm, locate_checkpoint, resolve_device, resolve_dtype
from qwen3_rag._validation import check_model_name
from qwen3_rag.cli.console import Console
from qwen3_rag.cli.errors import UsageError
from qwen3_rag.cli.options import Resolved
from qwen3_rag.cli.search import hit_json, retrieve, score_line

DEFAULT_LLM = "Qwen/Qwen3-0.6B"
"""A small Qwen3 chat model; any transformers chat model with a chat template works (``--llm``)."""

SYSTEM_PROMPT = (
    "You answer questions using only the numbered context passages the user gives you. "
    "Cite every passage you use by its number in square brackets, like [1] or [2][3]. "
    "If the passages do not contain the answer, say that you do not know. Be concise."
)

_THINK = re.compile(r"<think>.*?(</think>|$)", re.DOTALL)


def build_messages(question: str, passages: Sequence[tuple[str, str]]) -> list[dict[str, str]]:
    """The chat: a system prompt asking for cited answers, then the passages as ``[n] (source)`` blocks and the
    question. ``passages`` holds ``(source label, text)`` pairs, best first; ``[n]`` is their 1-based position."""
    blocks = [f"[{n}] (source: {label})\n{text.strip()}" for n, (label, text) in enumerate(passages, start=1)]
    context = "\n\n".join(blocks) if blocks else "(no passages were found)"
    user = f"Context passages:\n\n{context}\n\nQuestion: {question.strip()}"
    return [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": user}]


def cited_numbers(answer: str, count: int) -> list[int]:
    """The passage numbers ``[n]`` the answer cites, in order of first citation, within 1..count."""
    seen: dict[int, None] = {}
    for match in re.finditer(r"\[(\d+(?:\s*,\s*\d+)*)\]", answer):
        for number in re.split(r"\s*,\s*", match.group(1)):
            if 1 <= int(number) <= count:
                seen.setdefault(int(number))
    return list(seen)


def strip_thinking(text: str) -> str:
    """Drop a ``<think>...</think>`` block that a reasoning model may write before its answer."""
    return _THINK.sub("", text).strip()


CHAT_MODEL = "the --llm chat model"
"""How messages name the chat model."""


class ChatModel:
    """A transformers causal LM with a chat template, greedy decoding, loaded once."""

    def __init__(self, model: str | os.PathLike, *, device: str | None = None, dtype: str | None = None) -> None:
        """``dtype``: a float dtype or ``None`` for the device's default; ``"int8"`` (the embedding and reranker
        CPU mode) is refused -- the CLI gives the chat model its float default instead."""
        self.model_name = check_model_name(model)
        self.device = resolve_device(device)
        if isinstance(dtype, str) and dtype.strip().lower() == "int8":
            raise ValueError("the chat model runs in a float dtype (float32, bfloat16, float16 or None), not int8")
        self.dtype = resolve_dtype(dtype, self.device)
        self.model, self.tokenizer = load_causal_lm(
            self.model_name,
            device=self.device,
            dtype=self.dtype,
            what=CHAT_MODEL,
            fix="Pass --llm (or QWEN3_RAG_LLM) as a local folder holding a transformers causal LM with a chat "
            f"template, or a Hub id such as {DEFAULT_LLM!r} with network access.",
            example=DEFAULT_LLM,
        )
        if getattr(self.tokenizer, "chat_template", None) is None:
            raise ModelLoadError(
                f"{self.model_name!r} has no chat template: --llm needs an instruction-tuned chat model"
            )
        self.model.to(self.device).eval()
        pack_linear_layers(self.model, self.device, self.dtype)  # CPU decoding: one token per step, GEMV-sized

    def generate(
        self, messages: list[dict[str, str]], *, max_new_tokens: int = 512, stream: TextIO | None = None
    ) -> str:
        """The model's reply to ``messages`` (thinking switched off where the template supports it)."""
        import torch
        from transformers import TextIteratorStreamer

        inputs = self.tokenizer.apply_chat_template(
            messages, add_generation_prompt=True, return_tensors="pt", return_dict=True, enable_thinking=False
        ).to(self.device)
        kwargs: dict[str, Any] = {
            **inputs,
            "max_new_tokens": max_new_tokens,
            "do_sample": False,
            "temperature": None,
            "top_p": None,
            "top_k": None,
        }
        if self.tokenizer.pad_token_id is not None:
            kwargs["pad_token_id"] = self.tokenizer.pad_token_id
        if stream is None:
            with torch.inference_mode():
                output = self.model.generate(**kwargs)
            reply = self.tokenizer.decode(output[0, inputs["input_ids"].shape[1] :], skip_special_tokens=True)
            return strip_thinking(reply)
        streamer = TextIteratorStreamer(self.tokenizer, skip_prompt=True, skip_special_tokens=True)
        errors: list[BaseException] = []

        def run() -> None:
            try:
                with torch.inference_mode():
                    self.model.generate(**kwargs, streamer=streamer)
            except BaseException as exc:  # re-raised in the caller's thread
                errors.append(exc)
                streamer.end()

        worker = threading.Thread(target=run, daemon=True)
        worker.start()
        pieces = []
        for piece in streamer:
            pieces.append(piece)
            stream.write(piece)
            stream.flush()
        worker.join()
        if errors:
            raise errors[0]
        return strip_thinking("".join(pieces))


def run_ask(opts: Resolved, console: Console) -> int:
    max_new_tokens = opts.positive("max_new_tokens", 512)
    llm = opts.value("llm", DEFAULT_LLM)
    locate_checkpoint(check_model_name(llm), CHAT_MODEL, DEFAULT_LLM)  # a wrong --llm path: said before searching
    hits, _ = retrieve(opts, console)
    labels = [h.label for h in hits]  # report.pdf p. 3: the model and the reader see pages
    messages = build_messages(opts.args.query, list(zip(labels, [h.text for h in hits], strict=False)))
    console.status(f"Answering from {len(hits)} passages with {llm} ...")
    try:
        chat = ChatModel(llm, device=opts.device(), dtype=opts.chat_dtype())
    except ValueError as exc:
        raise UsageError(str(exc)) from exc
    streaming = not opts.args.json and console.out.isatty()
    answer = chat.generate(messages, max_new_tokens=max_new_tokens, stream=console.out if streaming else None)
    cited = cited_numbers(answer, len(hits))
    if opts.args.json:
        payload = {
            "question": opts.args.query,
            "answer": answer,
            "cited": cited,
            "sources": [hit_json(r, h) for r, h in enumerate(hits, 1)],
            "llm": chat.model_name,
        }
        print(json.dumps(payload, ensure_ascii=False, indent=2), file=console.out)
        return 0
    if not streaming:
        print(answer or "(the model returned no text)", file=console.out)
    print(file=console.out)
    print("Sources:", file=console.out)
    for rank, (hit, label) in enumerate(zip(hits, labels, strict=False), 1):
        mark = "*" if rank in cited else " "
        print(f" {mark}[{rank}] {label}  ({score_line(hit)})", file=console.out)
    if cited:
        print("(* cited in the answer)", file=console.out)
    return 0
