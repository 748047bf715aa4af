"""Metric values checked against hand-computed numbers."""

from __future__ import annotations

import sys

import pytest

from ftpipe.contracts import MetricCaps
from ftpipe.evaluation import metrics as M
from ftpipe.evaluation.metrics import (
    MetricError,
    exact_match,
    json_valid,
    normalize_text,
    resolve_metric,
    rouge_l,
    score,
    token_f1,
)


@pytest.mark.parametrize(
    "text, expected",
    [
        ("The  Cat's   hat!", "cats hat"),  # articles go, punctuation is deleted (SQuAD)
        ("  \tan apple\n", "apple"),
        ("Ｈｅｌｌｏ　ｗｏｒｌｄ", "hello world"),  # NFKC folds full-width letters and space
        ("ﬁne Café", "fine café"),  # the ﬁ ligature unfolds; accents stay
        ("«Quoted» — text…", "quoted text"),  # unicode punctuation goes too
        ("theatre anthem", "theatre anthem"),  # articles only as whole words
        ("", ""),
    ],
)
def test_normalize_text(text: str, expected: str) -> None:
    assert normalize_text(text) == expected


@pytest.mark.parametrize(
    "pred, ref, expected",
    [
        ("Paris.", "paris", 1.0),
        ("The Paris", "Paris", 1.0),
        ("Paris  France", "paris, france", 1.0),
        ("Paris", "Lyon", 0.0),
        ("", "", 1.0),
        ("", "Paris", 0.0),
        ("a", "", 1.0),  # an article alone normalises to nothing
        ("ＰＡＲＩＳ", "paris", 1.0),
    ],
)
def test_exact_match(pred: str, ref: str, expected: float) -> None:
    assert exact_match(pred, ref) == expected


@pytest.mark.parametrize(
    "pred, ref, expected",
    [
        # pred tokens {cat, sat, on, mat}, ref {cat, on, mat}: P=3/4, R=1 -> 6/7
        ("the cat sat on the mat", "a cat on a mat", 6 / 7),
        # multiset overlap: "go" x3 vs x1 -> common 1, P=1/3, R=1 -> 1/2
        ("go go go", "go", 0.5),
        # P=1/2 (x of x,y), R=1/3 (x of x,z,w) -> 2*(1/6)/(5/6) = 2/5
        ("x y", "x z w", 0.4),
        ("Hello, world!", "hello world", 1.0),
        ("x", "y", 0.0),
        ("", "", 1.0),
        ("", "x", 0.0),
        ("x", "", 0.0),
        ("  ", "\n", 1.0),
    ],
)
def test_token_f1(pred: str, ref: str, expected: float) -> None:
    assert token_f1(pred, ref) == pytest.approx(expected)


@pytest.mark.parametrize(
    "pred, ref, expected",
    [
        # LCS of [cat sat mat on] and [cat on mat] is 2: P=1/2, R=2/3 -> 4/7
        ("cat sat mat on", "cat on mat", 4 / 7),
        # reversed order: LCS 1 of 3 -> P=R=1/3
        ("x y z", "z y x", 1 / 3),
        ("The cat sat.", "the cat sat", 1.0),
        # LCS [p q] of 5 and 2 tokens: P=2/5, R=1 -> 2*(2/5)/(7/5) = 4/7
        ("p r q s t", "p q", 4 / 7),
        ("", "", 1.0),
        ("", "x", 0.0),
        ("x", "y", 0.0),
    ],
)
def test_rouge_l(pred: str, ref: str, expected: float) -> None:
    assert rouge_l(pred, ref) == pytest.approx(expected)


def test_rouge_l_differs_from_token_f1_on_order() -> None:
    # Same bag of words: token F1 is perfect, ROUGE-L sees the order.
    assert token_f1("x y z", "z y x") == 1.0
    assert rouge_l("x y z", "z y x") == pytest.approx(1 / 3)


