"""A small RAG service: embed-retrieve the top 50, rerank with Ettin to the top 5, answer with sources.

    python examples/rag_app.py --model /path/to/ettin --embedder /path/to/minilm --port 8000
    curl -s localhost:8000/ask -H 'content-type: application/json' -d '{"question": "Who wrote Hamlet?"}'

Several worker processes (each loads its own models; cap torch threads so they do not fight):

    ETTIN_MODEL=/path/to/ettin ETTIN_EMBEDDER=/path/to/minilm ETTIN_NUM_THREADS=1 \
        uvicorn --app-dir examples --factory rag_app:app_from_env --workers 2 --port 8000

Answers come from an OpenAI-compatible chat endpoint when ``OPENAI_BASE_URL`` (and usually
``OPENAI_API_KEY``, ``LLM_MODEL``) are set; otherwise the answer is extracted from the best
passage, so the app runs with no key. Models load once, at start-up.
"""

from __future__ import annotations

import logging
import os
import re
import sys
import threading
import time
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, Protocol

import httpx
import torch
from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field, field_validator
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _corpus import CORPUS
from _embeddings import DEFAULT_EMBEDDER, example_parser, load_embedder

from ettin_integrations import DEFAULT_MODEL, get_reranker
from ettin_integrations.jsonl import read_jsonl
from ettin_integrations.pipeline.validation import check_text

logger = logging.getLogger("rag_app")
#: Largest request body accepted; a question is at most 2000 characters, so this is generous.
MAX_BODY_BYTES = 64 * 1024

PROMPT = """Answer the question using only the numbered sources. Cite sources like [1].

{sources}

Question: {question}
Answer:"""


class AskRequest(BaseModel):
    question: str = Field(min_length=1, max_length=2000, description="The user's question.")
    top_k: int = Field(default=5, ge=1, le=20, description="Passages given to the answerer after reranking.")
    retrieve_k: int = Field(default=50, ge=1, le=500, description="Candidates retrieved before reranking.")

    @field_validator("question")
    @classmethod
    def _valid_text(cls, question: str) -> str:
        check_text(question, "question")  # a lone surrogate would crash the tokenizers: 422, not 500
        if not question.strip():
            raise ValueError("question is blank")
        return question


class Source(BaseModel):
    id: str
    text: str
    score: float
    retrieval_score: float


class AskResponse(BaseModel):
    answer: str
    answerer: str
    sources: list[Source]
    prompt: str
    timings_ms: dict[str, float]


class Answerer(Protocol):
    name: str

    def answer(self, question: str, prompt: str, sources: list[Source]) -> str: ...


class ExtractiveAnswerer:
    """No LLM configured: answer with the best passage's first sentence, cited."""

    name = "extractive"

    def answer(self, question: str, prompt: str, sources: list[Source]) -> str:
        if not sources:
            return "I found nothing relevant."
        first_sentence = re.split(r"(?<=[.!?])\s+", sources[0].text.strip(), maxsplit=1)[0]
        return f"{first_sentence} [1]"


class OpenAICompatibleAnswerer:
    """Any server speaking the OpenAI chat-completions API (OpenAI, vLLM, llama.cpp, Ollama, ...)."""

    def __init__(self, base_url: str, api_key: str | None, model: str, transport: httpx.BaseTransport | None = None):
        self.model = model
        self.name = f"openai-compatible:{model}"
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.client = httpx.Client(base_url=base_url.rstrip("/"), headers=headers, timeout=60, transport=transport)

    def answer(self, question: str, prompt: str, sources: list[Source]) -> str:
        response = self.client.post(
            "/chat/completions",
            json={"model": self.model, "messages": [{"role": "user", "content": prompt}], "temperature": 0},
        )
        response.raise_for_status()
        try:
            return str(response.json()["choices"][0]["message"]["content"]).strip()
        except (ValueError, KeyError, IndexError, TypeError) as exc:
            raise UpstreamError(f"malformed chat-completions response ({type(exc).__name__}: {exc})") from None


class UpstreamError(Exception):
    """The answering LLM replied, but not with a usable chat-completions body."""


def answerer_from_env() -> Answerer:
    base_url = os.environ.get("OPENAI_BASE_URL")
    if not base_url:
        return ExtractiveAnswerer()
    return OpenAICompatibleAnswerer(
        base_url, os.environ.get("OPENAI_API_KEY"), os.environ.get("LLM_MODEL", "gpt-4o-mini")
    )


def load_corpus(path: str | None) -> list[tuple[str, str]]:
    """(id, text) pairs from a JSONL file ({"id", "text"} per line), or the built-in example corpus."""
    if path is None:
        return [(str(i), text) for i, text in enumerate(CORPUS)]
    documents = []
    for number, record in read_jsonl(path):
        if not isinstance(record, dict) or not isinstance(record.get("text"), str):
            raise ValueError(f"{path}, line {number}: expected an object with a string 'text'.")
        documents.append((str(record.get("id", number)), record["text"]))
    if not documents:
        raise ValueError(f"{path} holds no documents; the service would have nothing to retrieve.")
    return documents


