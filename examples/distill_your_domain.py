"""Adapt a small Ettin reranker to your documents: distil a large teacher into it, then use it.

    python examples/distill_your_domain.py --data my-beir-folder \
        --teacher cross-encoder/ettin-reranker-150m-v1 --student 17m --out distilled

The student is trained on the teacher's scores for BM25 candidates of your queries (no labels
needed), measured on held-out queries before and after, and saved as a directory that
``EttinReranker``, both adapters and ``CrossEncoder`` load.
"""

from __future__ import annotations

import argparse

from ettin_integrations import EttinReranker
from ettin_integrations.distillation import TrainingOptions, distill


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="examples/data/tiny-beir", help="BEIR folder with your queries and corpus")
    parser.add_argument("--teacher", default="cross-encoder/ettin-reranker-150m-v1")
    parser.add_argument("--student", default="17m", help="an Ettin size, hub id or local directory")
    parser.add_argument("--out", default="distilled")
    parser.add_argument("--max-steps", type=int, default=1000)
    parser.add_argument("--candidates", type=int, default=30)
    args = parser.parse_args()

    report = distill(
        args.teacher,
        args.student,
        args.out,
        data=args.data,
        candidates=args.candidates,
        held_out=0.3,
        options=TrainingOptions(max_steps=args.max_steps, eval_steps=0, save_steps=max(args.max_steps // 2, 1)),
    )
    for name, before in report.before.items():
        print(f"{name}: {before:.3f} -> {report.after[name]:.3f}")
    print(f"saved: {report.model_dir}")

    reranker = EttinReranker(report.model_dir)  # the distilled student, like any Ettin model
    docs = ["Hamlet is a tragedy by William Shakespeare.", "Paris is the capital of France."]
    for result in reranker.rank("Who wrote Hamlet?", docs):
        print(f"{result.score:8.3f}  {docs[result.index]}")


if __name__ == "__main__":
    main()
