"""export-data and generate-report over the books example plugin's `books` query."""

from __future__ import annotations

import csv
import io
import json

import pytest
from builtin_testkit import BOOKS_DATASET, FakeJob

from plugboard.plugins.jobs.builtin.datasets import flatten, rows_at
from plugboard.plugins.jobs.builtin.report import render_markdown, summarize
from plugboard.providers.storage import LocalStorage
from plugboard.tasks import PermanentError
from plugboard.testing import gql_data

BOOKS = [
    ("Dune", "Frank Herbert", 1965),
    ("Children of Dune", "Frank Herbert", 1976),
    ("Neuromancer", "William Gibson", 1984),
    ("=HYPERLINK(\"http://evil\")", "<script>alert('x')</script>", None),
    ("Comma, \"quoted\" | piped", "Ann *Emphasis*", 2001),
]


@pytest.fixture
async def books_app(make_builtin_app, aiohttp_client):
    async def make(jobs=None):
        jobs = jobs if jobs is not None else {"export": {"datasets": {"books": BOOKS_DATASET}}}
        app, tasks = make_builtin_app(books=True, jobs=jobs)
        client = await aiohttp_client(app)
        for title, author, year in BOOKS:
            await gql_data(
                client,
                "mutation($i: CreateBookInput!) { createBook(input: $i) { id } }",
                {"i": {"title": title, "authorName": author, "publishedYear": year}},
            )
        return app, tasks, client

    return make


async def test_export_csv(books_app):
    app, tasks, client = await books_app()
    job = FakeJob(app)
    result = await tasks["export-data"](job, dataset="books", format="csv")
    assert result["rows"] == 5 and result["format"] == "csv" and result["dataset"] == "books"
    assert result["key"].startswith("exports/books-") and result["key"].endswith(".csv")
    resp = await client.get(result["url"])
    assert resp.status == 200
    assert resp.headers["Content-Type"] == "text/csv; charset=utf-8"
    rows = list(csv.reader(io.StringIO((await resp.read()).decode())))
    assert rows[0] == ["id", "title", "publishedYear", "author.name"]
    assert rows[1] == ["1", "Dune", "1965", "Frank Herbert"]
    # A formula-looking cell is neutralised; quoting survives the round trip; null is empty.
    assert rows[4] == ["4", "'=HYPERLINK(\"http://evil\")", "", "<script>alert('x')</script>"]
    assert rows[5][1] == "Comma, \"quoted\" | piped"
    assert job.reported == [50, 90]


async def test_export_json(books_app):
    app, tasks, client = await books_app()
    result = await tasks["export-data"](FakeJob(app), dataset="books", format="json")
    resp = await client.get(result["url"])
    data = json.loads(await resp.read())
    assert data[0] == {"id": "1", "title": "Dune", "publishedYear": 1965, "author": {"name": "Frank Herbert"}}
    assert len(data) == 5


async def test_unknown_dataset_and_format_are_permanent(books_app):
    app, tasks, _client = await books_app()
    with pytest.raises(PermanentError, match="unknown dataset 'authors'; registered: books"):
        await tasks["export-data"](FakeJob(app), dataset="authors")
    with pytest.raises(PermanentError, match="format must be one of csv, json"):
        await tasks["export-data"](FakeJob(app), dataset="books", format="xlsx")
    with pytest.raises(PermanentError, match="format must be one of html, markdown"):
        await tasks["generate-report"](FakeJob(app), dataset="books", format="pdf")


async def test_dataset_names_are_annotated_for_enqueue_checks(make_builtin_app):
    import typing

    _app, tasks = make_builtin_app(jobs={"export": {"datasets": {"books": BOOKS_DATASET, "authors": {"query": "{ authors { name } }"}}}})
    hints = typing.get_type_hints(tasks["export-data"])
    assert hints["dataset"] == typing.Literal["authors", "books"]
    assert typing.get_type_hints(tasks["generate-report"])["dataset"] == typing.Literal["authors", "books"]


async def test_bad_dataset_queries_are_permanent(books_app):
    app, tasks, _client = await books_app(
        {
            "export": {
                "datasets": {
                    "broken": {"query": "{ books(first: 5) { nope } }"},
                    "mutating": {"query": "mutation { createBook(input: {title: \"x\", authorName: \"y\"}) { id } }"},
                    "too_many": {"query": "{ books(first: 1000) { id } }"},
                    "wrong_path": {"query": "{ books(first: 5) { id } }", "path": "library.books"},
                    "big": {"query": "{ books(first: 100) { id } }"},
                },
                "max_rows": 3,
            }
        }
    )
    for name, message in (
        ("broken", "nope"),
        ("mutating", "mutation operations are not allowed"),
        ("too_many", "first must be between"),
        ("wrong_path", "no 'library.books'"),
        ("big", "more than jobs.export.max_rows"),
    ):
        with pytest.raises(PermanentError, match=message):
            await tasks["export-data"](FakeJob(app), dataset=name)


async def test_report_html(books_app):
    app, tasks, client = await books_app()
    result = await tasks["generate-report"](FakeJob(app), dataset="books", title="Books <&> report")
    assert result["key"].startswith("reports/books-") and result["key"].endswith(".html") and result["rows"] == 5
    resp = await client.get(result["url"])
    assert resp.headers["Content-Type"] == "text/html; charset=utf-8"
    assert resp.headers["Content-Disposition"].startswith("attachment;")
    page = (await resp.read()).decode()
    assert "<title>Books &lt;&amp;&gt; report</title>" in page
    assert "<script>" not in page and "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;" in page
    assert "Rows: <strong>5</strong>" in page
    # publishedYear: 4 non-empty, 4 distinct, min 1965, max 2001.
    assert '<th scope="row">publishedYear</th><td>4</td><td>4</td><td>1965</td><td>2001</td>' in page
    assert '<th scope="row">author.name</th><td>5</td><td>4</td><td></td><td></td>' in page
    assert page.count("<tr><td>") == 5


async def test_report_markdown_and_preview_limit(books_app):
    app, tasks, client = await books_app({"export": {"datasets": {"books": BOOKS_DATASET}}, "reports": {"preview_rows": 2}})
    result = await tasks["generate-report"](FakeJob(app), dataset="books", format="markdown")
    assert result["key"].endswith(".md")
    storage = LocalStorage(app=app)
    text = (await storage.read(result["key"])).decode()
    assert text.startswith("# books report\n")
    assert "The first 2 of 5 rows." in text
    assert "| publishedYear | 4 | 4 | 1965 | 2001 |" in text
    assert "| 1 | Dune | 1965 | Frank Herbert |" in text
    assert "Neuromancer" not in text  # beyond the preview


def test_markdown_escapes_table_and_markup():
    report = summarize([{"t": "a | b\nc", "h": "<b>*x*</b>"}], "T", 10, now=0)
    text = render_markdown(report)
    assert "| a \\| b c | \\<b\\>\\*x\\*\\</b\\> |" in text
    assert "Generated at 1970-01-01T00:00:00Z." in text


def test_flatten_and_rows_at():
    assert flatten({"a": 1, "b": {"c": {"d": 2}}, "e": [1, 2]}) == {"a": 1, "b.c.d": 2, "e": "[1,2]"}
    assert rows_at({"x": {"edges": [{"node": {"id": 1}}]}}, "x") == [{"id": 1}]
    assert rows_at({"books": [1]}, "") == [1]
    with pytest.raises(PermanentError, match="several top-level fields"):
        rows_at({"a": [], "b": []}, "")
