"""The shop itself: sessions, pages and their routes, independent of how they are reached.

:class:`Shop` answers a GET URL of one session with a :class:`Page` (WebShop's pages: search,
results, item, item sub-page, done). A page is a flat list of :class:`Element`\\ s, the visible texts
in order, some clickable (a link with its URL). The same page has three forms, all derived here:

* **HTML** (:func:`page_html`), served by the Starlette app (:mod:`cmat_gym.domains.web.server`) to
  browsers and HTTP agents; every element carries ``data-el`` so the page can be read back;
* **Page** again from that HTML (:func:`parse_page`): what an env reaching the shop over HTTP sees,
  equal to what the in-process env gets from :meth:`Shop.get` (tests check it over many pages);
* **text** (:meth:`Page.text`): WebShop's ``simple`` text mode, the visible texts joined by
  ``" [SEP] "``; the clickables are WebShop's ``get_available_actions()`` names (button texts and
  product ids lower-cased, option values as they are).

Every link is a plain GET URL, so clicking is navigating (a browser, ``curl``, the env). The state
of a session (the goal, the search, the open item and its chosen options, the purchase) lives in
the shop, keyed by a session id, so one server serves many episodes that never see each other's
carts. At most ``max_sessions`` live at once (the least recently used is dropped first), so a
server that is never told an episode ended still has flat memory.

Routes (``{sid}``: the session id): ``/{sid}`` search page (resets the session's navigation, as
WebShop's index does); ``/{sid}/search?q=..&page=N`` results (10 a page, top 50, BM25);
``/{sid}/item/{asin}`` item page; ``/{sid}/option/{asin}?name=..&value=..`` choose an option;
``/{sid}/item/{asin}/{description|features|reviews}``; ``/{sid}/buy`` Buy Now (done page, reward).
"""

from __future__ import annotations

import html
import json
import math
import re
import threading
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field
from html.parser import HTMLParser
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

from cmat_gym.domains.web.catalogue import Product, products_by_asin
from cmat_gym.domains.web.reward import webshop_reward
from cmat_gym.domains.web.search import SearchEngine, default_engine

SEP = " [SEP] "
PER_PAGE = 10
MAX_SESSIONS = 4096
MAX_URL_CHARS = 2048
BACK_TO_SEARCH, PREV_PAGE, NEXT_PAGE, BUY_NOW = "Back to Search", "< Prev", "Next >", "Buy Now"
SUB_PAGES = ("Description", "Features", "Reviews")
SESSION_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")
CLICKABLE_KINDS = ("button", "product", "option")


# ====================================================================== pages
@dataclass(frozen=True)
class Element:
    """One visible text of a page.

    Attributes:
        text: what is shown.
        kind: ``text``, ``button``, ``product`` (a product link), ``option`` (an option value) or
            ``search`` (the search box's button: shown, not clickable: use ``search[...]``).
        href: the URL a click navigates to (clickables only).
        group: the option's name (options only).
        selected: whether the option is chosen (options only).
    """

    text: str
    kind: str = "text"
    href: str = ""
    group: str = ""
    selected: bool = False

    @property
    def clickable_name(self) -> str:
        """The element's name in ``click[...]`` (WebShop: buttons and product ids lower-cased)."""
        return self.text if self.kind == "option" else self.text.lower()


@dataclass(frozen=True)
class Page:
    """One page: its kind (``search``, ``results``, ``item``, ``item_sub``, ``done``, ``error``) and elements."""

    name: str
    elements: tuple[Element, ...]
    reward: float | None = None

    @property
    def has_search_bar(self) -> bool:
        return any(e.kind == "search" for e in self.elements)

    def text(self) -> str:
        """WebShop's simple text mode: the visible texts joined by ``" [SEP] "``."""
        return SEP.join(e.text for e in self.elements)

    def clickables(self) -> dict[str, Element]:
        """``click[...]`` name -> element, in page order (WebShop's ``text_to_clickable``)."""
        return {e.clickable_name: e for e in self.elements if e.kind in CLICKABLE_KINDS}

    def available_actions(self) -> dict[str, Any]:
        """WebShop's ``get_available_actions()``: ``{"has_search_bar": ..., "clickables": [...]}``."""
        return {"has_search_bar": self.has_search_bar, "clickables": list(self.clickables())}

    def option_groups(self) -> dict[str, list[Element]]:
        """The item page's options by name, in page order."""
        groups: dict[str, list[Element]] = {}
        for e in self.elements:
            if e.kind == "option":
                groups.setdefault(e.group, []).append(e)
        return groups

    def selected_options(self) -> dict[str, str]:
        """The chosen option of each name (names not chosen yet are absent)."""
        return {e.group: e.text for e in self.elements if e.kind == "option" and e.selected}


