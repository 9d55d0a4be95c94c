"""The recruitment-agency check: the registry file, its import, fuzzy lookup in any script,
and the journey in the chat. Every agency here is fictional (tests/fixtures)."""

from __future__ import annotations

import datetime as dt
import re
import shutil
from pathlib import Path

import pytest
from sqlmodel import select

from bot.__main__ import main
from bot.app import Core
from bot.check import check_project, format_report
from bot.engine.yamlfile import load_yaml
from bot.features.agencies import import_file, read_agencies
from bot.features.agencies.registry import COLUMNS
from bot.features.agencies.search import Matcher
from bot.settings import PROJECT_ROOT
from storage.agencies import Agency
from storage.db import connect
from tests.conftest import RunningBot
from tests.fakes.bot_api import visible_text

FIXTURES = Path(__file__).parent / "fixtures"
FICTIONAL = FIXTURES / "agencies_fictional.csv"
KHMER = re.compile(r"[\u1780-\u17ff]")

# A registry file with one good row and a mistake on every other row; the line of each.
MALFORMED = [
    ",".join(COLUMNS),
    "KH,KH-TEST-0101,Example Good Row (FICTIONAL),,,licensed,2024-01-01,2099-12-31,,,FICTIONAL list,,2025-01-15",  # 2: fine
    "KH,KH-TEST-0102,Example Bad Status (FICTIONAL),,,approved,,,,,FICTIONAL list,,2025-01-15",  # 3
    "XX,XX-1,Example Bad Country (FICTIONAL),,,licensed,,,,,FICTIONAL list,,2025-01-15",  # 4
    "KH,,Example No Licence (FICTIONAL),,,licensed,,,,,FICTIONAL list,,2025-01-15",  # 5
    "KH,KH-TEST-0105,Example Bad Date (FICTIONAL),,,licensed,2024-13-01,,,,FICTIONAL list,,2025-01-15",  # 6
    "KH,KH-TEST-0106,ក្រុមហ៊ុន គំរូ,,,licensed,,,,,FICTIONAL list,,2025-01-15",  # 7: Khmer in the Latin column
    "KH,KH-TEST-0107,Example No Source (FICTIONAL),,,licensed,,,,,,,",  # 8
    "KH,KH-TEST-0108,Example Too Few Fields (FICTIONAL),licensed",  # 9
    "KH,KH-TEST-0101,Example Good Row Again (FICTIONAL),,,licensed,,,,,FICTIONAL list,,2025-01-15",  # 10: same licence as line 2
    "TH,TH-TEST-0110,Example Thai Name In Lao (FICTIONAL),ບໍລິສັດ ຕົວຢ່າງ,,blacklisted,,,,,FICTIONAL list,ftp://example.org,2999-01-01",  # 11
]
EXPECTED_REASONS = {
    3: "status 'approved' is not one of licensed, suspended, revoked, blacklisted",
    4: "country 'XX' is not one of KH, LA, MM, TH, VN",
    5: "licence_no is needed for a licensed agency",
    6: "licence_valid_from '2024-13-01' is not a date",
    7: "has letters that are not Latin",
    8: "source is empty",
    9: "has 4 fields, the header has 13",
    10: "already on line 2",
    11: "is not in Thai script",
}


def write_malformed(path: Path) -> Path:
    path.write_text("\n".join(MALFORMED) + "\n", encoding="utf-8")
    return path


async def load_fixture(core: Core) -> None:
    result = await import_file(core.db, FICTIONAL)
    assert result.ok and result.imported == 7, result.parsed.rejected


# -- the registry file -------------------------------------------------------------------------


def test_the_shipped_registry_is_empty_and_valid_and_the_fixture_is_fictional() -> None:
    shipped = read_agencies(PROJECT_ROOT / "flows" / "data" / "agencies.csv")
    assert shipped.ok and shipped.records == [], "no official list could be confirmed, so none is shipped"
    fixture = read_agencies(FICTIONAL)
    assert fixture.ok, fixture.rejected
    assert all("FICTIONAL" in a.source and "FICTIONAL" in (a.name_latin or "") for a in fixture.records)


