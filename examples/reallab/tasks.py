"""BIG-bench tasks as (input, output, options) examples, in one uniform format.

Every task, multiple-choice or generative, becomes the same kind of prompt: the task's short
instruction (its ``task_prefix``, when there is one and it is short), the example's input, and
for multiple-choice tasks the options one per line, then "Answer:". The options are shuffled
per example: task files often list the right one first. The answer is the text of
the best-scored option (or the first target of a generative task). Modules trained in this
format learn to answer with one of the listed options, which is what the held-out targets ask.

Upstream tasks (the module pool) are BIG-bench tasks that are not sources of BIG-Bench Hard;
targets are BBH source tasks, held out: no module sees them.
"""

from __future__ import annotations

import hashlib
import json
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from .sources import LabSourceError

# Not BBH sources; multiple-choice or short generative answers; short inputs (cheap on 2 cores).
UPSTREAM_TASKS = (
    "anachronisms", "analytic_entailment", "bbq_lite_json/age_ambig", "common_morpheme", "crass_ai", "cs_algorithms/valid_parentheses", "dark_humor_detection", "emoji_movie",
    "entailed_polarity", "fact_checker/fever", "figure_of_speech_detection",
    "general_knowledge", "goal_step_wikihow/goal_inference", "hindu_knowledge", "implicatures",
    "irony_identification", "known_unknowns", "strategyqa", "social_iqa", "winowhy",
    "sentence_ambiguity", "linguistic_mappings/plural_json",
)
# BIG-Bench Hard source tasks, never seen by a module.
TARGET_TASKS = (
    "sports_understanding", "navigate", "snarks", "date_understanding", "disambiguation_qa", "ruin_names",
    "hyperbaton", "logical_deduction/three_objects",
)
BBH_SOURCES = frozenset({
    "boolean_expressions", "causal_judgment", "date_understanding", "disambiguation_qa", "dyck_languages",
    "formal_fallacies_syllogisms_negation", "geometric_shapes", "hyperbaton", "logical_deduction",
    "movie_recommendation", "multistep_arithmetic", "navigate", "object_counting", "penguins_in_a_table",
    "reasoning_about_colored_objects", "ruin_names", "salient_translation_error_detection", "snarks",
    "sports_understanding", "temporal_sequences", "tracking_shuffled_objects", "web_of_lies", "word_sorting",
})
# Bumped whenever the conversion below changes what a prompt says, so that built labs (keyed by
# their configuration) are trained again. 2: options shuffled per example (1: in file order).
TASK_FORMAT = 2
MAX_PROMPT_CHARS = 700  # longer examples are left out: they cost too much on 2 cores
MAX_PREFIX_CHARS = 400


@dataclass(frozen=True)
class TaskExample:
    """One example: the prompt text, the expected answer, and the options (empty if generative)."""

    input: str
    output: str
    options: tuple[str, ...] = ()


@dataclass(frozen=True)
class Task:
    name: str
    examples: tuple[TaskExample, ...]

    @property
    def multiple_choice(self) -> bool:
        return all(e.options for e in self.examples)

    @property
    def slug(self) -> str:
        """A name usable as a folder or hub name ('logical_deduction/three_objects' -> 'logical_deduction-three_objects')."""
        return self.name.replace("/", "-")


def is_bbh_source(name: str) -> bool:
    return name.split("/", 1)[0] in BBH_SOURCES


def load_task(name: str, path: Path) -> Task:
    """The task in ``path`` (a BIG-bench ``task.json``), in the lab's format.

    Raises ``LabSourceError`` when the file is not a task JSON or has no usable examples.
    """
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise LabSourceError(f"task {name}: cannot read {path} ({exc})") from None
    rows = data.get("examples") if isinstance(data, dict) else None
    if not rows:
        raise LabSourceError(f"task {name}: {path} has no examples")
    prefix = (data.get("task_prefix") or "").strip()
    prefix = prefix if len(prefix) <= MAX_PREFIX_CHARS else ""
    examples = [e for e in (_convert(row, prefix) for row in rows if isinstance(row, dict)) if e is not None]
    if not examples:
        raise LabSourceError(f"task {name}: none of its {len(rows)} examples has an input and a target "
                             f"under {MAX_PROMPT_CHARS} characters")
    return Task(name, tuple(examples))


def _convert(row: dict, prefix: str) -> TaskExample | None:
    text = row.get("input")
    if not isinstance(text, str) or not text.strip():
        return None
    scores = row.get("target_scores")
    if isinstance(scores, dict) and scores:
        options = [str(o).strip() for o in scores]
        if len(set(options)) != len(options) or not all(options):
            return None
        best = max(scores, key=lambda o: (_number(scores[o]), -list(scores).index(o)))
        answer = str(best).strip()
        options = tuple(_shuffled(options, text))
        body = f"{text.strip()}\nOptions:\n" + "".join(f"- {o}\n" for o in options) + "Answer:"
    else:
        target = row.get("target")
        target = target[0] if isinstance(target, list) and target else target
        if not isinstance(target, str) or not target.strip():
            return None
        options, answer = (), target.strip()
        body = f"{text.strip()}\nAnswer:"
    prompt = f"{prefix}\n\n{body}" if prefix else body
    if len(prompt) > MAX_PROMPT_CHARS or len(answer) > 80:
        return None
    return TaskExample(prompt, answer, options)


def _shuffled(options: list[str], text: str) -> list[str]:
    # Many task files list the right option first (date_understanding 99% of its examples,
    # emoji_movie all of them): in file order a module learns "pick the first option" and that
    # carries to any target with the same habit. Shuffled by a seed taken from the example itself,
    # so an example reads the same in every split, run and build.
    seed = int.from_bytes(hashlib.sha256("\x1f".join([text, *options]).encode()).digest()[:8], "big")
    random.Random(seed).shuffle(options)
    return options


def _number(value) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return 0.0


@dataclass(frozen=True)
class Split:
    """Disjoint parts of a task: ``test`` (held out for evaluation), ``shots`` (the pool few-shot
    examples are drawn from), ``train`` (for modules and oracles)."""

    test: tuple[TaskExample, ...]
    shots: tuple[TaskExample, ...]
    train: tuple[TaskExample, ...]


def split_task(task: Task, *, test: int, shots: int, train: int, seed: int = 0) -> Split:
    """A deterministic split: the examples shuffled by ``seed``, then cut in that order."""
    order = list(task.examples)
    random.Random(f"{task.name}:{seed}").shuffle(order)
    test_part = tuple(order[:test])
    shot_part = tuple(order[test:test + shots])
    train_part = tuple(order[test + shots:test + shots + train])
    return Split(test_part, shot_part, train_part)


def sample_shots(pool: Sequence[TaskExample], shots: int, seed: int) -> list[TaskExample]:
    """``shots`` examples of ``pool`` chosen by ``seed`` (the same rule as the composer's)."""
    if shots > len(pool):
        raise LabSourceError(f"asked for {shots} shots but the pool holds {len(pool)} examples")
    chosen = sorted(random.Random(seed).sample(range(len(pool)), shots))
    return [pool[i] for i in chosen]
