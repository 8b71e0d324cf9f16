"""Qwen3Embeddings: LangChain's Embeddings contract over the core, with the Qwen3 query recipe."""

from __future__ import annotations

import asyncio
import inspect
import json
import threading
from pathlib import Path

import numpy as np
import pytest
from langchain_core.embeddings import Embeddings
from pydantic import ValidationError

from langchain_qwen3 import Qwen3Embeddings
from qwen3_rag import DEFAULT_INSTRUCTION, STS_INSTRUCTION, Qwen3Embedder, format_query
from tests.langchain.texts import PASSAGES, QUERY


def close(a, b) -> None:
    np.testing.assert_allclose(np.asarray(a, dtype=np.float32), np.asarray(b, dtype=np.float32), atol=1e-5)


# -- the Qwen3 recipe ------------------------------------------------------------------------------------


def test_defaults_are_the_model_card_settings():
    fields = Qwen3Embeddings.model_fields
    assert fields["model"].default == "Qwen/Qwen3-Embedding-0.6B"
    assert fields["query_instruction"].default == (
        "Given a web search query, retrieve relevant passages that answer the query"
    )
    assert fields["dimensions"].default is None
    assert fields["max_length"].default == 8192
    assert fields["batch_size"].default == 32


def test_query_gets_the_card_instruction_with_the_newline_intact(qwen_embedding_path: Path):
    """Real vocabulary: ``\\n`` is its own token there, so a newline turned into a space changes the vector."""
    embeddings = Qwen3Embeddings(model=qwen_embedding_path, device="cpu")
    core = Qwen3Embedder(qwen_embedding_path, device="cpu")
    card = f"Instruct: {DEFAULT_INSTRUCTION}\nQuery:{QUERY}"  # spelled out here, not taken from the package
    vector = embeddings.embed_query(QUERY)
    close(vector, core.embed([card], instruction=None)[0])
    flattened = core.embed([card.replace("\n", " ")], instruction=None)[0]
    assert not np.allclose(vector, flattened, atol=1e-3)
    with_space = core.embed([f"Instruct: {DEFAULT_INSTRUCTION}\nQuery: {QUERY}"], instruction=None)[0]
    assert not np.allclose(vector, with_space, atol=1e-3)


def test_documents_get_no_instruction(embeddings, core_embedder):
    vectors = embeddings.embed_documents(PASSAGES)
    close(vectors, core_embedder.embed(PASSAGES, instruction=None))
    assert not np.allclose(embeddings.embed_query(PASSAGES[0]), vectors[0], atol=1e-3)


def test_vectors_equal_the_core_for_the_same_settings(tiny_embedding_path):
    settings = {"dimensions": 48, "max_length": 12, "batch_size": 2}
    embeddings = Qwen3Embeddings(model=tiny_embedding_path, device="cpu", query_instruction=STS_INSTRUCTION, **settings)
    core = Qwen3Embedder(tiny_embedding_path, device="cpu", instruction=STS_INSTRUCTION, **settings)
    close(embeddings.embed_documents(PASSAGES), core.embed_documents(PASSAGES))
    close(embeddings.embed_query(QUERY), core.embed_queries([QUERY])[0])
    close(embeddings.embed_query(QUERY), core.embed([format_query(QUERY, STS_INSTRUCTION)], instruction=None)[0])


def test_query_instruction_none_embeds_the_query_as_it_is(tiny_embedding_path, core_embedder):
    bare = Qwen3Embeddings(model=tiny_embedding_path, device="cpu", query_instruction=None)
    close(bare.embed_query(QUERY), core_embedder.embed_documents([QUERY])[0])


def test_query_instruction_set_later_applies_to_the_next_query(tiny_embedding_path, core_embedder):
    embeddings = Qwen3Embeddings(model=tiny_embedding_path, device="cpu")
    embeddings.query_instruction = STS_INSTRUCTION
    close(embeddings.embed_query(QUERY), core_embedder.embed_queries([QUERY], instruction=STS_INSTRUCTION)[0])


def test_newlines_inside_texts_reach_the_model(embeddings, core_embedder):
    text = "first line\nsecond line"
    vector = embeddings.embed_documents([text])[0]
    close(vector, core_embedder.embed_documents([text])[0])
    assert not np.allclose(vector, embeddings.embed_documents(["first line second line"])[0])
    close(embeddings.embed_query(text), core_embedder.embed_queries([text])[0])


def test_empty_query_embeds_to_a_unit_vector(tiny_embedding_path, embeddings):
    for model in (embeddings, Qwen3Embeddings(model=tiny_embedding_path, device="cpu", query_instruction=None)):
        vector = model.embed_query("")
        assert len(vector) == 64
        assert np.isclose(np.linalg.norm(vector), 1.0, atol=1e-5)


