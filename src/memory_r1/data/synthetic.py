"""A tiny synthetic LoCoMo-schema fixture (L1; stdlib only) for tests and demos.

Two conversations with the real train/validation ids (``conv-26``, ``conv-30``), so
``split_conversations(convs, "train")`` and ``"validation"`` work on it (``"test"`` is empty).
Each has two sessions of four turns, one image turn (``blip_caption``), six QA items and
LoCoMo's quirks in miniature:

* an int answer in each conversation (``3``, ``6``), loaded as ``"3"``, ``"6"``;
* a category-5 item with only ``adversarial_answer`` (loaded with ``answer == ""``);
* one malformed evidence string per conversation (``"D1:2; D2:1"``, ``"D1:1 D1:2"``);
* a phantom ``session_3_date_time`` key in conv-26 without a session;
* observations, one fact tied to a list of dia_ids.

Every non-adversarial gold answer is stated (or, for dates, derivable) in the turns.
Train (conv-26) covers categories 1-4; validation (conv-30), like the real one, has no
category 3. Non-adversarial counts: conv-26 5, conv-30 5.
"""

from __future__ import annotations

import copy
import json
import os
from pathlib import Path
from typing import Any


def _turn(dia_id: str, speaker: str, text: str, **image: Any) -> dict[str, Any]:
    return {"speaker": speaker, "dia_id": dia_id, "text": text, **image}


_CONV_26: dict[str, Any] = {
    "sample_id": "conv-26",
    "conversation": {
        "speaker_a": "Caroline",
        "speaker_b": "Melanie",
        "session_1_date_time": "1:56 pm on 8 May, 2023",
        "session_1": [
            _turn(
                "D1:1",
                "Caroline",
                "Hey Mel! I went to an LGBTQ support group yesterday and it was so powerful.",
            ),
            _turn(
                "D1:2",
                "Melanie",
                "That's great, Caroline! I'm swamped with the kids and work, so painting is how I unwind.",
            ),
            _turn(
                "D1:3",
                "Caroline",
                "The transgender stories were so inspiring. I'm thinking about a career in counseling to help people like me.",
            ),
            _turn(
                "D1:4",
                "Melanie",
                "You'd be great at that! Here's the lake sunrise I painted last year.",
                img_url=["https://example.invalid/lake_sunrise.jpg"],
                blip_caption="a photo of a painting of a sunrise over a lake",
                query="lake sunrise painting",
            ),
        ],
        "session_2_date_time": "1:14 pm on 25 May, 2023",
        "session_2": [
            _turn(
                "D2:1",
                "Melanie",
                "Hey Caroline! I ran a charity race for mental health last Saturday. Running clears my head.",
            ),
            _turn(
                "D2:2",
                "Caroline",
                "Awesome, Mel! I've been researching adoption agencies. I want to build a family of my own.",
            ),
            _turn(
                "D2:3",
                "Melanie",
                "That's wonderful. I took my 3 kids camping at the beach last weekend, they loved it.",
            ),
            _turn(
                "D2:4",
                "Caroline",
                "I moved here from Sweden 4 years ago, so having a family means a lot to me.",
            ),
        ],
        # phantom key, as in the real conv-26: a date without a session
        "session_3_date_time": "7:55 pm on 9 June, 2023",
    },
    "qa": [
        {
            "question": "When did Caroline go to the LGBTQ support group?",
            "answer": "7 May 2023",
            "evidence": ["D1:1"],
            "category": 2,
        },
        {
            "question": "What does Melanie do to destress?",
            "answer": "Painting, running",
            "evidence": ["D1:2; D2:1"],
            "category": 1,
        },
        {
            "question": "What career is Caroline considering?",
            "answer": "counseling",
            "evidence": ["D1:3"],
            "category": 4,
        },
        {
            "question": "How many children does Melanie have?",
            "answer": 3,
            "evidence": ["D2:3"],
            "category": 1,
        },
        {
            "question": "Would Caroline likely want to be a parent?",
            "answer": "Yes; she is researching adoption agencies",
            "evidence": ["D2:2"],
            "category": 3,
        },
        {
            "question": "What did Caroline realize after the charity race?",
            "adversarial_answer": "self-care is important",
            "evidence": ["D2:1"],
            "category": 5,
        },
    ],
    "observation": {
        "session_1_observation": {
            "Caroline": [
                [
                    "Caroline attended an LGBTQ support group and found the transgender stories inspiring.",
                    "D1:1",
                ],
                ["Caroline is considering a career in counseling.", "D1:3"],
            ],
            "Melanie": [
                ["Melanie paints to unwind from kids and work.", "D1:2"],
                ["Melanie painted a lake sunrise last year.", "D1:4"],
            ],
        },
        "session_2_observation": {
            "Caroline": [
                ["Caroline is researching adoption agencies to build a family.", "D2:2"],
                ["Caroline moved from Sweden 4 years ago.", "D2:4"],
            ],
            "Melanie": [
                ["Melanie ran a charity race for mental health; running clears her head.", "D2:1"],
                ["Melanie has 3 kids and took them camping at the beach.", ["D2:3"]],
            ],
        },
    },
    "session_summary": {
        "session_1_summary": "Caroline and Melanie talked on 8 May 2023 about Caroline's support group, her interest in counseling, and Melanie's painting.",
        "session_2_summary": "On 25 May 2023 Melanie described a charity race and a beach camping trip; Caroline talked about adoption.",
    },
    "event_summary": {
        "events_session_1": {
            "Caroline": ["Caroline attends an LGBTQ support group."],
            "Melanie": [],
            "date": "8 May, 2023",
        },
        "events_session_2": {
            "Caroline": [],
            "Melanie": ["Melanie runs a charity race."],
            "date": "25 May, 2023",
        },
    },
}

