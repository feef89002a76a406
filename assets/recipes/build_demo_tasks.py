"""Build the three demo tasks shipped in assets/tasks/: CSVs the project writes itself, with a train/eval split.

  reviews    text,label                    modern product reviews written from templates and word lists;
                                           positive / negative (some reviews turn around with "but")
  testament  text,label                    a King James verse; old / new (which testament it comes from).
                                           Verses come only from the books the bundled model trained on;
                                           the probe books are never used.
  answers    sentence1,sentence2,label     a question and a short reply; yes / no (does the reply answer
                                           it?). Half the "no" replies answer another kind of question (a
                                           time for "where"), half answer nothing ("Ask me tomorrow.").

The three differ in domain (modern English vs. the model's own corpus), input style (one text vs. a pair) and
label words, so training on one can disturb another. Every row is written by this script from its own word
lists or from the public-domain KJV text; nothing is downloaded except the KJV package (see build_corpus.py).

    python assets/recipes/build_corpus.py --out /tmp/kjv
    python assets/recipes/build_demo_tasks.py --corpus /tmp/kjv --out assets/tasks
"""

from __future__ import annotations

import argparse
import csv
import random
from collections import Counter
from pathlib import Path

TRAIN_ROWS, EVAL_ROWS = 1000, 250

# --- reviews -------------------------------------------------------------------------------------------------

PRODUCTS = ["headphones", "coffee maker", "laptop", "phone case", "blender", "backpack", "desk lamp", "keyboard",
            "running shoes", "tent", "water bottle", "vacuum cleaner", "printer", "charger", "camera", "jacket",
            "mattress", "kettle", "router", "smartwatch", "office chair", "toaster", "speaker", "monitor"]
GOOD = ["works perfectly", "is excellent", "exceeded my expectations", "is worth every penny", "arrived quickly",
        "feels sturdy and well made", "is easy to use", "sounds amazing", "is great value", "does exactly what it says",
        "is comfortable all day", "still looks brand new", "has a battery that lasts for days",
        "was simple to set up", "is the best purchase I made this year", "is quiet and fast"]
BAD = ["stopped working after a week", "is cheaply made", "broke on the first day", "was a waste of money",
       "arrived damaged", "is awful", "feels flimsy", "was a pain to set up", "has a battery that dies in an hour",
       "is uncomfortable", "overheats constantly", "looks nothing like the photos", "is noisy and slow",
       "fell apart within a month", "keeps disconnecting", "is the worst purchase I made this year"]
GOOD_END = ["I would buy it again.", "Highly recommended.", "Five stars from me.", "My whole family loves it.",
            "Very happy with it.", "I am telling all my friends."]
BAD_END = ["I would not buy it again.", "Avoid this one.", "I am sending it back.", "One star.",
           "Very disappointed.", "Save your money."]
FILLER = ["I bought it for my sister.", "Delivery took three days.", "It comes in black and grey.",
          "I have used it for a month.", "It was on sale last week.", "I use it every morning.",
          "It replaced my old one.", ""]


def review(rng: random.Random, positive: bool) -> str:
    product = rng.choice(PRODUCTS)
    good, bad = rng.sample(GOOD, 2), rng.sample(BAD, 2)
    main, other = (good, bad) if positive else (bad, good)
    end = rng.choice(GOOD_END if positive else BAD_END)
    style = rng.random()
    if style < 0.2:
        # The verdict comes last and overrides the opening complaint or praise.
        text = f"At first I thought the {product} {other[0]}, but in fact it {main[0]}. {end}"
    elif style < 0.6:
        text = f"The {product} {main[0]} and {main[1]}. {rng.choice(FILLER)} {end}"
    else:
        text = f"{rng.choice(FILLER)} This {product} {main[0]}. {end}"
    return " ".join(text.split())


def build_reviews(rng: random.Random) -> list[dict]:
    return unique_rows(rng, lambda i: {"text": review(rng, i % 2 == 0), "label": "positive" if i % 2 == 0 else
                                       "negative"})


# --- answers -------------------------------------------------------------------------------------------------

NAMES = ["Maria", "Tom", "Anna", "Leo", "Sara", "Omar", "Lucy", "Ben", "Nina", "Jack", "Emma", "Raj"]
EVENTS = [("paint", "the fence"), ("sell", "the old bicycle"), ("meet", "the new neighbours"),
          ("bake", "the bread"), ("fix", "the radio"), ("visit", "the museum"), ("lose", "the ticket"),
          ("buy", "the flowers"), ("read", "the letter"), ("clean", "the windows"), ("find", "the keys"),
          ("call", "the plumber"), ("book", "the hotel"), ("wash", "the car")]
COUNTED = [("buy", "apples"), ("carry", "boxes"), ("write", "letters"), ("take", "photos"), ("borrow", "books"),
           ("plant", "trees"), ("order", "pizzas"), ("invite", "guests")]
