"""Generate the quickstart's synthetic recipe dataset (pipelines/data/recipes.jsonl).

    python scripts/make_recipe_data.py            # writes pipelines/data/recipes.jsonl
    python scripts/make_recipe_data.py --check    # exits 1 if the committed file is stale

In the spirit of the OpenAI cookbook's fine-tuning walkthrough (extract the generic
ingredients from a recipe), but every recipe here is made up from the lists below, so the
file is free to ship. Same seed -> byte-identical file. The assistant answers with the
generic ingredient names as one comma-separated line, in the order the recipe lists them
(the cookbook used a JSON list; a plain list keeps each name's tokens the same as in the
recipe text, which a small model learns to copy much faster).
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from pathlib import Path

SYSTEM = (
    "You are a helpful recipe assistant. You are to extract the generic ingredients from each of the recipes provided."
)
OUT = Path(__file__).resolve().parents[1] / "pipelines" / "data" / "recipes.jsonl"

# generic name -> (kind, units, modifiers that may precede the name in the recipe line)
INGREDIENTS: dict[str, tuple[str, list[str], list[str]]] = {
    "flour": ("bake", ["c.", "cups", "Tbsp."], ["all-purpose", "sifted", "self-rising", "plain"]),
    "sugar": ("bake", ["c.", "cups", "Tbsp.", "tsp."], ["granulated", "white", "fine"]),
    "brown sugar": ("bake", ["c.", "cups", "Tbsp."], ["firmly packed", "light", "dark"]),
    "powdered sugar": ("bake", ["c.", "cups"], ["sifted", ""]),
    "butter": ("both", ["c.", "Tbsp.", "stick", "lb."], ["softened", "melted", "unsalted", "cold"]),
    "margarine": ("both", ["c.", "Tbsp.", "stick"], ["soft", "melted"]),
    "eggs": ("both", ["", "large"], ["beaten", "fresh", "whole"]),
    "egg whites": ("bake", [""], ["stiffly beaten", "large"]),
    "milk": ("both", ["c.", "cups", "Tbsp."], ["evaporated", "whole", "cold", "warm", "skim"]),
    "buttermilk": ("bake", ["c.", "cups"], ["cold", ""]),
    "vanilla": ("bake", ["tsp.", "Tbsp."], ["pure", ""]),
    "baking soda": ("bake", ["tsp."], [""]),
    "baking powder": ("bake", ["tsp.", "Tbsp."], [""]),
    "salt": ("both", ["tsp.", "dash", "pinch"], ["", "kosher", "sea"]),
    "cinnamon": ("bake", ["tsp.", "Tbsp."], ["ground", ""]),
    "nutmeg": ("bake", ["tsp.", "dash"], ["ground", "grated"]),
    "nuts": ("bake", ["c.", "cups"], ["broken", "chopped", "toasted"]),
    "pecans": ("bake", ["c.", "cups"], ["chopped", "toasted", "halved"]),
    "walnuts": ("bake", ["c.", "cups"], ["chopped", "broken"]),
    "raisins": ("bake", ["c.", "cups"], ["seedless", "golden"]),
    "oats": ("bake", ["c.", "cups"], ["quick", "rolled", "old-fashioned"]),
    "chocolate chips": ("bake", ["c.", "oz.", "pkg."], ["semi-sweet", "milk", "dark"]),
    "cocoa": ("bake", ["c.", "Tbsp."], ["unsweetened", "dark"]),
    "coconut": ("bake", ["c.", "cups"], ["flaked", "shredded", "sweetened"]),
    "honey": ("both", ["c.", "Tbsp.", "tsp."], ["pure", "warm", ""]),
    "peanut butter": ("bake", ["c.", "Tbsp."], ["creamy", "crunchy"]),
    "bananas": ("bake", ["", "large"], ["ripe", "mashed", "very ripe"]),
    "apples": ("bake", ["", "large", "c."], ["peeled", "sliced", "tart"]),
    "lemon juice": ("both", ["Tbsp.", "tsp.", "c."], ["fresh", "bottled"]),
    "cream cheese": ("both", ["pkg.", "oz."], ["softened", "light"]),
    "sour cream": ("both", ["c.", "cups", "carton"], ["light", ""]),
    "whipping cream": ("bake", ["c.", "pt."], ["heavy", "cold"]),
    "cornstarch": ("both", ["Tbsp.", "tsp."], [""]),
    "shortening": ("bake", ["c.", "Tbsp."], ["vegetable", "solid"]),
    "chicken": ("savory", ["lb.", "c.", "cups", ""], ["cooked", "boneless", "diced", "fried"]),
    "ground beef": ("savory", ["lb.", "lbs."], ["lean", "browned"]),
    "pork chops": ("savory", ["", "lb."], ["thick", "boneless"]),
    "ham": ("savory", ["c.", "lb.", "slices"], ["cooked", "diced", "smoked"]),
    "bacon": ("savory", ["slices", "strips", "lb."], ["crisp", "thick", "cooked"]),
    "sausage": ("savory", ["lb.", "links"], ["pork", "smoked", "browned"]),
    "shrimp": ("savory", ["lb.", "c."], ["cooked", "peeled", "fresh"]),
    "tuna": ("savory", ["can", "oz."], ["drained", "white"]),
    "rice": ("savory", ["c.", "cups"], ["cooked", "long grain", "uncooked", "white"]),
    "noodles": ("savory", ["oz.", "pkg.", "c."], ["cooked", "wide", "egg"]),
    "macaroni": ("savory", ["c.", "oz."], ["elbow", "cooked"]),
    "potatoes": ("savory", ["", "lb.", "c."], ["peeled", "diced", "boiled", "medium"]),
    "onion": ("savory", ["", "c.", "Tbsp."], ["chopped", "minced", "medium", "sliced"]),
    "green pepper": ("savory", ["", "c."], ["chopped", "diced", "medium"]),
    "celery": ("savory", ["c.", "stalks", "ribs"], ["chopped", "diced", "sliced"]),
    "carrots": ("savory", ["", "c.", "cups"], ["sliced", "grated", "diced"]),
    "garlic": ("savory", ["clove", "cloves", "tsp."], ["minced", "crushed", "fresh"]),
    "tomatoes": ("savory", ["", "can", "c."], ["diced", "stewed", "ripe", "chopped"]),
    "tomato sauce": ("savory", ["can", "oz.", "c."], [""]),
    "mushrooms": ("savory", ["c.", "oz.", "can"], ["sliced", "fresh", "drained"]),
    "broccoli": ("savory", ["c.", "pkg.", "head"], ["frozen", "chopped", "fresh"]),
    "spinach": ("savory", ["pkg.", "c."], ["frozen", "fresh", "chopped"]),
    "corn": ("savory", ["can", "c.", "cups"], ["whole kernel", "frozen", "cream style"]),
    "green beans": ("savory", ["can", "c.", "lb."], ["cut", "french style", "fresh"]),
    "cheddar cheese": ("savory", ["c.", "cups", "oz."], ["shredded", "grated", "sharp"]),
    "parmesan cheese": ("savory", ["c.", "Tbsp."], ["grated", "fresh"]),
    "mozzarella cheese": ("savory", ["c.", "oz."], ["shredded", "part-skim"]),
    "cream of mushroom soup": ("savory", ["can", "cans"], ["condensed", ""]),
    "cream of chicken soup": ("savory", ["can", "cans"], ["condensed", ""]),
    "chicken broth": ("savory", ["c.", "cups", "can"], ["hot", "low-sodium", ""]),
    "mayonnaise": ("savory", ["c.", "Tbsp."], ["light", "real"]),
    "mustard": ("savory", ["tsp.", "Tbsp."], ["dry", "prepared", "Dijon"]),
    "pepper": ("savory", ["tsp.", "dash"], ["black", "ground", "fresh ground"]),
    "paprika": ("savory", ["tsp.", "dash"], ["sweet", "smoked", ""]),
    "oregano": ("savory", ["tsp."], ["dried", "crushed"]),
    "basil": ("savory", ["tsp.", "Tbsp."], ["dried", "fresh", "chopped"]),
    "parsley": ("savory", ["Tbsp.", "c."], ["chopped", "fresh", "dried"]),
    "olive oil": ("savory", ["Tbsp.", "c."], ["extra virgin", "light"]),
    "vegetable oil": ("both", ["c.", "Tbsp."], ["", "light"]),
    "soy sauce": ("savory", ["Tbsp.", "c."], ["light", "low-sodium"]),
    "vinegar": ("savory", ["Tbsp.", "c."], ["white", "cider", "red wine"]),
    "worcestershire sauce": ("savory", ["tsp.", "Tbsp."], [""]),
    "bread crumbs": ("savory", ["c.", "cups"], ["dry", "fine", "buttered"]),
    "crackers": ("savory", ["c.", "sleeve"], ["crushed", "saltine"]),
}

# staples that do not name a dish ("Vanilla Casserole")
PLAIN = {
    "flour",
    "sugar",
    "brown sugar",
    "powdered sugar",
    "butter",
    "margarine",
    "eggs",
    "egg whites",
    "milk",
    "vanilla",
    "baking soda",
    "baking powder",
    "salt",
    "nutmeg",
    "lemon juice",
    "cornstarch",
    "shortening",
    "onion",
    "garlic",
    "tomato sauce",
    "chicken broth",
    "mayonnaise",
    "mustard",
    "pepper",
    "paprika",
    "oregano",
    "basil",
    "parsley",
    "olive oil",
    "vegetable oil",
    "soy sauce",
    "vinegar",
    "worcestershire sauce",
    "bread crumbs",
    "crackers",
    "celery",
    "cream of mushroom soup",
    "cream of chicken soup",
    "sour cream",
    "whipping cream",
    "buttermilk",
    "honey",
}

QUANTITIES = ["1", "2", "3", "4", "1/2", "1/4", "3/4", "1/3", "2/3", "1 1/2", "2 1/2", "6", "8"]
SUFFIXES = ["", "", "", "", ", chopped", ", divided", " (optional)", ", at room temperature", ", drained"]

BAKE_DISHES = [
    "Cookies",
    "Cake",
    "Bread",
    "Muffins",
    "Bars",
    "Pie",
    "Pudding",
    "Brownies",
    "Squares",
    "Coffee Cake",
    "Cobbler",
    "Fudge",
    "Pound Cake",
    "Crisp",
]
SAVORY_DISHES = [
    "Casserole",
    "Soup",
    "Skillet",
    "Bake",
    "Salad",
    "Stew",
    "Dip",
    "Pie",
    "Stir Fry",
    "Supreme",
    "Hot Dish",
    "Chowder",
    "Loaf",
    "Spread",
]
TITLE_WORDS = [
    "Easy",
    "Quick",
    "Grandma's",
    "Old-Fashioned",
    "Best",
    "No-Bake",
    "Mom's",
    "Country",
    "Sunday",
    "Simple",
    "Company",
    "Holiday",
    "Aunt Mary's",
    "Creamy",
    "Classic",
    "Family",
]

BAKE_STEPS = [
    "Preheat oven to {temp} degrees.",
    "Cream {a} and {b} until light and fluffy.",
    "Mix {a} and {b} in a large bowl.",
    "Stir in {a}, then fold in {b}.",
    "Pour into a greased {pan} and bake {mins} minutes.",
    "Drop by teaspoonfuls onto waxed paper and let cool.",
    "Bake at {temp} degrees for {mins} minutes or until golden brown.",
    "Beat {a} well; add {b} gradually.",
    "Cool in the pan before cutting into squares.",
]
SAVORY_STEPS = [
    "Brown {a} in a large skillet; drain.",
    "Combine {a} and {b} in a saucepan over medium heat.",
    "Add {a} and simmer {mins} minutes.",
    "Place {a} in a greased {pan}; top with {b}.",
    "Bake at {temp} degrees for {mins} minutes.",
    "Stir in {a} and {b}; season to taste.",
    "Cook {a} until tender, then add {b}.",
    "Chill several hours before serving.",
    "Serve hot over {a}.",
]
PANS = ["9 x 13-inch pan", "8-inch square pan", "casserole dish", "loaf pan", "baking dish", "pie plate"]


def _line(rng: random.Random, name: str) -> str:
    _, units, mods = INGREDIENTS[name]
    qty = rng.choice(QUANTITIES)
    unit = rng.choice(units)
    mod = rng.choice(mods)
    if unit in ("can", "cans", "pkg.") and rng.random() < 0.5:
        unit = f"({rng.choice(['8', '10', '10 3/4', '12', '16'])} oz.) {unit}"
    words = [qty, unit, mod, name]
    if name in ("butter", "margarine") and rng.random() < 0.25:
        words.append("or margarine" if name == "butter" else "or butter")
    text = " ".join(w for w in words if w)
    return text + rng.choice(SUFFIXES)


def _recipe(rng: random.Random) -> tuple[str, list[str], str, list[str]]:
    kind = rng.choice(["bake", "savory"])
    pool = sorted(n for n, (k, _, _) in INGREDIENTS.items() if k in (kind, "both"))
    names = rng.sample(pool, rng.randint(3, 7))
    featured = [n for n in names if n not in PLAIN]
    dish = rng.choice(BAKE_DISHES if kind == "bake" else SAVORY_DISHES)
    main = f" {rng.choice(featured).title()}" if featured else ""
    title = f"{rng.choice(TITLE_WORDS)}{main} {dish}"
    steps = BAKE_STEPS if kind == "bake" else SAVORY_STEPS
    directions = []
    for template in rng.sample(steps, rng.randint(1, 2)):
        a, b = rng.sample(names, 2)
        directions.append(
            template.format(
                a=a,
                b=b,
                temp=rng.choice([325, 350, 375, 400]),
                mins=rng.choice([10, 15, 20, 25, 30, 45, 60]),
                pan=rng.choice(PANS),
            )
        )
    return title, [_line(rng, n) for n in names], " ".join(directions), names


def make_examples(n: int = 480, seed: int = 42) -> list[dict]:
    """``n`` chat examples, deterministic for a given seed."""
    rng = random.Random(seed)
    examples = []
    for _ in range(n):
        title, lines, directions, names = _recipe(rng)
        user = (
            f"Title: {title}\n\nIngredients:\n"
            + "\n".join(f"- {line}" for line in lines)
            + f"\n\nDirections: {directions}"
        )
        examples.append(
            {
                "messages": [
                    {"role": "system", "content": SYSTEM},
                    {"role": "user", "content": user},
                    {"role": "assistant", "content": ", ".join(names)},
                ]
            }
        )
    return examples


def render(examples: list[dict]) -> str:
    return "".join(json.dumps(e, ensure_ascii=False) + "\n" for e in examples)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=480)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("--check", action="store_true", help="fail if --out differs from a fresh build")
    args = parser.parse_args(argv)
    text = render(make_examples(args.n, args.seed))
    if args.check:
        ok = args.out.exists() and args.out.read_text() == text
        print(f"{args.out}: {'up to date' if ok else 'STALE, rerun scripts/make_recipe_data.py'}")
        return 0 if ok else 1
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    print(f"wrote {len(text.splitlines())} examples ({len(text.encode()) // 1024} KB) to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