_CONV_30: dict[str, Any] = {
    "sample_id": "conv-30",
    "conversation": {
        "speaker_a": "Jon",
        "speaker_b": "Gina",
        "session_1_date_time": "4:04 pm on 20 January, 2023",
        "session_1": [
            _turn(
                "D1:1",
                "Jon",
                "Hey Gina! I lost my job as a banker yesterday, so I'm going to start my own dance studio.",
            ),
            _turn(
                "D1:2",
                "Gina",
                "Sorry to hear that, Jon! I lost my job at Door Dash this month, so we both lost our jobs.",
            ),
            _turn("D1:3", "Jon", "Dance has been my passion since I was 6, so this feels right."),
            _turn(
                "D1:4",
                "Gina",
                "Go for it! Here's the trophy from my old dance team.",
                img_url=["https://example.invalid/trophy.jpg"],
                blip_caption="a photo of a dance trophy on a shelf",
                query="dance trophy",
            ),
        ],
        "session_2_date_time": "2:32 pm on 29 January, 2023",
        "session_2": [
            _turn("D2:1", "Gina", "Jon, I just launched an online clothing store!"),
            _turn(
                "D2:2",
                "Jon",
                "Congrats! I found a space downtown for the studio and I'm looking for investors.",
            ),
            _turn("D2:3", "Gina", "I could help with the studio's social media if you like."),
            _turn("D2:4", "Jon", "That would be amazing, thanks Gina!"),
        ],
    },
    "qa": [
        {
            "question": "When did Jon lose his job as a banker?",
            "answer": "19 January, 2023",
            "evidence": ["D1:1"],
            "category": 2,
        },
        {
            "question": "What business is Jon starting?",
            "answer": "a dance studio",
            "evidence": ["D1:1"],
            "category": 4,
        },
        {
            "question": "How old was Jon when he started dancing?",
            "answer": 6,
            "evidence": ["D1:3"],
            "category": 1,
        },
        {
            "question": "What did Jon and Gina both lose?",
            "answer": "their jobs",
            "evidence": ["D1:1 D1:2"],
            "category": 1,
        },
        {
            "question": "What did Gina launch?",
            "answer": "an online clothing store",
            "evidence": ["D2:1"],
            "category": 4,
        },
        {
            "question": "What did Jon launch?",
            "adversarial_answer": "an online clothing store",
            "evidence": ["D2:1"],
            "category": 5,
        },
    ],
    "observation": {
        "session_1_observation": {
            "Jon": [
                ["Jon lost his job as a banker and plans to open a dance studio.", "D1:1"],
                ["Jon has loved dance since he was 6.", "D1:3"],
            ],
            "Gina": [["Gina lost her job at Door Dash.", "D1:2"]],
        },
        "session_2_observation": {
            "Jon": [
                ["Jon found a downtown space for his studio and is looking for investors.", ["D2:2", "D2:4"]]
            ],
            "Gina": [
                ["Gina launched an online clothing store.", "D2:1"],
                ["Gina offered to help with the studio's social media.", "D2:3"],
            ],
        },
    },
    "session_summary": {
        "session_1_summary": "On 20 January 2023 Jon said he lost his banking job and wants to open a dance studio; Gina lost her job too.",
        "session_2_summary": "On 29 January 2023 Gina launched an online clothing store and Jon found a studio space.",
    },
    "event_summary": {
        "events_session_1": {
            "Jon": ["Jon loses his job as a banker."],
            "Gina": ["Gina loses her job at Door Dash."],
            "date": "20 January, 2023",
        },
        "events_session_2": {
            "Jon": [],
            "Gina": ["Gina launches an online clothing store."],
            "date": "29 January, 2023",
        },
    },
}


def tiny_locomo() -> list[dict[str, Any]]:
    """A fresh (deep-copied) two-sample LoCoMo-schema list; callers may mutate it freely."""
    return copy.deepcopy([_CONV_26, _CONV_30])


def write_tiny_locomo(path: str | os.PathLike[str]) -> Path:
    """Write :func:`tiny_locomo` as JSON to ``path`` (parents created); returns the path."""
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(tiny_locomo(), indent=1, ensure_ascii=False), encoding="utf-8")
    return out
