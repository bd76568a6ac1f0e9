"""A small hub to look at: a few pushed adapters (one with a hostile model card), and composed
versions registered with a ``Lineage`` directly (no composer run), one with a search history."""

from __future__ import annotations

from pathlib import Path

from loramgr.hub.records import Lineage, SourceWeight
from loramgr.hub.registry import Registry
from loramgr.hub.settings import Settings

from ..remote.helpers import write_synthetic_adapter

# A card that tries to run script three ways; the pages must show all of it as text.
HOSTILE_CARD = """---
license: apache-2.0
---
# Sentiment adapter

Trained on *reviews*. Scores **well**.

<script>window.__pwned = "script";</script>

<img src="x" onerror="window.__pwned = 'onerror'">

[click me](javascript:window.__pwned='link')

| split | accuracy |
|-------|----------|
| test  | 0.91     |
"""


def history(evaluations: int = 30) -> list[dict]:
    entries, best = [], float("inf")
    for step in range(evaluations):
        loss = 3.0 - 1.5 * step / evaluations + (0.6 if step % 3 else -0.2) * (1 - step / evaluations)
        best = min(best, loss)
        entries.append({"loss": loss, "task_loss": loss - 0.05, "best": best})
    return entries


def populate(home: Path, scratch: Path, database_url: str | None = None) -> dict:
    """Fill the registry at ``home`` (metadata in ``database_url``, default SQLite there); returns
    the refs and the folders pushed."""
    registry = Registry(Settings.load(environ={}, home=str(home), database_url=database_url))
    made: dict = {"folders": {}}

    def push(name: str, *, task: str, rank: int, base: str = "synthetic/base-model", seed: int = 0,
             card: str | None = None, **options):
        folder = write_synthetic_adapter(scratch / f"{name.replace('/', '-')}-{seed}", megabytes=0.02,
                                         hidden=64, rank=rank, seed=seed, base=base)
        if card is not None:
            (folder / "README.md").write_text(card)
        version = registry.push(folder, name=name, task=task, **options)
        made["folders"][version.ref] = folder
        return version

    try:
        push("acme/sentiment", task="sentiment", rank=8, card="# first version\n",
             description="Positive or negative, from product reviews")
        sentiment = push("acme/sentiment", task="sentiment", rank=8, seed=1, card=HOSTILE_CARD, tags=["stable"],
                         description="Positive or negative, from product reviews")
        summarize = push("acme/summarize", task="summarization", rank=16, seed=2,
                         description="Short summaries of news articles")
        translate = push("lab/translate", task="translation", rank=4, seed=3, base="synthetic/other-base")
        lineage = Lineage(
            sources=[SourceWeight(sentiment.ref, 0.72), SourceWeight(summarize.ref, -0.31)], mode="delta",
            score=1.2345, seed=7, examples_digest="e" * 64,
            details={"history": history(), "budget": 30, "optimizer": "NGOpt", "shots": 5})
        mix = push("acme/mix", task="review-summary", rank=24, seed=4, source="composed", lineage=lineage,
                   description="Composed from sentiment and summarize")
        bare = push("acme/mix-bare", task="review-summary", rank=8, seed=5, source="composed",
                    lineage=Lineage(sources=[SourceWeight(sentiment.ref, 1.0)], mode="lorahub"))
        made.update(sentiment=sentiment.ref, summarize=summarize.ref, translate=translate.ref, mix=mix.ref,
                    bare=bare.ref)
    finally:
        registry.close()
    return made
