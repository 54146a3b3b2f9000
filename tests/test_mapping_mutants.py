"""The mapping's edges, pinned where mutation testing (``make mutation``) found the suite blind.

Each test states a behaviour an operator or the LMS relies on: the refusal reason names what was
wrong (the type it got, the value cut short so a hostile record cannot flood the log), an empty
string means "no value", the longest code the column holds still fits, IP-literal hosts work, and
non-ASCII control characters are refused like ASCII ones.
"""

import pytest

from catalog.mapping import MAX_LANGUAGE_LENGTH, RefusedRecord, map_course_run
from tests.factories import catalog_run

KEY = "course-v1:A+B+C"


def refusal(**fields) -> str:
    with pytest.raises(RefusedRecord) as caught:
        map_course_run(catalog_run(KEY, **fields))
    return str(caught.value)


@pytest.mark.parametrize(
    ("fields", "reason"),
    [
        ({"marketing_url": 42}, "marketing_url must be a string or null, got int"),
        ({"eligible_for_financial_aid": "yes"}, "eligible_for_financial_aid must be a boolean, got str"),
        ({"content_language": 7}, "content_language must be a string or null, got int"),
    ],
)
def test_a_wrong_type_is_named_in_the_reason(fields, reason):
    assert refusal(**fields) == reason


def test_a_record_that_is_not_an_object_says_what_it_is():
    with pytest.raises(RefusedRecord) as caught:
        map_course_run(["not", "a", "record"])
    assert str(caught.value) == "record is a list, not an object"


def test_empty_strings_mean_no_value():
    values = map_course_run(catalog_run(KEY, marketing_url="", content_language=""))
    assert values["marketing_url"] is None
    assert values["language"] is None


def test_the_longest_language_code_the_column_holds_is_kept():
    code = "abc-defgh-ijklmn"
    assert len(code) == MAX_LANGUAGE_LENGTH
    assert map_course_run(catalog_run(KEY, content_language=code))["language"] == code
    assert "not a language code" in refusal(content_language=code + "x")


@pytest.mark.parametrize("url", ["http://[::1]/course", "https://[2001:db8::1]:8443/course"])
def test_ip_literal_hosts_are_accepted(url):
    assert map_course_run(catalog_run(KEY, marketing_url=url))["marketing_url"] == url


@pytest.mark.parametrize("char", ["\x80", "\x9f", "\u00ad", "\u200b"])
def test_non_ascii_controls_and_invisible_characters_are_refused(char):
    reason = refusal(marketing_url=f"https://x.example/a{char}b")
    assert reason == "marketing_url contains whitespace, control, bidirectional-control or quote characters"


def test_a_url_with_credentials_says_so():
    assert refusal(marketing_url="https://user:pw@x.example/c") == (
        "marketing_url carries credentials (user:password@)"
    )


def test_echoed_values_are_cut_short():
    """The reason quotes the start of the value, never all of it (80 characters of a URL or host, 20
    of a language code): a refused record cannot write kilobytes into the log."""
    url = "ftp://" + "a" * 200
    assert refusal(marketing_url=url) == f"marketing_url is not an absolute http(s) URL: {url[:80]!r}"

    host = "bad!host" + "b" * 200
    assert refusal(marketing_url=f"https://{host}/c") == f"marketing_url has an invalid host: {host[:80]!r}"

    netloc = "x.example" + "c" * 200 + ":0"
    assert (
        refusal(marketing_url=f"https://{netloc}/c") == f"marketing_url has an invalid port: {netloc[:80]!r}"
    )

    code = "e" * 15 + "!" * 30
    assert refusal(content_language=code) == f"content_language is not a language code: {code[:20]!r}"
