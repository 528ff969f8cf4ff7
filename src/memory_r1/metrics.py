"""Answer metrics shared by evaluation and the RL rewards (L0: stdlib + nltk).

F1 and BLEU-1 follow Mem0's evaluation harness (``evaluation/metrics/utils.py``), which the
Memory-R1 tables report; EM is SQuAD-style on the text after the last ``Answer:`` marker. The
RL reward calls these very functions, so the training signal and the reported metric cannot
drift apart. Every score is in [0, 1]; :func:`aggregate` can scale to x100 for tables.

Category 5 (adversarial) is never scored here; callers drop it (``data.locomo.questions``).
"""

from __future__ import annotations

import math
import re
import string
from collections.abc import Callable, Iterable, Mapping, Sequence
from functools import lru_cache
from typing import Any

from memory_r1.types import CATEGORY_NAMES

METRIC_NOTES = (
    "f1: Mem0 token-set F1 (lowercase; only . , ! ? replaced by spaces; whitespace split; "
    "duplicates count once; no stemming, articles kept; empty pred or gold -> 0). "
    "bleu1: nltk sentence_bleu, one reference, weights (1,0,0,0), SmoothingFunction().method1, "
    "lowercased, tokenised with nltk word_tokenize(s, preserve_line=True) (= NLTKWordTokenizer, "
    "no Punkt sentence split, works offline; identical to Mem0's word_tokenize on one-line "
    "answers, a sentence-internal final '.' stays attached on multi-sentence text); 0 on error. "
    "em: SQuAD normalisation (lowercase, drop ASCII punctuation, drop articles a/an/the, "
    "collapse whitespace) of the prediction vs str(gold). Predictions are scored on the text "
    "after the last 'Answer:' marker (bold optional, case-insensitive), else the whole output "
    "stripped. Aggregates are micro means over questions, per category (Mem0 names) and overall."
)

# ------------------------------------------------------------------------------------ answers

# "Answer:", "**Answer:**", "**Answer**:", "answer :" ...; the last occurrence wins.
_MARKER = re.compile(r"\*{0,2}\banswer\*{0,2}\s*:\s*\*{0,2}", re.IGNORECASE)


def has_answer_marker(text: str) -> bool:
    """Whether ``text`` holds an ``Answer:`` marker (the RL format check).

    >>> has_answer_marker("Memories: ...\\n**Answer:** Paris"), has_answer_marker("Paris")
    (True, False)
    """
    return _MARKER.search(text) is not None


def extract_answer(text: str) -> str:
    """The text after the LAST ``Answer:`` marker, stripped of whitespace and ``*``.

    Without a marker, the whole text stripped (so plain baselines score normally).

    >>> extract_answer("**Answer:** 7 May 2023")
    '7 May 2023'
    >>> extract_answer("Answer: first\\nanswer: **second**")
    'second'
    >>> extract_answer("  Paris  ")
    'Paris'
    """
    last = None
    for last in _MARKER.finditer(text):  # noqa: B007 - keep the last match
        pass
    rest = text[last.end() :] if last is not None else text
    return rest.strip().strip("*").strip()


# ---------------------------------------------------------------------------------------- F1


def _mem0_tokens(text: str) -> set[str]:
    text = text.lower()
    for ch in ".,!?":
        text = text.replace(ch, " ")
    return set(text.split())


def token_f1(pred: Any, gold: Any) -> float:
    """Mem0's set-based token F1 of ``str(pred)`` against ``str(gold)``.

    >>> token_f1("Paris, France.", "paris france")
    1.0
    >>> round(token_f1("the cat sat", "a cat"), 4)  # P = 1/3, R = 1/2
    0.4
    >>> token_f1("", "x")
    0.0
    """
    pred_s, gold_s = str(pred).strip(), str(gold).strip()
    if not pred_s or not gold_s:
        return 0.0
    p, g = _mem0_tokens(pred_s), _mem0_tokens(gold_s)
    if not p or not g:
        return 0.0
    common = len(p & g)
    if common == 0:
        return 0.0
    precision, recall = common / len(p), common / len(g)
    return 2 * precision * recall / (precision + recall)


# ------------------------------------------------------------------------------------ BLEU-1


@lru_cache(maxsize=1)
def _bleu_parts() -> tuple[Callable[..., Any], Callable[..., Any], Callable[[str], list[str]]]:
    # Imported lazily: nltk.translate pulls in more than metrics users always need.
    from nltk.tokenize import word_tokenize
    from nltk.translate.bleu_score import SmoothingFunction, sentence_bleu

    def tokenize(s: str) -> list[str]:
        # preserve_line=True: no Punkt model needed (offline), see METRIC_NOTES
        return list(word_tokenize(s, preserve_line=True))

    return sentence_bleu, SmoothingFunction().method1, tokenize


def bleu1(pred: Any, gold: Any) -> float:
    """Mem0's BLEU-1: BP x clipped unigram precision, lowercased NLTK word tokens.

    >>> bleu1("Paris, France.", "paris france")  # 2 of 4 tokens match; hyp longer, so BP = 1
    0.5
    >>> round(bleu1("paris", "paris , france"), 4)  # BP = exp(1 - 3/1)
    0.1353
    """
    sentence_bleu, smooth, tokenize = _bleu_parts()
    try:
        hyp = tokenize(str(pred).lower())
        ref = tokenize(str(gold).lower())
        score = sentence_bleu([ref], hyp, weights=(1, 0, 0, 0), smoothing_function=smooth)
        return float(score)
    except Exception:  # Mem0 scores any nltk failure as 0; the inputs are plain strings
        return 0.0