def create_app(
    model: str = DEFAULT_MODEL,
    embedder: str = DEFAULT_EMBEDDER,
    corpus: list[tuple[str, str]] | None = None,
    answerer: Answerer | None = None,
    num_threads: int | None = None,
) -> FastAPI:
    """The FastAPI app; models load once, in its lifespan."""
    state: dict[str, Any] = {}
    documents = corpus if corpus is not None else load_corpus(None)
    if not documents:
        raise ValueError("The corpus is empty; the service would have nothing to retrieve.")

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        # Load everything once: requests only embed the question and rerank.
        state["embedder"] = load_embedder(embedder)
        state["reranker"] = get_reranker(model, num_threads=num_threads)
        state["doc_vectors"] = state["embedder"].encode(
            [text for _, text in documents], convert_to_tensor=True, normalize_embeddings=True
        )
        state["answerer"] = answerer or answerer_from_env()
        yield
        state.clear()

    app = FastAPI(title="Ettin RAG prototype", lifespan=lifespan)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        # FastAPI's default echoes each bad input back: a 10 MB question, or text JSON cannot encode.
        errors = [{k: v for k, v in error.items() if k in ("type", "loc", "msg")} for error in exc.errors()]
        return JSONResponse({"detail": errors}, status_code=422)

    @app.middleware("http")
    async def limit_body(request: Request, call_next: Any) -> Any:
        # Refuse oversized bodies before parsing them (and before a 422 would echo them back).
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > MAX_BODY_BYTES:
            return JSONResponse({"detail": f"request body over {MAX_BODY_BYTES} bytes"}, status_code=413)
        return await call_next(request)

    @app.get("/healthz")
    def healthz() -> dict[str, Any]:
        reranker = state.get("reranker")
        if reranker is None:
            raise HTTPException(status_code=503, detail="models are still loading")
        return {
            "status": "ok",
            "documents": len(documents),
            "reranker": reranker.model_name,
            "device": str(reranker.device),
            "answerer": state["answerer"].name,
        }

    @app.post("/ask", response_model=AskResponse)
    def ask(request: AskRequest) -> AskResponse:
        timings: dict[str, float] = {}
        started = time.perf_counter()
        query_vector = state["embedder"].encode([request.question], convert_to_tensor=True, normalize_embeddings=True)
        similarities = (query_vector @ state["doc_vectors"].T)[0]
        k = min(request.retrieve_k, len(documents))
        top_scores, top_indices = torch.topk(similarities, k=k)
        candidates = [(int(i), float(s)) for i, s in zip(top_indices, top_scores)]
        timings["retrieve"] = (time.perf_counter() - started) * 1000

        started = time.perf_counter()
        ranked = state["reranker"].rank(request.question, [documents[i][1] for i, _ in candidates], top_n=request.top_k)
        timings["rerank"] = (time.perf_counter() - started) * 1000
        sources = [
            Source(
                id=documents[candidates[r.index][0]][0],
                text=documents[candidates[r.index][0]][1],
                score=r.score,
                retrieval_score=candidates[r.index][1],
            )
            for r in ranked
        ]
        prompt = PROMPT.format(
            sources="\n".join(f"[{n}] {s.text}" for n, s in enumerate(sources, start=1)), question=request.question
        )
        started = time.perf_counter()
        try:
            answer = state["answerer"].answer(request.question, prompt, sources)
        except (httpx.HTTPError, UpstreamError) as exc:
            # The full error (with the upstream address) goes to the log, never to the client.
            logger.warning("answering LLM failed: %r", exc)
            status = exc.response.status_code if isinstance(exc, httpx.HTTPStatusError) else None
            reason = f"HTTP {status}" if status else type(exc).__name__
            raise HTTPException(status_code=502, detail=f"the answering LLM failed ({reason})") from None
        timings["answer"] = (time.perf_counter() - started) * 1000
        return AskResponse(
            answer=answer, answerer=state["answerer"].name, sources=sources, prompt=prompt, timings_ms=timings
        )

    return app


def app_from_env() -> FastAPI:
    """App factory for ``uvicorn --factory rag_app:app_from_env --workers N``: settings from the environment.

    ``ETTIN_MODEL``, ``ETTIN_EMBEDDER``, ``ETTIN_CORPUS`` (a JSONL path) and ``ETTIN_NUM_THREADS``
    (torch threads per worker; without it the engine gives each of the N workers cores / N on its own).
    """
    # Loading bars (transformers' "Loading weights") would give tqdm a multiprocessing lock: a named
    # semaphore that uvicorn's worker processes never release, which Python reports as leaked when
    # they stop. One process's bars need only a thread lock.
    tqdm.set_lock(threading.RLock())
    threads = os.environ.get("ETTIN_NUM_THREADS")
    return create_app(
        os.environ.get("ETTIN_MODEL", DEFAULT_MODEL),
        os.environ.get("ETTIN_EMBEDDER", DEFAULT_EMBEDDER),
        load_corpus(os.environ.get("ETTIN_CORPUS")),
        num_threads=int(threads) if threads else None,
    )


def main() -> None:
    parser = example_parser(__doc__, queries=False)
    parser.add_argument("--corpus", default=None, help="JSONL with {'id', 'text'} per line (default: built-in)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    args = parser.parse_args()

    import uvicorn

    try:
        corpus = load_corpus(args.corpus)
    except ValueError as exc:  # JsonlError included: the message names the file and line
        parser.error(str(exc))
    app = create_app(args.model, args.embedder, corpus)
    uvicorn.run(app, host=args.host, port=args.port)


if __name__ == "__main__":
    main()
