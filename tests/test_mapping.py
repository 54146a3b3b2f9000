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
    ],
)
def test_hostile_or_malformed_values_refuse_the_record(overrides, reason):
    with pytest.raises(RefusedRecord, match=reason):
        map_course_run(catalog_run("course-v1:A+B+C", **overrides))


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
    assert isinstance(values["eligible_for_financial_aid"], bool)
    assert values["language"] is None or len(values["language"]) <= 16