def test_every_rejected_row_is_named_with_its_line_and_reason(tmp_path: Path) -> None:
    parsed = read_agencies(write_malformed(tmp_path / "agencies.csv"), today=dt.date(2026, 1, 1))
    rejected = {r.line: "; ".join(r.reasons) for r in parsed.rejected}
    assert set(rejected) == set(EXPECTED_REASONS), rejected
    for line, reason in EXPECTED_REASONS.items():
        assert reason in rejected[line], (line, rejected[line])
    assert "source_url 'ftp://example.org' is not an http(s) address" in rejected[11]
    assert "source_date 2999-01-01 is in the future" in rejected[11]
    assert [a.licence_no for a in parsed.records] == ["KH-TEST-0101"]


def test_a_bad_header_is_rejected_on_line_1(tmp_path: Path) -> None:
    path = tmp_path / "agencies.csv"
    path.write_text("country,name,status,source\nKH,Example,licensed,FICTIONAL\n", encoding="utf-8")
    parsed = read_agencies(path)
    assert [r.line for r in parsed.rejected] == [1]
    reasons = "; ".join(parsed.rejected[0].reasons)
    assert "unknown column 'name'" in reasons and "missing column 'source_date'" in reasons


def test_agencies_import_reports_every_rejected_row_and_imports_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                        capsys: pytest.CaptureFixture[str]) -> None:
    path = write_malformed(tmp_path / "agencies.csv")
    monkeypatch.setenv("DATABASE_URL", f"sqlite+aiosqlite:///{tmp_path / 'import.db'}")
    assert main(["agencies", "import", str(path)]) == 1
    out = capsys.readouterr().out
    for line, reason in EXPECTED_REASONS.items():
        assert re.search(rf"^{re.escape(str(path))}:{line}: rejected: .*{re.escape(reason)}", out, re.M), (line, out)
    assert f"{len(EXPECTED_REASONS)} row(s) rejected, 1 valid; nothing imported" in out

    assert main(["agencies", "import", str(FICTIONAL)]) == 0
    assert "Imported 7 agencies" in capsys.readouterr().out
    assert main(["agencies", "import", str(FICTIONAL)]) == 0, "importing the same list again replaces it"
    assert "Imported 7 agencies (replacing 7 from the same lists)" in capsys.readouterr().out
    assert main(["agencies", "list"]) == 0
    listing = capsys.readouterr().out
    assert re.search(r"KH\s+2025-01-15\s+3 agencies\s+FICTIONAL test list", listing), listing


async def test_import_replaces_only_the_same_list(database_url: str, tmp_path: Path) -> None:
    db = await connect(database_url)
    try:
        await import_file(db, FICTIONAL)
        other = tmp_path / "blacklist.csv"
        other.write_text(",".join(COLUMNS) + "\nKH,,Example Ghost Jobs (FICTIONAL),,,blacklisted,,,,,FICTIONAL blacklist,,2025-02-01\n",
                         encoding="utf-8")
        assert (await import_file(db, other)).imported == 1
        assert (await import_file(db, FICTIONAL)).replaced == 7
        async with db.session() as session:
            rows = (await session.exec(select(Agency))).all()
        assert len(rows) == 8, "the other list is kept"
        dry = await import_file(db, other, dry_run=True)
        assert dry.ok and dry.imported == 0
    finally:
        await db.close()


def test_check_rejects_a_malformed_shipped_registry_with_line_numbers(tmp_path: Path) -> None:
    flows, locales = tmp_path / "flows", tmp_path / "locales"
    shutil.copytree(PROJECT_ROOT / "flows", flows)
    shutil.copytree(PROJECT_ROOT / "locales", locales)
    registry = write_malformed(flows / "data" / "agencies.csv")
    report = check_project(flows, locales)
    found = {p.line: p.message for p in report.problems if p.path == registry}
    assert set(found) == set(EXPECTED_REASONS), format_report(report)
    for line, reason in EXPECTED_REASONS.items():
        assert reason in found[line]
    assert f"{registry}:3: status 'approved'" in format_report(report)


# -- matching ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def registry() -> tuple[Matcher, list[Agency]]:
    words = load_yaml(PROJECT_ROOT / "flows" / "data" / "agencies.yaml")["generic_words"]
    return Matcher(words), read_agencies(FICTIONAL).records


