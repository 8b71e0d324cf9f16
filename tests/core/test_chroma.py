"""``qwen3_rag.chroma.Qwen3EmbeddingFunction``: chromadb's embedding-function protocol with the Qwen3 recipe --
documents bare, queries with the instruction through chromadb's query hook -- and chromadb kept optional."""

from __future__ import annotations

import importlib
import sys

import chromadb
import numpy as np
import pytest
from chromadb.config import Settings

from qwen3_rag import DEFAULT_INSTRUCTION, ModelLoadError, Qwen3Embedder
from qwen3_rag.chroma import (
    CHROMA_HAS_QUERY_HOOK,
    ChromaOpenError,
    Qwen3EmbeddingFunction,
    check_collection_name,
    is_server_url,
    open_chroma_client,
)
from tests.cookbook import chroma_server as server_fixtures

chroma_server = server_fixtures.chroma_server  # a real `chroma run` server for this module
DOCS = ["Beijing is the capital of China.", "Gravity pulls bodies together.", "Bread needs flour and water."]
QUERY = "What is the capital of China?"


@pytest.fixture(scope="module")
def embedder(tiny_embedding_path) -> Qwen3Embedder:
    return Qwen3Embedder(tiny_embedding_path, device="cpu")


@pytest.fixture
def function(tiny_embedding_path, embedder) -> Qwen3EmbeddingFunction:
    return Qwen3EmbeddingFunction(str(tiny_embedding_path), device="cpu")


@pytest.fixture
def client(tmp_path):
    return chromadb.PersistentClient(path=str(tmp_path / "db"), settings=Settings(anonymized_telemetry=False))


def test_documents_are_embedded_without_the_instruction(function, embedder):
    vectors = function(DOCS)
    assert len(vectors) == 3
    np.testing.assert_allclose(np.stack(vectors), embedder.embed_documents(DOCS), atol=1e-6)


def test_queries_are_embedded_with_the_instruction(function, embedder):
    expected = embedder.embed_queries([QUERY], instruction=DEFAULT_INSTRUCTION)
    bare = embedder.embed_documents([QUERY])
    got = np.stack(function.embed_query([QUERY]))
    np.testing.assert_allclose(got, expected, atol=1e-6)
    assert not np.allclose(got, bare, atol=1e-3)


def test_installed_chromadb_has_a_query_hook():
    assert CHROMA_HAS_QUERY_HOOK  # chromadb 1.x: query_texts go through embed_query


def test_collection_query_texts_use_the_instruction_and_add_uses_none(client, function, embedder):
    collection = client.create_collection(
        "docs", embedding_function=function, configuration={"hnsw": {"space": "cosine"}}
    )
    collection.add(ids=["0", "1", "2"], documents=DOCS)
    stored = collection.get(ids=["0", "1", "2"], include=["embeddings"])["embeddings"]
    np.testing.assert_allclose(np.asarray(stored), embedder.embed_documents(DOCS), atol=1e-6)

    result = collection.query(query_texts=[QUERY], n_results=3, include=["distances"])
    query = embedder.embed_queries([QUERY], instruction=DEFAULT_INSTRUCTION)[0]
    expected = {str(i): 1.0 - float(query @ doc) for i, doc in enumerate(embedder.embed_documents(DOCS))}
    got = dict(zip(result["ids"][0], result["distances"][0], strict=True))
    assert got == pytest.approx(expected, abs=1e-4)


def test_matryoshka_vectors_have_the_asked_size_and_unit_length(tiny_embedding_path, embedder):
    function = Qwen3EmbeddingFunction(str(tiny_embedding_path), dimensions=32, device="cpu")
    for vectors in (function(DOCS), function.embed_query([QUERY])):
        matrix = np.stack(vectors)
        assert matrix.shape[1] == 32
        np.testing.assert_allclose(np.linalg.norm(matrix, axis=1), 1.0, atol=1e-5)


