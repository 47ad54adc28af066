"""NegotiationMiddleware around Starlette and FastAPI, served by uvicorn on a real socket."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from tests.server import serve

APPS = {
    "starlette": "tests.apps.negotiation_apps:starlette_app",
    "fastapi": "tests.apps.negotiation_apps:fastapi_app",
}


@pytest.fixture(scope="module", params=sorted(APPS))
def http(request: pytest.FixtureRequest) -> Iterator[httpx.Client]:
    """A client of one app; each app's server starts once for the whole module."""
    with serve(APPS[request.param]) as server, httpx.Client(base_url=server.url, timeout=10) as c:
        yield c


def get(http: httpx.Client, url: str, headers: object = None) -> httpx.Response:
    """GET ``url`` with exactly ``headers`` for Accept (no Accept at all if there is none)."""
    request = http.build_request("GET", url, headers=headers)  # type: ignore[arg-type]
    if headers is None:
        del request.headers["accept"]
    return http.send(request)


def mode_of(response: httpx.Response) -> str:
    assert response.status_code == 200, response.text
    assert response.headers["vary"] == "Accept"
    mode: str = response.json()["mode"]
    return mode


@pytest.mark.parametrize(
    ("accept", "expected"),
    [
        (None, "batch"),
        ({"Accept": "*/*"}, "batch"),
        ({"Accept": "application/json"}, "batch"),
        ({"Accept": "text/event-stream"}, "stream"),
        ({"Accept": "application/json;q=0.5, text/event-stream"}, "stream"),
        ({"Accept": "text/event-stream;q=0, */*"}, "batch"),
        ({"Accept": "TEXT/*;Q=0.9, application/json;q=0.8"}, "stream"),
        ({"Accept": "text/event-stream;charset=utf-8"}, "stream"),
        ({"Accept": "application/json, text/plain, */*"}, "batch"),
        ([("Accept", "application/json;q=0.5"), ("Accept", "text/event-stream")], "stream"),
    ],
)
def test_mode_by_accept(http: httpx.Client, accept: object, expected: str) -> None:
    assert mode_of(get(http, "/mode", accept)) == expected


@pytest.mark.parametrize(
    ("query", "accept", "expected"),
    [
        ("format=stream", "application/json", "stream"),
        ("format=BATCH", "text/event-stream", "batch"),
        ("format=auto", "text/event-stream", "stream"),
        ("format=auto&stream=0", "text/event-stream", "batch"),
        ("stream=true", "application/json", "stream"),
        ("stream=1", "*/*", "stream"),
        ("stream=false", "text/event-stream", "batch"),
        ("stream", "application/json", "stream"),
        ("format=batch&stream=true", "*/*", "batch"),
        ("format=stream", "text/html", "stream"),
    ],
)
def test_mode_by_query(http: httpx.Client, query: str, accept: str, expected: str) -> None:
    assert mode_of(get(http, f"/mode?{query}", {"Accept": accept})) == expected


@pytest.mark.parametrize(
    ("query", "param", "accepted"),
    [
        ("stream=maybe", "stream", ["true", "false", "1", "0"]),
        ("format=xml", "format", ["stream", "batch", "auto"]),
        ("format=", "format", ["stream", "batch", "auto"]),
        ("stream=1&stream=0", "stream", ["true", "false", "1", "0"]),
    ],
)
def test_bad_parameter_is_a_json_400(
    http: httpx.Client, query: str, param: str, accepted: list[str]
) -> None:
    r = get(http, f"/mode?{query}", {"Accept": "*/*"})
    assert r.status_code == 400
    assert r.headers["content-type"] == "application/json"
    assert r.headers["vary"] == "Accept"
    error = r.json()["error"]
    assert (error["type"], error["param"], error["accepted"]) == (
        "invalid_parameter",
        param,
        accepted,
    )


@pytest.mark.parametrize("accept", ["text/html", "*/*;q=0", "application/json;q=0, text/*;q=0"])
def test_nothing_acceptable_is_a_json_406(http: httpx.Client, accept: str) -> None:
    r = get(http, "/mode", {"Accept": accept})
    assert r.status_code == 406
    assert r.headers["content-type"] == "application/json"
    assert r.headers["vary"] == "Accept"
    assert r.json() == {
        "error": {
            "type": "not_acceptable",
            "message": r.json()["error"]["message"],
            "available": ["application/json", "text/event-stream"],
        }
    }


def test_vary_merges_with_the_apps_own(http: httpx.Client) -> None:
    r = get(http, "/varied", {"Accept": "text/event-stream"})
    assert r.status_code == 200 and r.json() == {"mode": "stream"}
    assert r.headers.get_list("vary") == ["Accept-Encoding, Accept"]


def test_excluded_paths_are_not_negotiated(http: httpx.Client) -> None:
    r = get(http, "/health?stream=maybe", {"Accept": "text/html"})
    assert r.status_code == 200 and r.json() == {"mode": None}
    assert "vary" not in r.headers


HOSTILE: list[object] = [
    {"Accept": ";;;,,,"},
    {"Accept": "q=NaN"},
    {"Accept": "*/*;q=NaN"},
    {"Accept": "application/json;q=1e999, text/event-stream;q=-0"},
    {"Accept": b"\xff\xfe/\xe9;q=\xb5, \xc3\xa9/*"},
    {"Accept": b'text/event-stream;x="\xff,\\'},
    {"Accept": "a/b;" * 8000},
    {"Accept": "text/html;q=0.1, " * 500 + "text/event-stream"},
    {"Accept": "*/*;q=" + "9" * 30_000},
    [("Accept", ",")] * 100,
]


@pytest.mark.parametrize("headers", HOSTILE)
def test_hostile_headers_never_give_a_500(http: httpx.Client, headers: object) -> None:
    r = get(http, "/mode", headers)
    assert r.status_code in (200, 406), r.text
    assert r.headers["vary"] == "Accept"
    assert r.headers["content-type"] == "application/json"
    assert r.json()


@pytest.mark.parametrize(
    "query",
    ["stream=%ff%fe", "format=%00", "stream=%", "format=%zz&stream=1", "%ff=%ff&stream", "&&&=="],
)
def test_hostile_queries_never_give_a_500(http: httpx.Client, query: str) -> None:
    r = get(http, f"/mode?{query}", {"Accept": "*/*"})
    assert r.status_code in (200, 400), r.text
    assert r.headers["vary"] == "Accept"
    assert r.json()