@pytest.mark.parametrize(("query", "country", "licence"), [
    ("ក្រុមហ៊ុនជ្រើសរើសពលករថ្ងែរះ", "KH", "KH-TEST-0001"),  # Khmer, one vowel sign wrong
    ("ថ្ងៃរៈគំរូ", "KH", "KH-TEST-0001"),  # part of the Khmer name, misspelled
    ("ពន្លឺច័ន្ទ", "KH", "KH-TEST-0002"),
    ("example sunrize", "KH", "KH-TEST-0001"),  # Latin with a typo
    ("moonlite manpower", "KH", "KH-TEST-0002"),
    ("kh-test 001", "KH", "KH-TEST-0001"),  # licence number, other spacing, a zero short
    ("cong ty tuyen dung vi du", "VN", "VN-TEST-0001"),  # Vietnamese without diacritics
    ("cong ty tuyen dung vidu", "VN", "VN-TEST-0001"),
    ("CÔNG TY TUYỂN DỤNG VÍ DỤ", "VN", "VN-TEST-0001"),
    ("สะพานทอ", "TH", "TH-TEST-0001"),  # Thai, cut short
    ("ແມ່ນ້ຳຂອງ", "LA", "LA-TEST-0001"),  # Lao
])
def test_a_name_in_any_script_with_typos_finds_the_agency(registry: tuple[Matcher, list[Agency]], query: str, country: str,
                                                           licence: str) -> None:
    matcher, agencies = registry
    found = matcher.search(query, [a for a in agencies if a.country == country])
    assert found and found[0][0].licence_no == licence, [(a.licence_no, s) for a, s in found]


@pytest.mark.parametrize(("query", "country"), [
    ("Công ty ABC", "VN"),  # shares only "Công ty" with the registry
    ("Tuyen dung Hoa Binh", "VN"),  # shares "Hoa" with "Hoa Sen"
    ("Sunset Recruitment", "KH"),
    ("KH-TEST-0009", "KH"),  # one digit off is another agency
    ("สะพานเงิน", "TH"),
])
def test_a_different_agency_is_not_taken_for_a_registered_one(registry: tuple[Matcher, list[Agency]], query: str, country: str) -> None:
    matcher, agencies = registry
    assert matcher.search(query, [a for a in agencies if a.country == country]) == []


def test_generic_words_alone_are_not_a_search(registry: tuple[Matcher, list[Agency]]) -> None:
    matcher, _ = registry
    assert not matcher.usable("Công ty TNHH")
    assert not matcher.usable("ក្រុមហ៊ុន")
    assert matcher.usable("0001") and matcher.usable("Sunrise")


# -- the journey -------------------------------------------------------------------------------


async def test_a_khmer_speaker_finds_an_agency_by_a_misspelled_khmer_name_and_sees_its_status(running_bot: RunningBot) -> None:
    await load_fixture(running_bot.core)
    t = running_bot.core.texts
    km = lambda key, **p: t.get("km", key, **p)  # noqa: E731
    user = running_bot.user(6101, "km")
    await user.start_in(t, "km")

    await user.press(km("menu.agency"))
    await user.expect(re.escape(km("agency.ask_country")))
    await user.press(km("country.KH"))
    await user.expect(re.escape(km("agency.ask_name")))
    await user.send("ក្រុមហ៊ុនជ្រើសរើសពលករថ្ងែរះ")  # ៃ typed as ែ

    found = await user.expect("Example Sunrise Recruitment")
    assert "ក្រុមហ៊ុនជ្រើសរើសពលករ ថ្ងៃរះ" in found.text, "the name in Khmer script is shown"
    assert visible_text(km("agency.status.licensed")) in found.text, "the status, and what it means, in Khmer"
    assert km("agency.card.licence", number="KH-TEST-0001") in found.text
    assert "FICTIONAL test list" in found.text and "2025-01-15" in found.text, "the record's source and date"
    assert len(KHMER.findall(found.text)) > 50
    assert km("agency.report") in found.labels and km("menu.redflags") in found.labels

    await user.press(km("agency.another"))
    await user.expect(re.escape(km("agency.ask_name")))
    await user.send("ពន្លឺច័ន្ទ")
    revoked = await user.expect("Example Moonlight Manpower")
    assert visible_text(km("agency.status.revoked")) in revoked.text


async def test_a_vietnamese_speaker_typing_without_diacritics_finds_a_suspended_agency(running_bot: RunningBot) -> None:
    await load_fixture(running_bot.core)
    t = running_bot.core.texts
    vi = lambda key, **p: t.get("vi", key, **p)  # noqa: E731
    user = running_bot.user(6102, "vi")
    await user.start_in(t, "vi")

    await user.send("/agency")
    await user.press(vi("country.VN"))
    await user.send("cong ty tuyen dung vi du")
    found = await user.expect("Vi Du Recruitment Company")
    assert "Công ty Tuyển dụng Ví Dụ" in found.text
    assert visible_text(vi("agency.status.suspended")) in found.text
    assert "Hoa Sen" not in found.text, "only the agency that matches"


