"""The mapping is a pure function over a field table: valid records map, hostile ones are refused."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from catalog.mapping import FIELD_TABLE, RefusedRecord, map_course_run
from tests.factories import catalog_run


def test_maps_every_field_in_the_table():
    run = catalog_run(
        "course-v1:A+B+C",
        marketing_url="https://x.example/c",
        content_language="fr",
        eligible_for_financial_aid=False,
    )
    assert map_course_run(run) == {
        "marketing_url": "https://x.example/c",
        "eligible_for_financial_aid": False,
        "language": "fr",
    }
    assert {f.model_field for f in FIELD_TABLE} == {"marketing_url", "eligible_for_financial_aid", "language"}


def test_null_marketing_url_and_language_are_kept_as_null():
    values = map_course_run(catalog_run("course-v1:A+B+C", marketing_url=None, content_language=None))
    assert values["marketing_url"] is None and values["language"] is None


@pytest.mark.parametrize(
    ("overrides", "reason"),
    [
        ({"marketing_url": "javascript:alert(1)"}, "absolute http"),
        ({"marketing_url": "https://x.example/" + "a" * 5000}, "characters"),
        ({"marketing_url": 42}, "string or null"),
        ({"marketing_url": "/relative/path"}, "absolute http"),
        ({"marketing_url": "https://x.example/a b"}, "whitespace"),
        ({"marketing_url": 'https://x.example/"><script>'}, "quote"),
        ({"eligible_for_financial_aid": "yes"}, "boolean"),
        ({"eligible_for_financial_aid": None}, "boolean"),
        ({"content_language": ["en"]}, "string or null"),
        ({"content_language": "english; drop table"}, "language code"),
        ({"content_language": "en\n"}, "language code"),
        ({"content_language": "en\r"}, "language code"),
        ({"content_language": "\u202een"}, "language code"),
        ({"content_language": "en us"}, "language code"),
        ({"content_language": "e"}, "language code"),
        ({"content_language": "en-" + "a" * 9}, "language code"),
        ({"content_language": "en-us-toolongforthecolumn"}, "language code"),
        ({"content_language": "\uff45\uff4e"}, "language code"),  # fullwidth "en": not ASCII
        ({"marketing_url": "https://user:pass@x.example/c"}, "credentials"),
        ({"marketing_url": "https://user@x.example/c"}, "credentials"),
        ({"marketing_url": "https://x.example:99999/c"}, "does not parse"),
        ({"marketing_url": "https://x.example:http/c"}, "does not parse"),
        ({"marketing_url": "https://x.example:0/c"}, "invalid port"),
        ({"marketing_url": "https://x.example:/c"}, "invalid port"),
        ({"marketing_url": "https://[::1/c"}, "does not parse"),
        ({"marketing_url": "https://x.example/\tc"}, "whitespace"),
        ({"marketing_url": " https://x.example/c"}, "whitespace"),
        ({"marketing_url": "https://x.example/c\n"}, "whitespace"),
        ({"marketing_url": "https://x.example/c\u00a0"}, "whitespace"),
        ({"marketing_url": "https://x.example/c\u2028"}, "whitespace"),
        ({"marketing_url": "https://x.example/c\x85"}, "control"),
        ({"marketing_url": "https://x.example/c\u202egpj.exe"}, "bidirectional"),
        ({"marketing_url": "https://x.example/\u2066c\u2069"}, "bidirectional"),
        ({"marketing_url": "https://x.example/\u200ec"}, "bidirectional"),
        ({"marketing_url": "https://x.example/\u200fc"}, "bidirectional"),
        ({"marketing_url": "https://x.example/\u200bc"}, "control"),
        ({"marketing_url": "ftp://x.example/c"}, "absolute http"),
        ({"marketing_url": "https://x.example/o'reilly"}, "quote"),
        ({"marketing_url": "https://x.exa;mple/c"}, "invalid host"),
        ({"marketing_url": "https://x.example%2F@y/c"}, "credentials"),
        ({"marketing_url": "data:text/html,<b>x</b>"}, "quote"),
        ({"marketing_url": "data:text/html;base64,PGI+"}, "absolute http"),
        ({"marketing_url": "https:///path-only"}, "absolute http"),
        ({"marketing_url": "//x.example/c"}, "absolute http"),
        ({"marketing_url": "https://x.example/" + "a" * 483}, "501 characters"),
    ],
)
def test_hostile_or_malformed_values_refuse_the_record(overrides, reason):
    with pytest.raises(RefusedRecord, match=reason):
        map_course_run(catalog_run("course-v1:A+B+C", **overrides))


@pytest.mark.parametrize(
    "url",
    [
        "https://www.example.com/course/intro-to-x",
        "http://x.example:8080/c?utm=no#about",
        "HTTPS://X.EXAMPLE/C",
        "https://exämple.example/kurs",
        "https://x.example/%E2%80%AEencoded-is-inert",
        "https://[2001:db8::1]:8443/c",
        "https://x.example/o%27reilly",
        "https://x.example/" + "a" * 482,  # exactly 500 characters: the column's size
    ],
)
def test_ordinary_urls_are_kept_as_given(url):
    assert map_course_run(catalog_run("course-v1:A+B+C", marketing_url=url))["marketing_url"] == url


@pytest.mark.parametrize("language", ["en", "EN", "en-us", "zh-Hans-CN", "zh_CN", "yue", "sr-Latn"])
def test_ordinary_language_codes_are_kept_as_given(language):
    assert map_course_run(catalog_run("course-v1:A+B+C", content_language=language))["language"] == language


def test_missing_field_or_non_object_is_refused():
    run = catalog_run("course-v1:A+B+C")
    del run["eligible_for_financial_aid"]
    with pytest.raises(RefusedRecord, match="no 'eligible_for_financial_aid'"):
        map_course_run(run)
    with pytest.raises(RefusedRecord, match="not an object"):
        map_course_run(["not", "a", "dict"])


@given(
    st.dictionaries(
        st.sampled_from(["marketing_url", "eligible_for_financial_aid", "content_language"]),
        st.one_of(
            st.none(),
            st.booleans(),
            st.integers(),
            st.text(max_size=600),
            st.lists(st.integers(), max_size=2),
        ),
    )
)
def test_any_input_maps_to_valid_values_or_is_refused(record):
    try:
        values = map_course_run(record)
    except RefusedRecord:
        return
    assert values["marketing_url"] is None or values["marketing_url"].startswith(("http://", "https://"))
    assert values["eligible_for_financial_aid"] is record["eligible_for_financial_aid"]  # True/False as given
    assert values["language"] is None or len(values["language"]) <= 16