# ---------------------------------------------------------------------------------------- EM

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCT = set(string.punctuation)


def normalize_answer(s: Any) -> str:
    """SQuAD normalisation: lowercase, drop ASCII punctuation, drop a/an/the, collapse spaces.

    >>> normalize_answer("The  Eiffel-Tower, Paris!")
    'eiffeltower paris'
    """
    text = "".join(ch for ch in str(s).lower() if ch not in _PUNCT)
    return " ".join(_ARTICLES.sub(" ", text).split())


def exact_match(pred: Any, gold: Any) -> float:
    """1.0 iff the normalised prediction equals the normalised ``str(gold)``, else 0.0.

    >>> exact_match("The dance studio.", "a dance studio"), exact_match("2022", 2022)
    (1.0, 1.0)
    """
    return 1.0 if normalize_answer(pred) == normalize_answer(str(gold)) else 0.0


def score_prediction(pred_text: str, gold: Any) -> dict[str, float]:
    """F1, BLEU-1 and EM of one model output (after :func:`extract_answer`) against ``gold``.

    >>> score_prediction("Reasoning...\\n**Answer:** Paris", "Paris")
    {'f1': 1.0, 'bleu1': 1.0, 'em': 1.0}
    """
    answer = extract_answer(pred_text)
    gold_s = str(gold)
    return {
        "f1": token_f1(answer, gold_s),
        "bleu1": bleu1(answer, gold_s),
        "em": exact_match(answer, gold_s),
    }


# ------------------------------------------------------------------------------- aggregation


def _category_name(category: Any) -> str:
    """A row's group name: LoCoMo ids map to Mem0's names, any other string is its own name.

    Rejected (ValueError): ints outside 1-5, bools, empty or all-digit strings (a stringified
    LoCoMo id is a bug, not a name) and ``"overall"`` (reserved for the micro mean).
    """
    if isinstance(category, bool):
        raise ValueError(f"unknown category {category!r}; expected an id 1-5 or a name")
    if isinstance(category, int) and category in CATEGORY_NAMES:
        return CATEGORY_NAMES[category]
    if isinstance(category, str):
        name = category.strip()
        if name and not name.isdigit() and name != "overall":
            return name
    raise ValueError(f"unknown category {category!r}; expected an id 1-5 or a name")


def category_order(names: Iterable[str]) -> list[str]:
    """The report order of category names: LoCoMo's in id order, then the others sorted.

    Other names (LongMemEval's question types, ``"msc"``) sort alphabetically, so every run and
    every system lists them identically whatever order its questions were answered in.

    >>> category_order(["msc", "open-domain", "abstention", "single-hop"])
    ['single-hop', 'open-domain', 'abstention', 'msc']
    """
    present = set(names)
    locomo = [name for name in CATEGORY_NAMES.values() if name in present]
    return locomo + sorted(present - set(locomo))


def _summarise(rows: Sequence[Mapping[str, Any]], metrics: Sequence[str], scale: float) -> dict[str, Any]:
    out: dict[str, Any] = {"n": len(rows)}
    for m in metrics:
        values = [float(r[m]) for r in rows if r.get(m) is not None]
        if not values:
            continue  # metric absent (e.g. no judge run): skipped, not reported as 0
        out[m] = scale * math.fsum(values) / len(values)
        if len(values) != len(rows):
            out[f"n_{m}"] = len(values)  # only some rows carry it; mean is over those
    return out


def aggregate(
    rows: Iterable[Mapping[str, Any]],
    metrics: Sequence[str] = ("f1", "bleu1", "em", "j"),
    percent: bool = False,
) -> dict[str, dict[str, Any]]:
    """Micro means per category and overall.

    ``rows`` are dicts with ``"category"`` (LoCoMo id 1-5, a Mem0 name, or any other string,
    which is its own category, e.g. LongMemEval's ``"multi-session"``) and metric values in
    [0, 1]. Returns ``{category name: {"n": count, metric: mean, ...}, ..., "overall": {...}}``,
    with only the categories present: LoCoMo's in id order, then the string ones alphabetically
    (:func:`category_order`). Means are in [0, 1] unless
    ``percent=True`` (x100, as the paper's tables). A metric missing from every row of a group
    is left out; one present in only some rows is averaged over those, with ``n_<metric>``.

    >>> rows = [{"category": 1, "f1": 1.0}, {"category": 1, "f1": 0.0}, {"category": 4, "f1": 1.0}]
    >>> aggregate(rows, metrics=("f1",), percent=True)["overall"]["f1"]
    66.66666666666667
    """
    rows = list(rows)
    scale = 100.0 if percent else 1.0
    groups: dict[str, list[Mapping[str, Any]]] = {}
    for r in rows:
        groups.setdefault(_category_name(r["category"]), []).append(r)
    order = category_order(groups)
    result = {name: _summarise(groups[name], metrics, scale) for name in order}
    result["overall"] = _summarise(rows, metrics, scale)
    return result
