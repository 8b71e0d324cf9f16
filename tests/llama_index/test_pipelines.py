"""End to end and offline: Qwen3Embedding and Qwen3Rerank inside LlamaIndex's own pipelines, over an
embedded, persistent Chroma store, with MockLLM standing in for the LLM."""

from __future__ import annotations

import math

import chromadb
import numpy as np
import pytest
from llama_index.core import Document, StorageContext, VectorStoreIndex
from llama_index.core.ingestion import IngestionPipeline
from llama_index.core.llms import MockLLM
from llama_index.core.node_parser import TokenTextSplitter
from llama_index.core.schema import MetadataMode
from llama_index.vector_stores.chroma import ChromaVectorStore

QUERY = "What is the capital of China?"
DOCS = [
    "The capital of China is Beijing.",
    "Gravity is a force that attracts two bodies towards each other.",
    "Paris is the capital and largest city of France.",
    "The cat sat on the mat and purred.",
    "Photosynthesis turns light, water and carbon dioxide into sugar.",
    "Mount Everest is the highest mountain above sea level.",
]


def open_collection(path):
    """A collection in an embedded, on-disk Chroma (cosine space); a new client each call, as after a restart."""
    client = chromadb.PersistentClient(path=str(path), settings=chromadb.Settings(anonymized_telemetry=False))
    return client.get_or_create_collection("qwen3", metadata={"hnsw:space": "cosine"})


def cosine_ranking(core_embedder, query: str, texts: list[str]) -> tuple[list[int], np.ndarray]:
    similarity = core_embedder.embed_documents(texts) @ core_embedder.embed_queries([query])[0]
    return sorted(range(len(texts)), key=lambda i: -similarity[i]), similarity


@pytest.fixture
def chroma_index(tmp_path, embed_model):
    """DOCS indexed with Qwen3Embedding into a persistent Chroma collection, one node per document."""
    store = ChromaVectorStore(chroma_collection=open_collection(tmp_path / "chroma"))
    VectorStoreIndex.from_documents(
        [Document(text=t, id_=f"doc-{i}") for i, t in enumerate(DOCS)],
        storage_context=StorageContext.from_defaults(vector_store=store),
        embed_model=embed_model,
    )
    # reopen from disk: what a retrieval service does after the ingestion job has finished
    reopened = ChromaVectorStore(chroma_collection=open_collection(tmp_path / "chroma"))
    return VectorStoreIndex.from_vector_store(reopened, embed_model=embed_model)


def test_vector_store_index_over_persistent_chroma_stores_document_vectors_and_retrieves_by_query_vector(
    tmp_path, chroma_index, core_embedder
):
    stored = open_collection(tmp_path / "chroma").get(include=["embeddings", "documents"])
    assert sorted(stored["documents"]) == sorted(DOCS)
    np.testing.assert_allclose(
        np.asarray(stored["embeddings"]), core_embedder.embed_documents(stored["documents"]), atol=1e-5
    )

    retrieved = chroma_index.as_retriever(similarity_top_k=3).retrieve(QUERY)
    order, similarity = cosine_ranking(core_embedder, QUERY, DOCS)
    assert [n.node.get_content() for n in retrieved] == [DOCS[i] for i in order[:3]]
    # ChromaVectorStore reports exp(-distance); in cosine space distance = 1 - cos(query vector, doc vector)
    assert [n.score for n in retrieved] == pytest.approx([math.exp(similarity[i] - 1) for i in order[:3]], abs=1e-4)


async def test_query_engine_reranks_the_retrieved_nodes_with_qwen3_rerank_before_the_llm(
    chroma_index, make_rerank, core_reranker
):
    retrieved = chroma_index.as_retriever(similarity_top_k=4).retrieve(QUERY)
    texts = [n.node.get_content(metadata_mode=MetadataMode.EMBED) for n in retrieved]
    p_yes = core_reranker.score(QUERY, texts)
    best = sorted(range(4), key=lambda i: -p_yes[i])[:2]

    engine = chroma_index.as_query_engine(llm=MockLLM(), similarity_top_k=4, node_postprocessors=[make_rerank(top_n=2)])
    for response in (engine.query(QUERY), await engine.aquery(QUERY)):
        assert [n.node.get_content() for n in response.source_nodes] == [texts[i] for i in best]
        assert [n.score for n in response.source_nodes] == pytest.approx([p_yes[i] for i in best], abs=1e-6)
        # MockLLM echoes its prompt: the LLM saw the two reranked passages and none of the others
        answer = str(response)
        assert all(texts[i] in answer for i in best)
        assert not any(texts[i] in answer for i in range(4) if i not in best)


def test_ingestion_pipeline_splits_and_embeds_into_chroma_for_retrieval(tmp_path, embed_model, core_embedder):
    documents = [
        Document(text=" ".join(DOCS[:3]), id_="science-and-capitals"),
        Document(text=" ".join(DOCS[3:]), id_="cats-and-mountains"),
    ]
    store = ChromaVectorStore(chroma_collection=open_collection(tmp_path / "chroma"))
    pipeline = IngestionPipeline(
        transformations=[TokenTextSplitter(chunk_size=16, chunk_overlap=0), embed_model], vector_store=store
    )
    nodes = pipeline.run(documents=documents)

    assert len(nodes) > len(documents)  # the splitter cut the documents into chunks
    chunks = [n.get_content(metadata_mode=MetadataMode.EMBED) for n in nodes]
    np.testing.assert_allclose(
        np.asarray([n.embedding for n in nodes]), core_embedder.embed_documents(chunks), atol=1e-5
    )
    assert open_collection(tmp_path / "chroma").count() == len(nodes)

    index = VectorStoreIndex.from_vector_store(
        ChromaVectorStore(chroma_collection=open_collection(tmp_path / "chroma")), embed_model=embed_model
    )
    [top] = index.as_retriever(similarity_top_k=1).retrieve(QUERY)
    order, _ = cosine_ranking(core_embedder, QUERY, chunks)
    assert top.node.node_id == nodes[order[0]].node_id