def test_no_instruction_embeds_queries_as_documents(tiny_embedding_path, embedder):
    function = Qwen3EmbeddingFunction(str(tiny_embedding_path), instruction=None, device="cpu")
    np.testing.assert_allclose(np.stack(function.embed_query([QUERY])), embedder.embed_documents([QUERY]), atol=1e-6)


def test_config_round_trips_and_a_reopened_collection_rebuilds_the_function(tmp_path, tiny_embedding_path, embedder):
    function = Qwen3EmbeddingFunction(str(tiny_embedding_path), dimensions=48, instruction="Find recipes")
    assert function.get_config() == {
        "model": str(tiny_embedding_path),
        "dimensions": 48,
        "instruction": "Find recipes",
        "max_length": 8192,
    }
    rebuilt = Qwen3EmbeddingFunction.build_from_config(function.get_config())
    assert rebuilt.get_config() == function.get_config()

    path = str(tmp_path / "db")
    settings = Settings(anonymized_telemetry=False)
    chromadb.PersistentClient(path=path, settings=settings).create_collection("docs", embedding_function=function).add(
        ids=["0", "1", "2"], documents=DOCS
    )
    reopened = chromadb.PersistentClient(path=path, settings=settings).get_collection("docs")  # no function given
    result = reopened.query(query_texts=[QUERY], n_results=1, include=["embeddings", "distances"])
    query = embedder.embed_queries([QUERY], instruction="Find recipes", dimensions=48)[0]
    best = np.asarray(result["embeddings"][0][0])
    assert result["distances"][0][0] == pytest.approx(1.0 - float(query @ best), abs=1e-4)


def test_the_model_loads_on_first_use_not_when_a_collection_is_opened(tmp_path):
    function = Qwen3EmbeddingFunction(str(tmp_path / "not-downloaded"))
    assert function.name() == "qwen3_rag"
    with pytest.raises(ModelLoadError, match="not-downloaded"):
        function(["text"])


def test_an_existing_embedder_is_used_as_is(embedder):
    function = Qwen3EmbeddingFunction(embedder=embedder, dimensions=32)
    assert function.embedder is embedder
    assert function.model == embedder.model_name
    assert np.stack(function(DOCS)).shape == (3, 32)


def test_the_stored_config_describes_the_vectors_of_a_given_embedder(tmp_path, tiny_embedding_path):
    embedder = Qwen3Embedder(tiny_embedding_path, dimensions=32, instruction="Find recipes", max_length=64)
    function = Qwen3EmbeddingFunction(embedder=embedder)
    assert function.get_config() == {
        "model": str(tiny_embedding_path),
        "dimensions": 32,
        "instruction": "Find recipes",
        "max_length": 64,
    }
    path, settings = str(tmp_path / "db"), Settings(anonymized_telemetry=False)
    chromadb.PersistentClient(path=path, settings=settings).create_collection("docs", embedding_function=function).add(
        ids=["0", "1", "2"], documents=DOCS
    )
    reopened = chromadb.PersistentClient(path=path, settings=settings).get_collection("docs")  # rebuilt from config
    result = reopened.query(query_texts=[QUERY], n_results=1, include=["embeddings", "distances"])
    query = embedder.embed_queries([QUERY])[0]
    assert query.shape == (32,) and len(result["embeddings"][0][0]) == 32
    assert result["distances"][0][0] == pytest.approx(
        1.0 - float(query @ np.asarray(result["embeddings"][0][0])), abs=1e-4
    )


def test_settings_passed_with_an_embedder_win_and_a_max_length_it_cannot_honour_is_refused(embedder):
    function = Qwen3EmbeddingFunction(embedder=embedder, dimensions=48, instruction=None)
    assert (function.dimensions, function.instruction, function.max_length) == (48, None, embedder.max_length)
    assert np.stack(function(DOCS)).shape == (3, 48)
    with pytest.raises(ValueError, match="differs from the embedder's max_length=8192"):
        Qwen3EmbeddingFunction(embedder=embedder, max_length=64)


