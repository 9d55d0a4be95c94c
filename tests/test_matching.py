"""Keyword matching across scripts: no spaces in Khmer, Lao and Thai; Vietnamese without accents."""

from bot.engine.matching import contains_keyword, first_match, fold


def test_vietnamese_typed_without_diacritics_matches():
    assert contains_keyword("toi can duong day nong gap", "đường dây nóng")
    assert fold("Đường Dây Nóng") == "duong day nong"


def test_khmer_vowel_signs_are_kept_when_folding():
    # Khmer dependent vowels are combining marks; stripping them would merge different words.
    assert fold("ជំនួយ") == "ជំនួយ"


def test_thai_keyword_found_inside_text_without_spaces():
    assert contains_keyword("ฉันต้องการสายด่วนช่วยเหลือ", "สายด่วน")


def test_lao_keyword_found_even_if_keyword_has_a_space():
    assert contains_keyword("ຂ້ອຍຕ້ອງການເບີໂທສຸກເສີນ", "ເບີໂທ ສຸກເສີນ")


def test_khmer_keyword_ignores_zero_width_spaces():
    assert contains_keyword("ខ្ញុំ\u200bត្រូវការ\u200bជំនួយ", "ត្រូវការជំនួយ")


def test_latin_keywords_match_whole_words_only():
    assert contains_keyword("I need help please", "help")
    assert not contains_keyword("sosa", "sos")


def test_longest_keyword_wins():
    candidates = [("menu", ["menu"]), ("language", ["change language", "language"])]
    assert first_match("please change language", candidates) == "language"
    assert first_match("nothing here", candidates) is None
