"""The public surface of llama_index_qwen3: what users import, and nothing else by accident."""

import llama_index_qwen3


def test_public_names_are_exactly_the_documented_ones():
    assert sorted(llama_index_qwen3.__all__) == [
        "DEFAULT_EMBED_BATCH_SIZE",
        "Qwen3Embedding",
        "Qwen3Rerank",
        "RETRIEVAL_SCORE_KEY",
    ]
    assert all(hasattr(llama_index_qwen3, name) for name in llama_index_qwen3.__all__)