async def test_an_agency_with_an_expired_licence_says_so(running_bot: RunningBot) -> None:
    await load_fixture(running_bot.core)
    t = running_bot.core.texts
    user = running_bot.user(6103, "en")
    await user.start_in(t, "en")
    await user.send("/agency")
    await user.press(t.get("en", "country.KH"))
    await user.send("old harbor services")
    found = await user.expect("Example Old Harbour Services")
    assert visible_text(t.get("en", "agency.status.expired", date="2020-12-31")) in found.text


async def test_an_agency_not_in_the_list_gets_the_countrys_sourced_rules_and_an_offer_to_report(running_bot: RunningBot) -> None:
    await load_fixture(running_bot.core)
    t = running_bot.core.texts
    en = lambda key, **p: t.get("en", key, **p)  # noqa: E731
    user = running_bot.user(6104, "en")
    await user.start_in(t, "en")

    await user.press(en("menu.agency"))
    await user.press(en("country.KH"))
    await user.send("Ghost <Jobs> & Partners")
    missing = await user.expect("did not find")
    assert "“Ghost <Jobs> & Partners”" in missing.text, "what the person typed is shown as text, escaped"
    assert "among the 3 agencies" in missing.text
    assert visible_text(en("fact.kh_licensing"))[:40] in missing.text
    assert all(name in missing.text for name in user.named_sources(running_bot.core.content, "KH-5")), "with its publisher"
    assert en("agency.report") in missing.labels

    await user.press(en("agency.try_again"))
    await user.press(en("agency.other_country"))
    await user.press(en("country.MM"))
    await user.send("Golden Myanmar Overseas")
    no_list = await user.expect(re.escape(visible_text(en("agency.no_list", country=en("country.MM")))))
    assert "up to 7 years in prison" in no_list.text, "Myanmar: an unlicensed agency is a crime"
    assert all(name in no_list.text for name in user.named_sources(running_bot.core.content, "MM-9"))

    await user.press(en("agency.report"))
    await user.expect(re.escape(en("report.ask_danger")))
    assert en("report.ask_category") not in user.all_text(), "the report starts with its category filled in"
    async with running_bot.core.db.session() as session:
        from storage.models import Conversation, User

        row = (await session.exec(select(User).where(User.address == "6104"))).one()
        values = (await session.get(Conversation, row.id)).vars  # type: ignore[union-attr]
    assert values["category"] == "recruitment_fraud"
    assert "agency_query" not in values, "the name typed is not kept"


async def test_with_no_list_vietnam_says_where_to_check_and_cambodia_where_to_ask(running_bot: RunningBot) -> None:
    t = running_bot.core.texts
    en = lambda key, **p: t.get("en", key, **p)  # noqa: E731
    user = running_bot.user(6105, "en")
    await user.start_in(t, "en")
    await user.send("/agency")
    await user.press(en("country.VN"))
    await user.send("An Example Agency")
    reply = await user.expect(re.escape(visible_text(en("agency.no_list", country=en("country.VN")))))
    assert "Ministry of Home Affairs" in reply.text
    assert all(name in reply.text for name in user.named_sources(running_bot.core.content, "VN-15"))
    assert "prison" not in reply.text

    await user.press(en("agency.try_again"))
    await user.press(en("agency.other_country"))
    await user.press(en("country.KH"))
    await user.send("An Example Agency")
    cambodia = await user.expect(re.escape(visible_text(en("agency.no_list", country=en("country.KH")))))
    assert visible_text(en("fact.kh_agency_list"))[:40] in cambodia.text, "no current list for Cambodia: ask MoLVT or an MRC"
    assert all(name in cambodia.text for name in user.named_sources(running_bot.core.content, "KH-16", "KH-5"))


def test_rejected_rows_are_printed_without_acting_on_escape_sequences() -> None:
    from bot.features.agencies import terminal_safe
    shown = terminal_safe("agencies.csv:3: rejected: country '\x1b[2J\x1b[31mKH' is not one of KH")
    assert "\x1b" not in shown and "\\x1b[2J" in shown
