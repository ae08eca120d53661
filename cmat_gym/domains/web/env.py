"""WebEnv: ``cmat/Web-v0``, a WebShop-style shop served by a real web app."""

from __future__ import annotations

import json
import os
import secrets
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar, Protocol
from urllib.parse import urlencode

import httpx

from cmat_gym.core.actions import ANSWER, ActionError, Arg, CallProtocol, Grammar, ParsedAction, Tool
from cmat_gym.core.env import PROCEDURAL, Evaluation, TextEnv
from cmat_gym.core.task import Task
from cmat_gym.core.taskfile import read_records
from cmat_gym.core.text import DEFAULT_MAX_OBS_CHARS
from cmat_gym.domains.web import tasks as web_tasks
from cmat_gym.domains.web.catalogue import products_by_asin
from cmat_gym.domains.web.search import default_engine
from cmat_gym.domains.web.server import ShopServer
from cmat_gym.domains.web.shop import BUY_NOW, NEXT_PAGE, PER_PAGE, Element, Page, Shop, parse_page

BUY = BUY_NOW.lower()
MAX_SEARCH_CHARS = 500


class WebGrammar(Grammar):
    """WebShop's two actions, ``search[query]`` and ``click[element]``; ``click[Buy Now]`` (any case,
    text or JSON) parses as the final answer, since buying ends the episode. The answer tool is
    ``click`` itself, so :meth:`answer` writes ``click[Buy Now]``."""

    def bind(self, name: str, args: Any, source: str) -> ParsedAction | ActionError:
        parsed = super().bind(name, args, source)
        if (isinstance(parsed, ParsedAction) and parsed.tool == "click"
                and str(parsed.value).strip().lower() == BUY):
            return ParsedAction(ANSWER, [BUY_NOW], source, "click", dict(parsed.args))
        return parsed

    @property
    def answer_tool(self) -> Tool:
        return self.tool("click")

    def answer(self, answers: Sequence[Any] | Any = ()) -> str:
        return self.call("click", BUY_NOW)


GRAMMAR = WebGrammar(
    tools=(
        Tool("search", (Arg("query", "string", "the keywords to search for"),),
             "search the shop (only on a page with a search bar)"),
        Tool("click", (Arg("element", "string", "a clickable of the current page"),),
             "click a product id, an option value or a button (Back to Search, < Prev, Next >, Description, "
             "Features, Reviews, Buy Now; Buy Now ends the episode)"),
    ),
    protocols=(CallProtocol("", "[]"),),
    examples=("search[gluten free snack pack]", "click[Buy Now]"),
)


def element_name(action: ParsedAction) -> str:
    """The element a ``click`` names (stripped)."""
    return str(action.args.get("element", "")).strip()


def normalize_query(query: str) -> str:
    """A search query as the shop runs it: lower case, single spaces, at most 500 characters."""
    return " ".join(query.lower().split())[:MAX_SEARCH_CHARS]


class Transport(Protocol):
    """How the env reaches the shop: in process or over HTTP (the same pages either way)."""

    def start(self, sid: str, instruction: str, goal: Mapping[str, Any]) -> None: ...
    def end(self, sid: str) -> None: ...
    def get(self, url: str) -> Page: ...
    def quote(self, sid: str, options: Mapping[str, str] | None = None) -> tuple[float, dict[str, Any]]: ...
    def close(self) -> None: ...


class InProcess:
    """Calls the shop's handler directly (the default: no sockets, no event loop)."""

    def __init__(self, shop: Shop) -> None:
        self.shop = shop

    def start(self, sid: str, instruction: str, goal: Mapping[str, Any]) -> None:
        self.shop.start(sid, instruction, goal)

    def end(self, sid: str) -> None:
        self.shop.end(sid)

    def get(self, url: str) -> Page:
        return self.shop.get(url)

    def quote(self, sid: str, options: Mapping[str, str] | None = None) -> tuple[float, dict[str, Any]]:
        return self.shop.quote(sid, options)

    def close(self) -> None:
        pass


class OverHTTP:
    """GETs the pages from a served shop and reads them back from their HTML (what a browser sees)."""

    def __init__(self, url: str, timeout: float = 10.0) -> None:
        self.client = httpx.Client(base_url=url.rstrip("/"), timeout=timeout, trust_env=False)

    def start(self, sid: str, instruction: str, goal: Mapping[str, Any]) -> None:
        self.client.post(f"/api/sessions/{sid}", json={"instruction": instruction, "goal": dict(goal)}
                         ).raise_for_status()

    def end(self, sid: str) -> None:
        self.client.delete(f"/api/sessions/{sid}")

    def get(self, url: str) -> Page:
        return parse_page(self.client.get(url).text)

    def quote(self, sid: str, options: Mapping[str, str] | None = None) -> tuple[float, dict[str, Any]]:
        data = self.client.get(f"/api/sessions/{sid}/quote", params=dict(options or {})).json()
        return float(data["reward"]), dict(data["details"])

    def close(self) -> None:
        self.client.close()


