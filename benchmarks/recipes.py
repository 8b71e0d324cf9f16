"""The model cards' transformers recipes, written plainly, as the baselines every peer is compared with.

Qwen3-Embedding: ``AutoModel`` + left padding + ``last_token_pool`` + L2 normalisation.
Qwen3-Reranker: ``AutoModelForCausalLM``, the card's prefix/suffix around one tokenized body, full logits,
``log_softmax`` over the [no, yes] logits at the last position.

``device``/``dtype`` (and ``attn_implementation``) go to ``from_pretrained`` as the cards' GPU notes show;
on the CPU they are left alone (fp32). The only other changes from the cards' snippets: texts are processed
in fixed batches in input order (the cards run their four examples in one batch; a 1,000-document corpus or
a 100-document rerank in one batch needs tens of GB), and the embedding forward runs under
``torch.no_grad()`` as the reranker snippet's does (the embedding snippet has none, which only makes it
slower).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor
from transformers import AutoModel, AutoModelForCausalLM, AutoTokenizer

# ------------------------------------------------------------------------------------ Qwen3-Embedding card


def last_token_pool(last_hidden_states: Tensor, attention_mask: Tensor) -> Tensor:
    left_padding = attention_mask[:, -1].sum() == attention_mask.shape[0]
    if left_padding:
        return last_hidden_states[:, -1]
    else:
        sequence_lengths = attention_mask.sum(dim=1) - 1
        batch_size = last_hidden_states.shape[0]
        return last_hidden_states[torch.arange(batch_size, device=last_hidden_states.device), sequence_lengths]


def get_detailed_instruct(task_description: str, query: str) -> str:
    return f"Instruct: {task_description}\nQuery:{query}"


class EmbeddingRecipe:
    def __init__(
        self, path: str, max_length: int = 8192, batch_size: int = 32, device: str = "cpu", dtype=None, **kwargs
    ) -> None:
        self.tokenizer = AutoTokenizer.from_pretrained(path, padding_side="left")
        self.model = AutoModel.from_pretrained(path, dtype=dtype, **kwargs).to(device)
        self.max_length = max_length
        self.batch_size = batch_size

    @torch.no_grad()
    def embed(self, input_texts: Sequence[str]) -> Tensor:
        out = []
        for start in range(0, len(input_texts), self.batch_size):
            batch_dict = self.tokenizer(
                list(input_texts[start : start + self.batch_size]),
                padding=True,
                truncation=True,
                max_length=self.max_length,
                return_tensors="pt",
            )
            batch_dict.to(self.model.device)
            outputs = self.model(**batch_dict)
            embeddings = last_token_pool(outputs.last_hidden_state, batch_dict["attention_mask"])
            out.append(F.normalize(embeddings, p=2, dim=1).float().cpu())
        return torch.cat(out)

    def embed_queries(self, queries: Sequence[str], task: str) -> Tensor:
        return self.embed([get_detailed_instruct(task, q) for q in queries])


# ------------------------------------------------------------------------------------- Qwen3-Reranker card


def format_instruction(instruction: str | None, query: str, doc: str) -> str:
    if instruction is None:
        instruction = "Given a web search query, retrieve relevant passages that answer the query"
    output = f"<Instruct>: {instruction}\n<Query>: {query}\n<Document>: {doc}"
    return output


class RerankerRecipe:
    def __init__(
        self, path: str, max_length: int = 8192, batch_size: int = 16, device: str = "cpu", dtype=None, **kwargs
    ) -> None:
        self.tokenizer = AutoTokenizer.from_pretrained(path, padding_side="left")
        self.model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype, **kwargs).to(device).eval()
        self.token_false_id = self.tokenizer.convert_tokens_to_ids("no")
        self.token_true_id = self.tokenizer.convert_tokens_to_ids("yes")
        self.max_length = max_length
        self.batch_size = batch_size
        prefix = (
            "<|im_start|>system\nJudge whether the Document meets the requirements based on the Query and the "
            'Instruct provided. Note that the answer can only be "yes" or "no".<|im_end|>\n<|im_start|>user\n'
        )
        suffix = "<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n"
        self.prefix_tokens = self.tokenizer.encode(prefix, add_special_tokens=False)
        self.suffix_tokens = self.tokenizer.encode(suffix, add_special_tokens=False)

    def process_inputs(self, pairs: list[str]):
        inputs = self.tokenizer(
            pairs,
            padding=False,
            truncation="longest_first",
            return_attention_mask=False,
            max_length=self.max_length - len(self.prefix_tokens) - len(self.suffix_tokens),
        )
        for i, ele in enumerate(inputs["input_ids"]):
            inputs["input_ids"][i] = self.prefix_tokens + ele + self.suffix_tokens
        inputs = self.tokenizer.pad(inputs, padding=True, return_tensors="pt", max_length=self.max_length)
        for key in inputs:
            inputs[key] = inputs[key].to(self.model.device)
        return inputs

    @torch.no_grad()
    def compute_logits(self, inputs) -> list[float]:
        batch_scores = self.model(**inputs).logits[:, -1, :]
        true_vector = batch_scores[:, self.token_true_id]
        false_vector = batch_scores[:, self.token_false_id]
        batch_scores = torch.stack([false_vector, true_vector], dim=1)
        batch_scores = torch.nn.functional.log_softmax(batch_scores, dim=1)
        scores = batch_scores[:, 1].exp().tolist()
        return scores

    def pair_ids(self, query: str, documents: Sequence[str], instruction: str | None = None) -> list[list[int]]:
        """The token ids the recipe feeds the model, one list per pair (for checking other peers' prompts)."""
        pairs = [format_instruction(instruction, query, doc) for doc in documents]
        inputs = self.process_inputs(pairs)
        return [
            row[mask.bool()].tolist() for row, mask in zip(inputs["input_ids"], inputs["attention_mask"], strict=True)
        ]

    def score(self, query: str, documents: Sequence[str], instruction: str | None = None) -> list[float]:
        pairs = [format_instruction(instruction, query, doc) for doc in documents]
        scores: list[float] = []
        for start in range(0, len(pairs), self.batch_size):
            inputs = self.process_inputs(pairs[start : start + self.batch_size])
            scores.extend(self.compute_logits(inputs))
        return scores
