"""What people type is understood: the evaluation set meets its targets in every language,
without the examples having seen its phrases, and answer words read as people mean them."""

from __future__ import annotations

from pathlib import Path

import pytest

from bot.engine.understand import Understander, evaluate, normalise
from bot.engine.yamlfile import load_yaml
from bot.settings import PROJECT_ROOT
from bot.understand_cli import ACCURACY_TARGET, DANGER_TARGET, EVAL_SET

UNDERSTANDING = PROJECT_ROOT / "flows" / "understanding"


@pytest.fixture(scope="module")
def understander() -> Understander:
    return Understander.from_dir(UNDERSTANDING)


@pytest.mark.parametrize("lang", ["km", "lo", "th", "vi", "en"])
def test_the_evaluation_set_meets_its_targets(understander: Understander, lang: str) -> None:
    [result] = evaluate(understander, EVAL_SET / f"{lang}.yaml")
    assert result.total >= 30, "at least 30 phrases per language"
    assert result.danger_total >= 5
    assert result.accuracy >= ACCURACY_TARGET, result.misses
    assert result.danger_recall >= DANGER_TARGET and result.danger_unknown == 0, result.misses


@pytest.mark.parametrize("lang", ["km", "lo", "th", "vi", "en"])
def test_no_evaluation_phrase_is_an_example(lang: str) -> None:
    examples = load_yaml(UNDERSTANDING / f"{lang}.yaml")["intents"]
    known = {normalise(str(text)).replace(" ", "") for texts in examples.values() for text in texts}
    cases = load_yaml(EVAL_SET / f"{lang}.yaml")["cases"]
    copied = [case["text"] for case in cases if normalise(str(case["text"])).replace(" ", "") in known]
    assert not copied, f"evaluation phrases copied into the examples: {copied}"


@pytest.mark.parametrize(("lang", "text", "meaning"), [
    ("th", "ใช่", "yes"), ("th", "ไม่ใช่ค่ะ", "no"), ("th", "ไม่แน่ใจ", "not_sure"), ("km", "ចាស", "yes"), ("km", "បាទ", "yes"),
    ("lo", "ແມ່ນ", "yes"), ("lo", "ບໍ່", "no"), ("vi", "co", "yes"), ("vi", "có", "yes"), ("vi", "khong", "no"),
    ("en", "yes", "yes"), ("en", "not sure", "not_sure"),
])
def test_answer_words_read_as_people_mean_them(understander: Understander, lang: str, text: str, meaning: str) -> None:
    assert understander.answer(text, lang) == meaning
    assert understander.understand(text, lang).intent != "danger"


def test_an_answer_word_inside_another_word_is_not_an_answer(understander: Understander) -> None:
    assert understander.answer("นายจ้างตีหนูทุกวัน", "th") is None, "จ้า (yes) inside นายจ้าง (employer)"
    assert understander.answer("they sent me back home", "en", whole=True) is None


def test_routes_and_categories_are_read_from_a_first_message(understander: Understander) -> None:
    assert understander.understand("i want to go from cambodia to thailand", "en").slots == {"origin": "KH", "destination": "TH"}
    assert understander.understand("they took my passport in malaysia", "en").slots == {"destination": "MY", "category": "passport"}


def test_the_understand_command_prints_one_json_object_per_text(capsys: pytest.CaptureFixture[str]) -> None:
    import json

    from bot.__main__ import main
    assert main(["understand", "--lang", "vi", "bi giu ho chieu", "kiem tra cong ty"]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [set(line) for line in lines] == [{"text", "intent", "slots", "score"}] * 2
    assert [line["intent"] for line in lines] == ["report", "agency"]


def test_the_eval_command_prints_figures_per_language(capsys: pytest.CaptureFixture[str]) -> None:
    from bot.__main__ import main
    assert main(["understand", "--eval", str(Path(EVAL_SET))]) == 0
    out = capsys.readouterr().out
    assert all(f"\n{lang} " in out for lang in ("km", "lo", "th", "vi", "en")) and "met" in out


@pytest.mark.parametrize("lang", ["km", "lo", "th", "vi", "en"])
def test_a_danger_word_in_a_report_description_is_found_as_a_full_reading_finds_it(understander: Understander, lang: str) -> None:
    """A description typed into a report is only checked for danger words (the full reading
    scores it against every example for nothing): the check must agree with the reading on
    every evaluation phrase, the danger ones included, and on a danger word inside a long text."""
    cases = [str(case["text"]) for case in load_yaml(EVAL_SET / f"{lang}.yaml")["cases"]]
    words = load_yaml(UNDERSTANDING / f"{lang}.yaml")["danger_words"]
    cases += [f"the agency kept our passports {word} and we cannot leave" for word in words[:5]]
    assert any(understander.names_danger(text, lang) for text in cases)
    for text in cases:
        assert understander.names_danger(text, lang) == understander.understand(text, lang).danger_word, text