def _text(*texts: str) -> tuple[Element, ...]:
    return tuple(Element(t) for t in texts)


# ====================================================================== sessions
@dataclass
class Session:
    """One episode's state on the server."""

    instruction: str
    goal: dict[str, Any]
    keywords: str | None = None
    page: int = 1
    asin: str | None = None
    options: dict[str, str] = field(default_factory=dict)
    done: bool = False
    reward: float | None = None
    parts: dict[str, Any] = field(default_factory=dict)


class Shop:
    """The shop's sessions and routes (see the module docstring); thread-safe.

    Args:
        engine: the search engine (default: BM25 over the whole catalogue, built once per process).
        max_sessions: live sessions kept at most (least recently used dropped first).
    """

    def __init__(self, engine: SearchEngine | None = None, max_sessions: int = MAX_SESSIONS) -> None:
        self.engine = engine if engine is not None else default_engine()
        self.products = products_by_asin()
        self.max_sessions = max_sessions
        self._sessions: OrderedDict[str, Session] = OrderedDict()
        self._lock = threading.Lock()

    # ---------------------------------------------------------------- session API
    def start(self, sid: str, instruction: str, goal: Mapping[str, Any]) -> None:
        """Start (or restart) session ``sid`` for the task with ``instruction`` and ``goal`` (its payload)."""
        if not SESSION_ID.fullmatch(sid):
            raise ValueError(f"Expects a session id of 1-64 letters, digits, '_' or '-', actual {sid[:80]!r}")
        with self._lock:
            self._sessions.pop(sid, None)
            self._sessions[sid] = Session(str(instruction), dict(goal))
            while len(self._sessions) > self.max_sessions:
                self._sessions.popitem(last=False)

    def end(self, sid: str) -> None:
        """Forget session ``sid`` (nothing happens when it is unknown)."""
        with self._lock:
            self._sessions.pop(sid, None)

    def __len__(self) -> int:
        return len(self._sessions)

    def quote(self, sid: str, options: Mapping[str, str] | None = None) -> tuple[float, dict[str, Any]]:
        """What buying now would score, without buying (``options`` override the chosen ones): the
        reward and its parts; 0 with a reason when no item is open; after the purchase, its score.
        For the env's scoring and hindsight, never shown to the agent."""
        session = self._session(sid)
        if session is None or session.asin is None:
            return 0.0, {"error": "no item is open"}
        if session.done:  # the purchase is made: its own score
            return float(session.reward or 0.0), dict(session.parts)
        chosen = {**session.options, **(options or {})}
        return webshop_reward(self.products[session.asin], session.goal, chosen)

    def _session(self, sid: str) -> Session | None:
        with self._lock:
            session = self._sessions.get(sid)
            if session is not None:
                self._sessions.move_to_end(sid)
            return session

    # ---------------------------------------------------------------- routing
    def get(self, url: str) -> Page:
        """The page at ``url`` (a path with an optional query string); errors are pages too."""
        if len(url) > MAX_URL_CHARS:
            return _error(f"The address is longer than {MAX_URL_CHARS} characters.")
        parts = urlsplit(url)
        segments = [s for s in parts.path.split("/") if s]
        query = {k: v[0] for k, v in parse_qs(parts.query, keep_blank_values=True).items()}
        if not segments:
            return _error("No session: episodes are started by the environment (POST /api/sessions/{sid}).")
        session = self._session(segments[0])
        if session is None:
            return _error("Unknown or expired session.")
        sid, rest = segments[0], segments[1:]
        if session.done and rest != ["buy"]:
            return _error("This session is over: the purchase was made.")
        match rest:
            case []:
                return self._search_page(sid, session)
            case ["search"]:
                return self._results(sid, session, query.get("q", ""), query.get("page", "1"))
            case ["item", asin]:
                return self._item(sid, session, asin)
            case ["item", asin, sub]:
                return self._item_sub(sid, session, asin, sub)
            case ["option", asin]:
                return self._option(sid, session, asin, query.get("name", ""), query.get("value", ""))
            case ["buy"]:
                return self._buy(session)
        return _error("No such page.")

    # ---------------------------------------------------------------- pages
    def _search_page(self, sid: str, session: Session) -> Page:
        session.keywords, session.page, session.asin, session.options = None, 1, None, {}
        return Page("search", (*_text("WebShop", "Instruction:", session.instruction),
                               Element("Search", "search", f"/{sid}/search")))

    def _results(self, sid: str, session: Session, keywords: str, page_text: str) -> Page:
        keywords = " ".join(keywords.split())[:500]
        hits = self.engine.search(keywords)
        pages = max(1, math.ceil(len(hits) / PER_PAGE))
        page = min(max(int(page_text) if page_text.isdigit() and len(page_text) < 6 else 1, 1), pages)
        session.keywords, session.page, session.asin, session.options = keywords, page, None, {}
        elements = [Element(BACK_TO_SEARCH, "button", f"/{sid}"),
                    Element(f"Page {page} (Total results: {len(hits)})")]
        if page > 1:
            elements.append(Element(PREV_PAGE, "button", _results_url(sid, keywords, page - 1)))
        if page < pages:
            elements.append(Element(NEXT_PAGE, "button", _results_url(sid, keywords, page + 1)))
        for index in hits[(page - 1) * PER_PAGE: page * PER_PAGE]:
            product = self.engine.products[index]
            elements += [Element(product.asin, "product", f"/{sid}/item/{product.asin}"),
                         Element(product.title), Element(f"${product.price:.2f}")]
        return Page("results", tuple(elements))

    def _back_url(self, sid: str, session: Session) -> str:
        if session.keywords is None:
            return f"/{sid}"
        return _results_url(sid, session.keywords, session.page)

    def _item(self, sid: str, session: Session, asin: str) -> Page:
        product = self.products.get(asin.upper())
        if product is None:
            return _error(f"No product {asin[:20]!r}.")
        if session.asin != product.asin:
            session.asin, session.options = product.asin, {}
        return self._item_page(sid, session, product)

    def _item_page(self, sid: str, session: Session, product: Product) -> Page:
        elements = [Element(BACK_TO_SEARCH, "button", f"/{sid}"),
                    Element(PREV_PAGE, "button", self._back_url(sid, session))]
        for name, values in product.options.items():
            elements.append(Element(name))
            for value in values:
                href = f"/{sid}/option/{product.asin}?{urlencode({'name': name, 'value': value})}"
                elements.append(Element(value, "option", href, name, session.options.get(name) == value))
        elements += [Element(product.title), Element(f"Price: ${product.price:.2f}"),
                     Element(f"Rating: {product.rating}")]
        elements += [Element(name, "button", f"/{sid}/item/{product.asin}/{name.lower()}") for name in SUB_PAGES]
        elements.append(Element(BUY_NOW, "button", f"/{sid}/buy"))
        return Page("item", tuple(elements))

    def _option(self, sid: str, session: Session, asin: str, name: str, value: str) -> Page:
        product = self.products.get(asin.upper())
        if product is None or value not in product.options.get(name, ()):
            return _error(f"No option {name[:40]!r} = {value[:40]!r} for this product.")
        if session.asin != product.asin:
            session.asin, session.options = product.asin, {}
        session.options[name] = value
        return self._item_page(sid, session, product)

    def _item_sub(self, sid: str, session: Session, asin: str, sub: str) -> Page:
        product = self.products.get(asin.upper())
        if product is None or sub not in {s.lower() for s in SUB_PAGES}:
            return _error("No such page.")
        if session.asin != product.asin:
            session.asin, session.options = product.asin, {}
        head = (Element(BACK_TO_SEARCH, "button", f"/{sid}"), Element(PREV_PAGE, "button", f"/{sid}/item/{product.asin}"))
        if sub == "description":
            body = _text(product.description)
        elif sub == "features":
            body = _text(*product.features)
        else:
            body = tuple(e for stars, words in product.reviews for e in _text(f"{stars} out of 5 stars", words))
        return Page("item_sub", head + body)

    def _buy(self, session: Session) -> Page:
        if session.asin is None:
            return _error("Nothing to buy: open an item first.")
        if not session.done:
            session.reward, session.parts = webshop_reward(self.products[session.asin], session.goal, session.options)
            session.done = True
        product = self.products[session.asin]
        return Page("done", _text("Thank you for shopping with us!", "Purchased", product.asin, product.title,
                                  "Options", json.dumps(session.options, sort_keys=True),
                                  "Your score (min 0.0, max 1.0)", repr(session.reward)),
                    reward=session.reward)