def test_bad_arguments_fail_at_construction():
    with pytest.raises(ValueError, match="dimensions must be an integer >= 32"):
        Qwen3EmbeddingFunction(dimensions=16)
    with pytest.raises(TypeError, match="instruction must be a str"):
        Qwen3EmbeddingFunction(instruction=3)
    with pytest.raises(TypeError, match="embeds text only"):
        Qwen3EmbeddingFunction()([b"bytes"])


def test_changing_dimensions_or_instruction_of_a_collection_is_refused(function):
    old = function.get_config()
    with pytest.raises(ValueError, match="would mix incompatible vectors"):
        function.validate_config_update(old, {**old, "dimensions": 32})
    with pytest.raises(ValueError, match="would mix incompatible vectors"):
        function.validate_config_update(old, {**old, "instruction": "other"})
    function.validate_config_update(old, {**old, "model": "/moved/folder"})  # a moved model folder is fine


def test_empty_input_embeds_to_nothing_without_loading(tmp_path):
    function = Qwen3EmbeddingFunction(str(tmp_path / "absent"))
    assert function.embed_query([]) == []


def test_without_chromadb_the_import_error_says_how_to_install(monkeypatch):
    for name in [m for m in sys.modules if m == "chromadb" or m.startswith("chromadb.")]:
        monkeypatch.setitem(sys.modules, name, None)  # as if it were not installed
    monkeypatch.delitem(sys.modules, "qwen3_rag.chroma")
    with pytest.raises(ImportError, match=r'pip install "qwen3-rag\[chroma\]"'):
        importlib.import_module("qwen3_rag.chroma")


def test_the_core_package_and_the_cli_import_without_chromadb():
    families = {"chromadb", "qwen3_rag"}
    saved = {name: module for name, module in sys.modules.items() if name.split(".")[0] in families}
    try:
        for name in saved:
            del sys.modules[name]
        sys.modules["chromadb"] = None  # as if it were not installed
        importlib.import_module("qwen3_rag")
        importlib.import_module("qwen3_rag.cli")
    finally:  # put back exactly the modules the rest of the session uses
        for name in [n for n in sys.modules if n.split(".")[0] in families]:
            del sys.modules[name]
        sys.modules.update(saved)


# --------------------------------------------------------------------------------- a Chroma server (HttpClient)


@pytest.mark.allow_hosts(["127.0.0.1"])
def test_the_function_works_on_a_server_collection_and_get_collection_rebuilds_it(
    chroma_server, tiny_embedding_path, embedder
):
    from tests.cookbook.chroma_server import server_client

    function = Qwen3EmbeddingFunction(str(tiny_embedding_path), dimensions=48, instruction="Find recipes")
    writer = server_client(chroma_server)
    collection = writer.create_collection(
        "server-docs", embedding_function=function, configuration={"hnsw": {"space": "cosine"}}
    )
    collection.add(ids=["0", "1", "2"], documents=DOCS)
    stored = collection.get(ids=["0", "1", "2"], include=["embeddings"])["embeddings"]
    np.testing.assert_allclose(np.asarray(stored), embedder.embed_documents(DOCS, dimensions=48), atol=1e-6)

    reader = server_client(chroma_server)  # another client, no function given: rebuilt from the server's config
    reopened = reader.get_collection("server-docs")
    rebuilt = reopened.configuration["embedding_function"]
    assert isinstance(rebuilt, Qwen3EmbeddingFunction) and rebuilt.get_config() == function.get_config()
    result = reopened.query(query_texts=[QUERY], n_results=3, include=["distances"])
    query = embedder.embed_queries([QUERY], instruction="Find recipes", dimensions=48)[0]
    documents = embedder.embed_documents(DOCS, dimensions=48)
    expected = {str(i): 1.0 - float(query @ doc) for i, doc in enumerate(documents)}
    assert dict(zip(result["ids"][0], result["distances"][0], strict=True)) == pytest.approx(expected, abs=1e-4)