def test_matryoshka_dimensions_give_shorter_unit_vectors(tiny_embedding_path, core_embedder):
    short = Qwen3Embeddings(model=tiny_embedding_path, device="cpu", dimensions=32)
    vectors = np.asarray(short.embed_documents(PASSAGES))
    assert vectors.shape == (len(PASSAGES), 32)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    full = core_embedder.embed_documents(PASSAGES)
    renormalised = full[:, :32] / np.linalg.norm(full[:, :32], axis=1, keepdims=True)
    close(vectors, renormalised)
    assert len(short.embed_query(QUERY)) == 32


def test_results_are_plain_python_lists_of_floats(embeddings):
    vectors = embeddings.embed_documents(PASSAGES[:2])
    assert type(vectors) is list and all(type(v) is list for v in vectors)
    assert all(type(x) is float for v in vectors for x in v)
    query = embeddings.embed_query(QUERY)
    assert type(query) is list and type(query[0]) is float
    json.dumps([query, *vectors])  # stores can serialise them as they are


def test_no_documents_give_no_vectors(embeddings):
    assert embeddings.embed_documents([]) == []


def test_non_string_inputs_are_type_errors_naming_the_position(embeddings):
    with pytest.raises(TypeError, match=r"texts\[1\]"):
        embeddings.embed_documents(["fine", 3])  # type: ignore[list-item]
    with pytest.raises(TypeError, match="single str"):
        embeddings.embed_documents("a lone string")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="text must be a str"):
        embeddings.embed_query(["a list"])  # type: ignore[arg-type]


# -- async ----------------------------------------------------------------------------------------------


async def test_async_methods_equal_the_sync_ones(embeddings):
    close(await embeddings.aembed_query(QUERY), embeddings.embed_query(QUERY))
    close(await embeddings.aembed_documents(PASSAGES), embeddings.embed_documents(PASSAGES))


@pytest.mark.parametrize(("method", "argument"), [("aembed_query", QUERY), ("aembed_documents", PASSAGES)])
async def test_async_methods_run_the_model_off_the_event_loop(embeddings, monkeypatch, method, argument):
    """The model call blocks until the event loop itself releases it: only possible if it runs elsewhere."""
    release = threading.Event()
    threads: list[int] = []

    def blocking(original):
        def call(self, *args, **kwargs):
            threads.append(threading.get_ident())
            if not release.wait(timeout=5):
                raise AssertionError("the event loop was blocked while the model ran")
            return original(self, *args, **kwargs)

        return call

    monkeypatch.setattr(Qwen3Embedder, "embed", blocking(Qwen3Embedder.embed))
    task = asyncio.create_task(getattr(embeddings, method)(argument))
    for _ in range(500):  # the loop keeps running while the model call is in progress
        if threads:
            break
        await asyncio.sleep(0.01)
    release.set()
    result = await task
    assert threads and threads[0] != threading.get_ident()
    assert len(result) == (64 if method == "aembed_query" else len(PASSAGES))


async def test_concurrent_async_calls_each_get_their_own_vectors(embeddings):
    queries = [f"question number {i} about {PASSAGES[i % len(PASSAGES)]}" for i in range(8)]
    expected_queries = [embeddings.embed_query(q) for q in queries]
    expected_docs = embeddings.embed_documents(PASSAGES)
    results = await asyncio.gather(
        *(embeddings.aembed_query(q) for q in queries),
        embeddings.aembed_documents(PASSAGES),
        embeddings.aembed_documents(PASSAGES[::-1]),
    )
    for got, want in zip(results[: len(queries)], expected_queries, strict=True):
        close(got, want)
    close(results[-2], expected_docs)
    close(results[-1], expected_docs[::-1])


# -- one model per (model, device, dtype) -----------------------------------------------------------------


def test_instances_share_one_loaded_model_with_each_other_and_the_core(tiny_embedding_path, embeddings, core_embedder):
    other = Qwen3Embeddings(model_name=str(tiny_embedding_path), device="cpu", dtype="float32", dimensions=32)
    via_path = Qwen3Embeddings(model=Path(tiny_embedding_path), device="cpu", batch_size=4)
    loaded = embeddings._core._loaded
    assert other._core._loaded is loaded
    assert via_path._core._loaded is loaded
    assert core_embedder._loaded is loaded
    bf16 = Qwen3Embeddings(model=tiny_embedding_path, device="cpu", dtype="bfloat16")
    assert bf16._core._loaded is not loaded