ANSWERS = {
    "where": ["In the kitchen.", "At the station.", "In the garden.", "At the library.", "Under the bridge.",
              "On the roof.", "At the market.", "In the car.", "Near the school.", "At her office."],
    "when": ["At seven o'clock.", "On Monday morning.", "Last summer.", "After lunch.", "In December.",
             "Yesterday evening.", "At midnight.", "Before breakfast.", "Two weeks ago.", "On her birthday."],
    "how many": ["Three.", "Twelve.", "About forty.", "Only two.", "Five of them.", "A hundred.", "Seven.",
                 "Nine or ten.", "Just one.", "Twenty."],
}


# Replies that answer no question at all: the easy half of the "no" rows.
NON_ANSWERS = ["Ask me tomorrow.", "I would rather not say.", "Nice weather today.", "The soup is too salty.",
               "Who knows?", "Let us talk about something else.", "My phone is ringing.", "That is a good question.",
               "I forgot my glasses.", "The bus is late again."]


def question(rng: random.Random, kind: str) -> str:
    name = rng.choice(NAMES)
    if kind == "how many":
        verb, things = rng.choice(COUNTED)
        return f"How many {things} did {name} {verb}?"
    verb, obj = rng.choice(EVENTS)
    return f"{kind.capitalize()} did {name} {verb} {obj}?"


def build_answers(rng: random.Random) -> list[dict]:
    kinds = list(ANSWERS)

    def row(i: int) -> dict:
        kind, fits = rng.choice(kinds), i % 2 == 0
        if fits:
            reply = rng.choice(ANSWERS[kind])
        elif i % 4 == 1:
            reply = rng.choice(ANSWERS[rng.choice([k for k in kinds if k != kind])])
        else:
            reply = rng.choice(NON_ANSWERS)
        return {"sentence1": question(rng, kind), "sentence2": reply, "label": "yes" if fits else "no"}

    return unique_rows(rng, row)


# --- testament -----------------------------------------------------------------------------------------------

def build_testament(rng: random.Random, corpus: Path) -> list[dict]:
    with (corpus / "kjv_verses.csv").open(encoding="utf-8", newline="") as f:
        verses = [r for r in csv.DictReader(f) if r["held_out"] == "0" and 8 <= len(r["text"].split()) <= 40]
    half = (TRAIN_ROWS + EVAL_ROWS) // 2
    rows = []
    for testament in ("old", "new"):
        pool = [v for v in verses if v["testament"] == testament]
        rows += [{"text": v["text"], "label": testament} for v in rng.sample(pool, half)]
    rng.shuffle(rows)
    return rows


# --- common --------------------------------------------------------------------------------------------------

def unique_rows(rng: random.Random, make, n: int = TRAIN_ROWS + EVAL_ROWS) -> list[dict]:
    """`n` distinct rows (labels alternate by index, so classes are balanced), shuffled."""
    rows, seen, i = [], set(), 0
    while len(rows) < n:
        r = make(len(rows))
        key = tuple(v for k, v in r.items() if k != "label")
        i += 1
        if i > 100 * n:
            raise SystemExit("word lists too small for the requested number of distinct rows")
        if key not in seen:
            seen.add(key)
            rows.append(r)
    rng.shuffle(rows)
    return rows


def split(rows: list[dict]) -> tuple[list[dict], list[dict]]:
    """Stratified: each label keeps the same share in train and eval."""
    by_label: dict[str, list[dict]] = {}
    for r in rows:
        by_label.setdefault(r["label"], []).append(r)
    train, evals = [], []
    share = EVAL_ROWS / len(rows)
    for items in by_label.values():
        k = round(len(items) * share)
        evals += items[:k]
        train += items[k:]
    order = {id(r): i for i, r in enumerate(rows)}
    return sorted(train, key=lambda r: order[id(r)]), sorted(evals, key=lambda r: order[id(r)])


def write_csv(rows: list[dict], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]), lineterminator="\n")
        w.writeheader()
        w.writerows(rows)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--corpus", type=Path, required=True, help="folder from build_corpus.py (for testament)")
    ap.add_argument("--out", type=Path, required=True, help="assets/tasks")
    ap.add_argument("--seed", type=int, default=3)
    args = ap.parse_args()
    builders = {"reviews": lambda rng: build_reviews(rng), "testament": lambda rng: build_testament(rng, args.corpus),
                "answers": lambda rng: build_answers(rng)}
    for name, build in builders.items():
        rng = random.Random(f"{args.seed}-{name}")
        train, evals = split(build(rng))
        if {tuple(sorted(r.items())) for r in train} & {tuple(sorted(r.items())) for r in evals}:
            raise SystemExit(f"{name}: a row is in both train and eval")
        write_csv(train, args.out / name / "train.csv")
        write_csv(evals, args.out / name / "eval.csv")
        for part, rows in (("train", train), ("eval", evals)):
            print(f"{name}/{part}.csv: {len(rows)} rows, {dict(sorted(Counter(r['label'] for r in rows).items()))}")


if __name__ == "__main__":
    main()