@pytest.mark.parametrize(
    "pred, expected",
    [
        ('{"a": 1}', 1.0),
        ("  [1, 2]\n", 1.0),
        ('```json\n{"a": [1, 2]}\n```', 1.0),
        ("{a: 1}", 0.0),
        ('{"a": 1', 0.0),
        ("", 0.0),
        ('Sure! {"a": 1}', 0.0),
    ],
)
def test_json_valid(pred: str, expected: float) -> None:
    assert json_valid(pred, "ignored") == expected


def test_resolve_builtins() -> None:
    assert resolve_metric("token_f1") is token_f1
    assert resolve_metric("exact_match") is exact_match
    assert M.is_model_metric("loss") and M.is_model_metric("perplexity")
    assert not M.higher_is_better("loss") and M.higher_is_better("rouge_l")


def test_model_metrics_are_not_text_metrics() -> None:
    with pytest.raises(MetricError, match="'loss' is computed from the model"):
        resolve_metric("loss")
    # The registry resolves built-ins as attributes of this module.
    assert callable(M.loss) and M.perplexity.model_metric


def test_unknown_metric_names_itself() -> None:
    with pytest.raises(MetricError) as err:
        resolve_metric("tokn_f1")
    assert "'tokn_f1'" in str(err.value) and "token_f1" in str(err.value)


def test_custom_metric_by_import_path(tmp_path, monkeypatch) -> None:
    (tmp_path / "my_metrics_ev.py").write_text("def starts_same(p, r):\n    return float(p[:1] == r[:1])\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    fn = resolve_metric("my_metrics_ev:starts_same")
    assert fn("abc", "axe") == 1.0
    with pytest.raises(MetricError, match="has no attribute 'nope'"):
        resolve_metric("my_metrics_ev:nope")
    with pytest.raises(MetricError, match="cannot import module 'no_such_module_xyz'"):
        resolve_metric("no_such_module_xyz:f")
    with pytest.raises(MetricError, match="package.module:function"):
        resolve_metric("my_metrics_ev:")
    sys.modules.pop("my_metrics_ev", None)


def _plugged(prediction: str, reference: str) -> float:
    return 0.25


_plugged.caps = MetricCaps(higher_is_better=False)  # type: ignore[attr-defined]


def test_entry_point_metric(monkeypatch) -> None:
    """Metric plugins come from the one registry, with their declared caps."""
    from importlib.metadata import EntryPoint, EntryPoints

    from ftpipe import registry
    from ftpipe.errors import PluginError

    def install(*eps: EntryPoint) -> None:
        monkeypatch.setattr(registry, "entry_points", lambda: EntryPoints(eps))
        registry.plugins.cache_clear()

    try:
        install(EntryPoint("plugged", f"{__name__}:_plugged", M.ENTRY_POINT_GROUP))
        assert resolve_metric("plugged") is _plugged
        assert M.higher_is_better("plugged") is False and not M.is_model_metric("plugged")
        install(EntryPoint("broken", "no_such_metrics_module:fn", M.ENTRY_POINT_GROUP))
        with pytest.raises(PluginError, match=r"plugin 'broken' \(no_such_metrics_module:fn\) failed to load"):
            resolve_metric("broken")
    finally:
        registry.plugins.cache_clear()


def test_score_checks_the_value() -> None:
    assert score(lambda p, r: 1, "one", "a", "b") == 1.0

    class Scalar:  # like a numpy scalar or a 0-d tensor
        def __float__(self) -> float:
            return 0.5

    assert score(lambda p, r: Scalar(), "half", "a", "b") == 0.5
    with pytest.raises(MetricError, match="'bad' returned str"):
        score(lambda p, r: "high", "bad", "a", "b")
    with pytest.raises(MetricError, match="'nan' returned NaN"):
        score(lambda p, r: float("nan"), "nan", "a", "b")


def test_evaluation_imports_nothing_heavy() -> None:
    import subprocess
    import sys as _sys

    code = (
        "import sys, ftpipe.evaluation, ftpipe.evaluation.generate; "
        "print(sorted(m for m in ('torch', 'transformers', 'openai', 'matplotlib') if m in sys.modules))"
    )
    out = subprocess.run([_sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
