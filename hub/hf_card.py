"""Model cards: a ``README.md`` whose Hugging Face YAML metadata block (``---`` ... ``---``)
says what the repo is. Read by the hub's Hugging Face API (the task of an uploaded adapter) and
written by ``loramgr export`` (``library_name: peft``, ``base_model``,
``base_model_relation: adapter``, tags, and for composed adapters the lineage).

loramgr keeps its own fields under one ``loramgr:`` key, so they never collide with the Hub's:
``ref``, ``task``, ``digest``, ``source``, ``rank``, ``alpha``, ``description`` and ``lineage``
(``mode``, ``objective``, ``seed``, ``score``, ``sources``: ``ref`` + ``weight``).
"""

from __future__ import annotations

import re

from .errors import InvalidArgument
from .records import AdapterVersion

# huggingface_hub's own pattern (repocard.REGEX_YAML_BLOCK), so both read a card alike.
_YAML_BLOCK = re.compile(r"^(\s*---[\r\n]+)([\S\s]*?)([\r\n]+---(\r\n|\n|$))")
_SECTION = re.compile(r"<!-- loramgr:begin -->.*?<!-- loramgr:end -->\n*", re.S)
PIPELINE_TAGS = {"CAUSAL_LM": "text-generation", "SEQ_2_SEQ_LM": "text2text-generation",
                 "SEQ_CLS": "text-classification", "TOKEN_CLS": "token-classification",
                 "QUESTION_ANS": "question-answering", "FEATURE_EXTRACTION": "feature-extraction"}
EXPORT_TAGS = ("loramgr", "lora", "peft")


def split_card(text: str) -> tuple[dict, str]:
    """``(metadata, body)`` of a card; ``{}`` when it has no metadata block.
    Raises ``InvalidArgument`` when the block is not a YAML mapping."""
    import yaml  # PyYAML comes with huggingface_hub

    match = _YAML_BLOCK.match(text)
    if match is None:
        return {}, text
    try:
        metadata = yaml.safe_load(match[2])
    except yaml.YAMLError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise InvalidArgument(f"README.md: the metadata block is not valid YAML ({first})") from None
    except RecursionError:  # PyYAML builds nested collections recursively
        raise InvalidArgument("README.md: the metadata block is nested too deeply") from None
    if metadata is None:
        metadata = {}
    if not isinstance(metadata, dict):
        raise InvalidArgument("README.md: the metadata block must be a YAML mapping (key: value lines)")
    return metadata, text[match.end():]


def render_card(metadata: dict, body: str) -> str:
    import yaml

    block = yaml.safe_dump(metadata, sort_keys=False, allow_unicode=True, default_flow_style=False)
    return f"---\n{block}---\n{body}"


def _loramgr_fields(metadata: dict) -> dict:
    fields = metadata.get("loramgr")
    return fields if isinstance(fields, dict) else {}


def card_task(metadata: dict) -> str | None:
    """``loramgr.task`` of a card's metadata, if it is a non-empty string."""
    task = _loramgr_fields(metadata).get("task")
    return task.strip() if isinstance(task, str) and task.strip() else None


def card_description(metadata: dict) -> str | None:
    text = _loramgr_fields(metadata).get("description")
    return text if isinstance(text, str) and text.strip() else None


def card_base_model(metadata: dict) -> str | None:
    """The card's ``base_model`` (the first one, when it lists several)."""
    base = metadata.get("base_model")
    if isinstance(base, list):
        base = base[0] if base else None
    return base if isinstance(base, str) and base.strip() else None


def version_metadata(version: AdapterVersion) -> dict:
    """The ``loramgr:`` fields of a version: what it is and, when composed, how it was made."""
    fields = {"ref": version.ref, "task": version.task, "digest": version.digest, "source": version.source,
              "rank": version.rank, "alpha": version.alpha}
    if version.description:
        fields["description"] = version.description
    if version.lineage is not None:
        lineage = version.lineage
        fields["lineage"] = {"mode": lineage.mode, "objective": lineage.objective, "seed": lineage.seed,
                             "score": lineage.score,
                             "sources": [{"ref": s.ref, "weight": float(s.weight)} for s in lineage.sources]}
    return fields


_AUTO_CLASSES = {"CAUSAL_LM": "AutoModelForCausalLM", "SEQ_2_SEQ_LM": "AutoModelForSeq2SeqLM"}


def _summary(version: AdapterVersion, repo_id: str) -> str:
    lines = ["<!-- loramgr:begin -->", f"# {version.adapter} (version {version.number})", "",
             (f"A LoRA adapter for `{version.base_model}`, task `{version.task}`: rank {version.rank}, "
              f"alpha {version.alpha:g}, targets {', '.join(f'`{t}`' for t in version.target_modules)}. "
              f"Exported by [loramgr](https://pypi.org/project/loramgr/) from `{version.ref}`."), ""]
    if version.description:
        lines += [version.description, ""]
    if version.lineage is not None:
        lineage = version.lineage
        score = f", score {lineage.score:.4f} ({lineage.objective})" if lineage.score is not None else ""
        lines += [f"Composed with mode `{lineage.mode}`, seed {lineage.seed}{score}, from:", "",
                  "| source | weight |", "| --- | ---: |"]
        lines += [f"| `{s.ref}` | {s.weight:+.4f} |" for s in lineage.sources]
        lines.append("")
    auto = _AUTO_CLASSES.get(version.task_type or "", "AutoModel")
    lines += ["```python", "from peft import PeftModel", f"from transformers import {auto}", "",
              f'base = {auto}.from_pretrained("{version.base_model}")',
              f'model = PeftModel.from_pretrained(base, "{repo_id}")', "```", "<!-- loramgr:end -->", ""]
    return "\n".join(lines)


def export_card(version: AdapterVersion, repo_id: str, existing: str | None = None) -> str:
    """The card to publish ``version`` as ``repo_id`` with: ``existing`` (the version's own README.md, if any)
    with the Hub metadata set, the ``loramgr:`` fields replaced and loramgr's summary section put
    first (replaced, not repeated, on a later export). Raises ``InvalidArgument`` when
    ``existing`` has a malformed metadata block."""
    metadata, body = split_card(existing) if existing else ({}, "")
    tags = metadata.get("tags") if isinstance(metadata.get("tags"), list) else []
    metadata.update({"library_name": "peft", "base_model": version.base_model, "base_model_relation": "adapter",
                     "tags": list(dict.fromkeys([*EXPORT_TAGS, *(str(t) for t in tags)]))})
    if version.task_type in PIPELINE_TAGS:
        metadata.setdefault("pipeline_tag", PIPELINE_TAGS[version.task_type])
    metadata["loramgr"] = version_metadata(version)
    return render_card(metadata, _summary(version, repo_id) + _SECTION.sub("", body).lstrip("\n"))
