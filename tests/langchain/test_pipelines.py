"""End to end, offline: a persistent Chroma built with Qwen3Embeddings, its retriever reranked by Qwen3Rerank
through ContextualCompressionRetriever, and the same reranker inside an LCEL chain."""

from __future__ import annotations

from operator import itemgetter
from pathlib import Path

import pytest
from langchain_chroma import Chroma
from langchain_classic.retrievers import ContextualCompressionRetriever
from langchain_core.documents import Document
from langchain_core.language_models import FakeListLLM
from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import PromptTemplate
from langchain_core.runnables import RunnableLambda, RunnablePassthrough

from tests.langchain.texts import PASSAGES, QUERY

K = 4


@pytest.fixture
def persist_directory(tmp_path):
    return str(tmp_path / "chroma")


@pytest.fixture
def store(embeddings, documents, persist_directory):
    """A persistent Chroma filled with the documents, then reopened from disk as a new object."""
    writer = Chroma(collection_name="qwen3", embedding_function=embeddings, persist_directory=persist_directory)
    writer.add_documents(documents)
    del writer
    return Chroma(collection_name="qwen3", embedding_function=embeddings, persist_directory=persist_directory)


def test_chroma_persists_qwen3_vectors_and_searches_with_the_query_instruction(store, embeddings, persist_directory):
    assert (Path(persist_directory) / "chroma.sqlite3").is_file()
    assert len(store.get()["ids"]) == len(PASSAGES)
    stored = store.get(ids=["doc-0"], include=["embeddings"])["embeddings"][0]
    assert list(stored) == pytest.approx(embeddings.embed_documents([PASSAGES[0]])[0], abs=1e-5)
    by_text = store.similarity_search_with_score(QUERY, k=K)
    by_query_vector = store.similarity_search_by_vector_with_relevance_scores(embeddings.embed_query(QUERY), k=K)
    assert [d.id for d, _ in by_text] == [d.id for d, _ in by_query_vector]
    assert [s for _, s in by_text] == pytest.approx([s for _, s in by_query_vector], abs=1e-5)


def test_contextual_compression_retriever_reranks_chroma_results(store, make_rerank):
    reranker = make_rerank(top_n=2)
    retriever = ContextualCompressionRetriever(
        base_compressor=reranker, base_retriever=store.as_retriever(search_kwargs={"k": K})
    )
    retrieved = store.as_retriever(search_kwargs={"k": K}).invoke(QUERY)
    expected = reranker.rerank(retrieved, QUERY)
    result = retriever.invoke(QUERY)
    assert [d.id for d in result] == [retrieved[hit["index"]].id for hit in expected]
    assert [d.metadata["relevance_score"] for d in result] == pytest.approx([h["relevance_score"] for h in expected])
    assert all(d.metadata["source"] == f"{d.id.replace('-', '')}.txt" for d in result)  # metadata survives


async def test_contextual_compression_retriever_works_async(store, make_rerank):
    retriever = ContextualCompressionRetriever(
        base_compressor=make_rerank(top_n=3), base_retriever=store.as_retriever(search_kwargs={"k": K})
    )
    sync, async_ = retriever.invoke(QUERY), await retriever.ainvoke(QUERY)
    assert [d.id for d in async_] == [d.id for d in sync]
    assert len(async_) == 3


def format_docs(docs: list[Document]) -> str:
    return "\n".join(f"[{d.id}] {d.page_content}" for d in docs)


def test_reranker_inside_an_lcel_chain(store, make_rerank):
    reranker = make_rerank(top_n=2)
    prompt = PromptTemplate.from_template("Answer from the context.\n{context}\nQuestion: {question}")
    seen: list[str] = []

    def record(value):
        seen.append(value.to_string())
        return value

    rerank = RunnableLambda(lambda x: reranker.compress_documents(x["docs"], x["question"]))
    chain = (
        {"docs": store.as_retriever(search_kwargs={"k": K}), "question": RunnablePassthrough()}
        | RunnablePassthrough.assign(context=rerank | format_docs)
        | {"context": itemgetter("context"), "question": itemgetter("question")}
        | prompt
        | RunnableLambda(record)
        | FakeListLLM(responses=["Beijing."])
        | StrOutputParser()
    )
    assert chain.invoke(QUERY) == "Beijing."
    best = reranker.compress_documents(store.as_retriever(search_kwargs={"k": K}).invoke(QUERY), QUERY)
    assert seen == [prompt.format(context=format_docs(best), question=QUERY)]


async def test_lcel_chain_with_the_reranker_runs_async(store, make_rerank):
    reranker = make_rerank(top_n=2)

    def rerank(x):
        return reranker.compress_documents(x["docs"], x["question"])

    async def arerank(x):
        return await reranker.acompress_documents(x["docs"], x["question"])

    retrieve = {"docs": store.as_retriever(search_kwargs={"k": K}), "question": RunnablePassthrough()}
    chain = retrieve | RunnableLambda(rerank, afunc=arerank)
    result = await chain.ainvoke(QUERY)
    assert [d.id for d in result] == [d.id for d in chain.invoke(QUERY)]
    assert len(result) == 2 and result[0].metadata["relevance_score"] >= result[1].metadata["relevance_score"]