def _results_url(sid: str, keywords: str, page: int) -> str:
    return f"/{sid}/search?{urlencode({'q': keywords, 'page': page})}"


def _error(message: str) -> Page:
    return Page("error", _text("Error", message))


# ====================================================================== HTML
_STYLE = """
body{font-family:system-ui,sans-serif;margin:0;background:#f3f4f6;color:#111}
header{background:#232f3e;color:#fff;padding:12px 24px;font-size:20px;font-weight:600}
main{max-width:900px;margin:20px auto;background:#fff;padding:20px 28px;border-radius:8px;
box-shadow:0 1px 3px rgba(0,0,0,.15)}
.btn{display:inline-block;background:#febd69;color:#111;border:1px solid #a88734;border-radius:4px;
padding:5px 12px;margin:3px 4px 3px 0;text-decoration:none;font-size:14px}
.btn.buy{background:#f08804;color:#fff;font-weight:600;padding:8px 22px}
.product{display:block;margin-top:14px;font-weight:600;color:#0066c0}
.option{display:inline-block;border:1px solid #888;border-radius:14px;padding:3px 12px;margin:2px;
color:#111;text-decoration:none;font-size:14px}
.option.selected{border:2px solid #e77600;background:#fff3e0}
.group{margin:10px 0 2px;font-weight:600;text-transform:capitalize}
.instruction{background:#eef6ff;border-left:4px solid #0066c0;padding:8px 12px}
input[name=q]{width:60%;padding:7px;font-size:15px}
.price{color:#b12704}
"""