class WebEnv(TextEnv):
    """Find and buy the product an instruction describes, in a WebShop-style web shop.

    ## Description
    WebShop (Yao et al., 2022) on a generated catalogue of 1,320 products (22 types in 6 categories):
    the instruction names a product type, some attributes, a value for each of the product's options
    and a price bound ("i need gluten free vegan snack pack with flavor: cheddar, and size: 12 pack,
    and price lower than 30.00 dollars"). The shop is a real web app (Starlette): search (BM25,
    top 50, 10 a page), results pages, item pages with options, description, features, reviews and
    Buy Now. By default the env calls the app's handler in process; ``serve=True`` starts it on a
    loopback port (``env.server_url``) and plays over HTTP, ``server_url=...`` plays against a shop
    already served: a browser or an external agent then sees the same site and session.

    ## Action Space
    WebShop's actions: ``search[keywords]`` (on a page with a search bar) and ``click[element]``
    (a product id, an option value, ``Back to Search``, ``< Prev``, ``Next >``, ``Description``,
    ``Features``, ``Reviews``, ``Buy Now``; any case), or the same as JSON tool calls
    (``{"tool": "click", "args": {"element": "Buy Now"}}``). Clicking what the page does not show,
    or searching without a search bar, is an ``Error: invalid action`` observation that names what
    can be clicked; the page stays as it was.

    ## Observation Space
    WebShop's simple text mode: the page's visible texts joined by ``" [SEP] "``, then
    ``Available actions: {"has_search_bar": ..., "clickables": [...]}`` (WebShop's
    ``get_available_actions``). After an option click the observation starts ``You have clicked X.``

    ## Rewards
    0 until Buy Now, then WebShop's reward: r_type x (attributes matched + options matched + price
    within the bound) / (attributes + options + 1), fuzzy matching as in WebShop
    (:mod:`cmat_gym.domains.web.reward`). ``success`` is reward 1; the dense score is the reward.

    ## Episode End
    Terminated by Buy Now on an item page; truncated after ``max_rounds`` actions (15).

    ## Arguments
    ``tasks``, ``split``, ``difficulty``, ``max_rounds``, ``render_mode``, ``max_obs_chars`` as every
    TextEnv; ``serve`` (start a loopback server of its own), ``server_url`` (use a served shop),
    ``shop`` (share an in-process :class:`~cmat_gym.domains.web.shop.Shop` between envs).

    ## Version History
    * v0: initial version.
    """

    domain = "web"
    grammar: ClassVar[Grammar] = GRAMMAR
    default_max_rounds = 15

    def __init__(
        self,
        tasks: str | os.PathLike[str] | Sequence[Task] = PROCEDURAL,
        split: str = "train",
        difficulty: int | None = None,
        max_rounds: int | None = None,
        render_mode: str | None = None,
        max_obs_chars: int = DEFAULT_MAX_OBS_CHARS,
        serve: bool = False,
        server_url: str | None = None,
        shop: Shop | None = None,
    ) -> None:
        super().__init__(tasks, split, difficulty, max_rounds, render_mode, max_obs_chars)
        if serve and server_url:
            raise ValueError("Expects serve=True or server_url=..., actual both")
        self._server: ShopServer | None = None
        if serve:
            self._server = ShopServer(shop)
            server_url = self._server.url
        self.server_url = server_url
        self._transport: Transport = OverHTTP(server_url) if server_url else InProcess(shop if shop is not None else Shop())
        self._sid: str | None = None
        self._page = Page("error", ())
        self._searches: list[str] = []

    # ---------------------------------------------------------------- tasks
    @classmethod
    def generate_task(cls, seed: int, split: str, difficulty: int) -> Task:
        return web_tasks.generate_task(seed, split, difficulty)

    @classmethod
    def task_from_id(cls, task_id: str) -> Task:
        return web_tasks.task_from_id(task_id)

    @classmethod
    def load_tasks(cls, path: str) -> list[Task]:
        """A JSON or JSONL file of :meth:`Task.to_dict` records (saved Web tasks, for replay)."""
        return [Task.from_dict(r) for r in read_records(path)]

    @classmethod
    def oracle_actions(cls, task: Task) -> list[str]:
        """Search the gold title, page to the gold product, click it, choose the gold options, buy."""
        gold = task.payload
        engine = default_engine()
        hits = [engine.products[i].asin for i in engine.search(gold["title"])]
        actions = [cls.grammar.call("search", gold["title"])]
        if gold["asin"] in hits:
            actions += [cls.grammar.call("click", NEXT_PAGE)] * (hits.index(gold["asin"]) // PER_PAGE)
        actions.append(cls.grammar.call("click", gold["asin"]))
        product = products_by_asin()[gold["asin"]]
        actions += [cls.grammar.call("click", gold["goal_options"][name]) for name in product.options
                    if name in gold["goal_options"]]
        actions.append(cls.grammar.answer())
        return actions

    # ---------------------------------------------------------------- public state (checker, hooks)
    @property
    def page(self) -> Page:
        """The page the agent is on."""
        return self._page

    @property
    def searches(self) -> tuple[str, ...]:
        """This episode's searches so far, normalised (lower case, single spaces)."""
        return tuple(self._searches)

    def quote(self, options: Mapping[str, str] | None = None) -> tuple[float, dict[str, Any]]:
        """What buying the open item now would score (``options`` override the chosen ones), without
        buying: hindsight for the CMAT loop; it reads the gold goal, so no checker may call it."""
        if self._sid is None:
            return 0.0, {"error": "no episode"}
        return self._transport.quote(self._sid, options)

    # ---------------------------------------------------------------- episode
    def _setup(self, task: Task) -> None:
        if self._sid is not None:
            self._transport.end(self._sid)
        # An unguessable id: a shared server's other clients cannot reach this episode's cart.
        self._sid = secrets.token_hex(8)
        self._transport.start(self._sid, task.instruction, task.payload)
        self._page = self._transport.get(f"/{self._sid}")
        self._searches = []

    def _first_observation(self, task: Task) -> str:
        return self._observe(self._page)

    def _observe(self, page: Page, prefix: str = "") -> str:
        actions = json.dumps(page.available_actions(), ensure_ascii=False)
        return f"{prefix}{page.text()}\n\nAvailable actions: {actions}"

    def invalid_reason(self, action: ParsedAction) -> str | None:
        """Why ``action`` cannot run on the current page (None: it can). Gold-free."""
        if action.tool == "search":
            if not self._page.has_search_bar:
                return "this page has no search bar; click[Back to Search] first"
            return None
        element = element_name(action)
        if self._find(element) is None:
            clickables = ", ".join(self._page.clickables())
            return f"'{element[:80]}' is not clickable on this page; the clickables are: {clickables}"
        return None

    def _find(self, element: str) -> Element | None:
        clickables = self._page.clickables()
        return clickables.get(element) or clickables.get(element.lower()) or next(
            (e for name, e in clickables.items() if name.lower() == element.lower()), None)

    def step_parsed(self, action: str, parsed: ParsedAction | ActionError) -> tuple[str, float, bool, bool, dict[str, Any]]:
        if isinstance(parsed, ParsedAction) and not self._done and self.task is not None:
            reason = self.invalid_reason(parsed)
            if reason is not None:  # WebShop ignores an invalid action; we also say why
                self.rounds += 1
                return self._finish_step(action, f"Error: invalid action: {reason}.", parsed=parsed,
                                         error="invalid_action", truncated=self.rounds >= self.max_rounds)
        return super().step_parsed(action, parsed)

    def _execute(self, action: ParsedAction) -> str:
        if action.tool == "search":
            query = normalize_query(str(action.args["query"]))
            self._searches.append(query)
            search = next(e for e in self._page.elements if e.kind == "search")
            self._page = self._transport.get(f"{search.href}?{urlencode({'q': query})}")
            return self._observe(self._page)
        element = self._find(element_name(action))
        assert element is not None  # step_parsed checked it (invalid_reason)
        self._page = self._transport.get(element.href)
        prefix = f"You have clicked {element.text}. [SEP] " if element.kind == "option" else ""
        return self._observe(self._page, prefix)

    def _finish_answer(self, action: str, parsed: ParsedAction) -> tuple[str, float, bool, bool, dict[str, Any]]:
        buy = self._find(BUY_NOW)
        assert buy is not None  # step_parsed checked it (invalid_reason)
        self._page = self._transport.get(buy.href)
        # The score is the shop's own (the done page's); the quote only adds its parts.
        reward = float(self._page.reward or 0.0)
        evaluation = Evaluation(reward, reward >= 1.0, reward, self.quote()[1])
        return self._finish_step(action, self._observe(self._page), parsed=parsed, terminated=True,
                                 evaluation=evaluation)

    def _evaluate(self, answers: list[str]) -> Evaluation:
        if self._find(BUY_NOW) is None:
            return Evaluation(0.0, False, 0.0, {"error": "Buy Now is not on this page"})
        reward, details = self.quote()
        return Evaluation(reward, reward >= 1.0, reward, details)

    def _teardown(self) -> None:
        if self._sid is not None:
            try:
                self._transport.end(self._sid)
            except httpx.HTTPError:  # a server that is gone has forgotten the session anyway
                pass
            self._sid = None
        self._transport.close()
        if self._server is not None:
            self._server.close()
            self._server = None