@pytest.mark.allow_hosts(["127.0.0.1"])
def test_open_chroma_client_reaches_a_server_database_named_by_chroma_database(chroma_server):
    from chromadb.config import DEFAULT_TENANT

    admin = chromadb.AdminClient(
        Settings(chroma_api_impl="chromadb.api.fastapi.FastAPI", chroma_server_host="127.0.0.1",
                 chroma_server_http_port=chroma_server.port, anonymized_telemetry=False)
    )  # fmt: skip
    admin.create_database("team_docs", tenant=DEFAULT_TENANT)
    client = open_chroma_client(chroma_server.url + "/", environ={"CHROMA_DATABASE": "team_docs"})
    assert (client.tenant, client.database) == (DEFAULT_TENANT, "team_docs")
    client.create_collection("only-here")
    assert [c.name for c in open_chroma_client(chroma_server.url, environ={}).list_collections()] != ["only-here"]
    with pytest.raises(ChromaOpenError, match="has no tenant 'nobody'"):
        open_chroma_client(chroma_server.url, environ={"CHROMA_TENANT": "nobody"})


@pytest.mark.allow_hosts(["127.0.0.1"])
def test_the_api_key_extra_headers_and_a_path_prefix_reach_the_server(monkeypatch):
    """What the client sends, seen by a plain HTTP server on loopback (it is not Chroma, so the client then stops
    with a one-line error naming the URL)."""
    import http.server
    import threading

    seen: list[tuple[str, dict[str, str]]] = []

    class Recorder(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            seen.append((self.path, {k.lower(): v for k, v in self.headers.items()}))
            self.send_response(404)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Recorder)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    monkeypatch.setenv("CHROMA_SERVER_HEADERS", '{"X-Proxy-Token": "proxy-secret"}')  # read by chromadb's Settings
    url = f"http://127.0.0.1:{server.server_address[1]}/chroma"
    try:
        with pytest.raises(ChromaOpenError, match=f"the Chroma server at {url} refused the connection"):
            open_chroma_client(url, environ={"CHROMA_API_KEY": "ck-123"})
    finally:
        server.shutdown()
        server.server_close()
    path, headers = seen[0]
    assert path.startswith("/chroma/api/v2/")
    assert headers["x-chroma-token"] == "ck-123" and headers["x-proxy-token"] == "proxy-secret"


def test_a_database_location_is_a_server_url_or_a_folder(tmp_path):
    assert is_server_url("http://127.0.0.1:8000") and is_server_url("https://chroma.example.com")
    assert not is_server_url("./qwen3-rag-db") and not is_server_url(tmp_path) and not is_server_url("http:db")
    for url, message in (
        ("http://user:pw@127.0.0.1:8000", "not in the URL"),
        ("http://127.0.0.1:8000?tenant=x", "not a Chroma server URL"),
        ("http://127.0.0.1:99999", "the port must be a number"),
    ):
        with pytest.raises(ChromaOpenError, match=message):
            open_chroma_client(url, environ={})
    with pytest.raises(ChromaOpenError, match="no Chroma database at"):
        open_chroma_client(tmp_path / "absent", create=False)
    assert not (tmp_path / "absent").exists()


@pytest.mark.parametrize("name", ["a", "ab", "my docs", "-abc", "abc_", "a..b", "192.168.0.1", "x" * 513, "naïve"])
def test_collection_names_chroma_refuses_are_refused_with_its_rule(name, tmp_path):
    with pytest.raises(ValueError, match="Chroma refuses the collection name"):
        check_collection_name(name)
    client = chromadb.PersistentClient(path=str(tmp_path / "db"), settings=Settings(anonymized_telemetry=False))
    with pytest.raises(Exception, match="name"):  # and Chroma itself agrees
        client.create_collection(name)


def test_collection_names_chroma_accepts_pass(tmp_path):
    client = chromadb.PersistentClient(path=str(tmp_path / "db"), settings=Settings(anonymized_telemetry=False))
    for name in ("abc", "qwen3_rag", "my-docs.v2", "A" * 512):
        assert check_collection_name(name) == name
        client.create_collection(name)