def page_html(page: Page, title: str = "WebShop") -> str:
    """The page as HTML (every element tagged with ``data-el`` so :func:`parse_page` can read it back)."""
    out = [f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
           f"<style>{_STYLE}</style></head><body><header>WebShop</header><main data-page='{page.name}'"]
    if page.reward is not None:
        out[0] += f" data-reward='{page.reward!r}'"
    out[0] += ">"
    groups = {e.group for e in page.elements if e.kind == "option"}
    for e in page.elements:
        text = html.escape(e.text)
        href = html.escape(e.href, quote=True)
        if e.kind == "button":
            extra = " buy" if e.text == BUY_NOW else ""
            out.append(f"<a class='btn{extra}' data-el='button' href='{href}'>{text}</a>")
        elif e.kind == "product":
            out.append(f"<a class='product product-link' data-el='product' href='{href}'>{text}</a>")
        elif e.kind == "option":
            sel = " selected" if e.selected else ""
            out.append(f"<a class='option{sel}' data-el='option' data-group='{html.escape(e.group, quote=True)}' "
                       f"data-selected='{int(e.selected)}' href='{href}'>{text}</a>")
        elif e.kind == "search":
            out.append(f"<form action='{href}' method='get'><input id='search_input' name='q' "
                       f"placeholder='Search the shop'> <button class='btn' data-el='search' type='submit'>{text}"
                       f"</button></form>")
        elif e.text in groups and page.name == "item":
            out.append(f"<div class='group' data-el='text'>{text}</div>")
        elif page.name == "search" and e.text not in ("WebShop", "Instruction:"):
            out.append(f"<p class='instruction' data-el='text'>{text}</p>")
        elif e.text.startswith("$") or e.text.startswith("Price: $"):
            out.append(f"<div class='price' data-el='text'>{text}</div>")
        else:
            out.append(f"<p data-el='text'>{text}</p>")
    out.append("</main></body></html>")
    return "".join(out)


class _PageReader(HTMLParser):
    """Reads the elements back from :func:`page_html`'s HTML (or a browser's DOM dump of it)."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.name = "error"
        self.reward: float | None = None
        self.elements: list[Element] = []
        self._open: dict[str, str] | None = None
        self._form_action = ""
        self._parts: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        if tag == "main" and "data-page" in a:
            self.name = a["data-page"]
            self.reward = float(a["data-reward"]) if "data-reward" in a else None
        elif tag == "form":
            self._form_action = a.get("action", "")
        elif "data-el" in a and self._open is None:
            self._open, self._parts = a, []

    def handle_data(self, data: str) -> None:
        if self._open is not None:
            self._parts.append(data)

    def handle_endtag(self, tag: str) -> None:
        if self._open is None or tag not in ("a", "p", "div", "button"):
            return
        a, self._open = self._open, None
        kind = a["data-el"]
        href = self._form_action if kind == "search" else a.get("href", "")
        self.elements.append(Element("".join(self._parts), kind, href, a.get("data-group", ""),
                                     a.get("data-selected") == "1"))


def parse_page(text: str) -> Page:
    """The :class:`Page` an HTML document of :func:`page_html` shows."""
    reader = _PageReader()
    reader.feed(text)
    reader.close()
    return Page(reader.name, tuple(reader.elements), reader.reward)
