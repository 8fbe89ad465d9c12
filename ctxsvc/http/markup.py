"""The inspector's markup: the page around every view, tables and lists, escaping.

Every value a page shows goes through ``esc`` (or ``qs`` in a URL) here or in the
modules that build the views (``ctxsvc.http.pages``, ``ctxsvc.http.timeline``). Pages
load one stylesheet and one script from the package (``ctxsvc/data/ui``), never from a
CDN, so the inspector works offline and under a strict content policy.
"""

from __future__ import annotations

import html
from collections.abc import Iterable, Sequence
from urllib.parse import quote

from ctxsvc.errors import CtxError

ASSETS = "/ui/static"
NAV = (("Indexes", "/ui"), ("Sessions", "/ui/sessions"), ("Jobs", "/ui/jobs"), ("API", "/docs"))
LISTED = 500  # rows of a long list (skipped files, changed files) shown before "and N more"


def esc(value: object) -> str:
    """``value`` as HTML text or an attribute's value (None: empty)."""
    return html.escape("" if value is None else str(value), quote=True)


def when(stamp: object) -> str:
    """An ISO-8601 time as ``<time>``: to the second, in UTC as stored, the whole stamp in
    its ``datetime`` attribute (``""`` for none)."""
    if not stamp:
        return ""
    text = str(stamp)
    shown = text[:19].replace("T", " ") + (" UTC" if text.endswith(("+00:00", "Z")) else "")
    return f'<time datetime="{esc(text)}">{esc(shown)}</time>'


def qs(value: str) -> str:
    """``value`` as one segment of a URL's path."""
    return quote(value, safe="")


def page(title: str, body: str, *, logout: bool = False) -> str:
    """A whole HTML document: the navigation bar over ``body``."""
    links = "".join(f'<a href="{href}">{esc(label)}</a>' for label, href in NAV)
    out = '<a class="logout" href="/ui/logout">Log out</a>' if logout else ""
    return (
        '<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{esc(title)} · ctxsvc</title>"
        '<link rel="icon" href="data:,">'
        f'<link rel="stylesheet" href="{ASSETS}/ui.css">'
        f'<script src="{ASSETS}/ui.js" defer></script></head>'
        f'<body><nav><span class="brand">ctxsvc</span>{links}{out}</nav>'
        f"<main><h1>{esc(title)}</h1>{body}</main></body></html>"
    )


def table(headers: Sequence[str], rows: Iterable[Sequence[str]], *, cls: str = "") -> str:
    """A table of cells given as HTML (escape values with ``_e`` first)."""
    head = "".join(f"<th>{esc(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in rows)
    return f'<table class="{cls}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def bullets(items: Sequence[str], *, empty: str = "none") -> str:
    if not items:
        return f'<p class="quiet">{esc(empty)}</p>'
    shown = "".join(f"<li>{esc(i)}</li>" for i in items[:LISTED])
    more = f"<li class=quiet>and {len(items) - LISTED} more</li>" if len(items) > LISTED else ""
    return f"<ul>{shown}{more}</ul>"


def degraded(lines: Sequence[str]) -> str:
    if not lines:
        return ""
    items = "".join(f"<li>{esc(d)}</li>" for d in lines)
    return f'<div class="degraded" role="status"><strong>Degraded</strong><ul>{items}</ul></div>'


def error_page(exc: CtxError) -> str:
    """A failure as the page that met it shows it: what happened, whether to retry, the hint."""
    retry = "retryable" if exc.retryable else "not retryable"
    hint = f"<p>{esc(exc.hint)}</p>" if exc.hint else ""
    body = f'<div class="error"><p><code>{esc(exc.code)}</code> ({retry}): {esc(exc.message)}</p>{hint}</div>'
    return page("Error", body)


def login_page(next_path: str, failed: bool = False) -> str:
    why = '<p class="error">That is not the server\'s token.</p>' if failed else ""
    body = (
        f"{why}<p>This server needs its token (<code>CTXSVC_TOKEN</code>). It is kept in a "
        "cookie of this browser for the inspector's pages, which only read.</p>"
        '<form method="post" action="/ui/login" class="login">'
        f'<input type="hidden" name="next" value="{esc(next_path)}">'
        '<label>Token <input type="password" name="token" autocomplete="current-password" '
        "autofocus required></label> <button>Log in</button></form>"
    )
    return page("Log in", body)