def test_shares_the_loaded_model_with_the_llama_index_adapter(tiny_embedding_path, embeddings):
    from llama_index_qwen3 import Qwen3Embedding

    llama = Qwen3Embedding(model_name=str(tiny_embedding_path), device="cpu")
    assert llama.embedder._loaded is embeddings._core._loaded
    close(llama.get_query_embedding(QUERY), embeddings.embed_query(QUERY))
    close(llama.get_text_embedding(PASSAGES[0]), embeddings.embed_documents([PASSAGES[0]])[0])


# -- pydantic config ---------------------------------------------------------------------------------------


def test_is_a_langchain_embeddings_model(embeddings):
    assert isinstance(embeddings, Embeddings)


def test_model_accepts_the_model_name_alias_and_path_objects(tiny_embedding_path):
    for kwargs in ({"model": str(tiny_embedding_path)}, {"model_name": str(tiny_embedding_path)},
                   {"model": Path(tiny_embedding_path)}):  # fmt: skip
        assert Qwen3Embeddings(device="cpu", **kwargs).model == str(tiny_embedding_path)


@pytest.mark.parametrize("misspelt", ["dimension", "instruction", "model_path", "normalize"])
def test_a_misspelt_argument_is_an_error(tiny_embedding_path, misspelt):
    with pytest.raises(ValidationError, match=misspelt):
        Qwen3Embeddings(model=tiny_embedding_path, device="cpu", **{misspelt: 1})


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"dimensions": 16}, "dimensions must be an integer between 32 and 64"),
        ({"dimensions": 65}, "dimensions must be an integer between 32 and 64"),
        ({"batch_size": 0}, "batch_size"),
        ({"max_length": 1}, "max_length"),
        ({"dtype": "int4"}, "dtype"),
    ],
)
def test_invalid_settings_fail_at_construction(tiny_embedding_path, kwargs, message):
    with pytest.raises(ValidationError, match=message):
        Qwen3Embeddings(model=tiny_embedding_path, device="cpu", **kwargs)


def test_torch_objects_are_stored_as_strings(tiny_embedding_path):
    import torch

    embeddings = Qwen3Embeddings(model=tiny_embedding_path, device=torch.device("cpu"), dtype=torch.float32)
    assert (embeddings.device, embeddings.dtype) == ("cpu", "float32")


def test_fields_that_choose_the_model_are_frozen(embeddings):
    for field, value in [("model", "other"), ("dimensions", 32), ("device", "cuda"), ("dtype", "float16"),
                         ("batch_size", 1), ("max_length", 16)]:  # fmt: skip
        with pytest.raises(ValidationError, match="frozen"):
            setattr(embeddings, field, value)


def test_assigning_the_query_instruction_builds_no_new_core_and_applies_at_once(tiny_embedding_path, core_embedder):
    embeddings = Qwen3Embeddings(model=str(tiny_embedding_path), device="cpu")
    core = embeddings._core
    embeddings.query_instruction = "Find recipes"
    assert embeddings._core is core
    close(embeddings.embed_query("bread"), core_embedder.embed_queries(["bread"], instruction="Find recipes")[0])


def test_the_model_object_is_not_part_of_dump_or_repr(embeddings, tiny_embedding_path):
    dumped = embeddings.model_dump()
    assert set(dumped) == set(Qwen3Embeddings.model_fields)
    assert dumped["model"] == str(tiny_embedding_path)
    json.dumps(dumped)
    assert embeddings.model_dump(by_alias=True)["model_name"] == str(tiny_embedding_path)
    text = repr(embeddings)
    assert text.startswith("Qwen3Embeddings(") and "Qwen3Embedder" not in text and "Qwen3Model" not in text
    assert len(text) < 400


def test_every_field_is_documented():
    for name, field in Qwen3Embeddings.model_fields.items():
        assert field.description and len(field.description) > 15, name


def test_class_docstring_has_the_langchain_sections():
    doc = inspect.getdoc(Qwen3Embeddings)
    positions = [doc.index(s) for s in ("Setup:", "Key init args", "Instantiate:", "Embed single text:",
                                        "Embed multiple texts:", "Async:")]  # fmt: skip
    assert positions == sorted(positions)


async def test_class_docstring_snippets_run(run_docstring_code):
    namespace = await run_docstring_code(Qwen3Embeddings)
    assert isinstance(namespace["embeddings"], Qwen3Embeddings)
    assert len(namespace["vector"]) == 64  # the tiny model's hidden size
    assert np.asarray(namespace["vectors"]).shape == (2, 64)
    close(namespace["query_vector"], namespace["vector"])
    assert np.asarray(namespace["document_vectors"]).shape == (1, 64)
