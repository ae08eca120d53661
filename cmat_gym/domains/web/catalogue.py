"""The shop's catalogue: a deterministic generator of WebShop-like products.

WebShop scraped 1.18M Amazon products; we cannot ship them, so the catalogue is generated from a
small vocabulary (categories, product types, attributes, option values, brands, review phrases)
with :class:`~cmat_gym.core.rng.StableRandom`, the same on every machine. Every product has what
WebShop's reward reads: a ``query`` (the product type it was made for), a category path
(``Grocery › Snacks › Snack Packs``), a title, ``attributes`` (``"gluten free"``), options per name
(``{"flavor": [...], "size": [...]}``), a price, bullet points (features), a description and reviews.

WebShop's type reward tags the nouns of titles with spaCy; here the generator knows which title words
are nouns (the type's nouns and the brand, a proper noun) and records them in ``nouns``, so no
tagger is needed (see :mod:`cmat_gym.domains.web.reward`).

No product text names one of its own option values: WebShop's option reward also credits an option
found in the title or description, which would otherwise let any choice of that option score.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field

from cmat_gym.core.rng import StableRandom

PRODUCTS_PER_TYPE = 60
SEP_CATEGORY = " › "


@dataclass(frozen=True)
class ProductType:
    """A kind of product: its name (the WebShop ``query``), category path, nouns, pools and price range."""

    name: str
    category: tuple[str, str, str]
    nouns: tuple[str, ...]
    attributes: tuple[str, ...]
    options: tuple[tuple[str, tuple[str, ...]], ...]
    price: tuple[float, float]


@dataclass(frozen=True)
class Product:
    """One product of the catalogue (the fields WebShop's pages and reward read)."""

    asin: str
    query: str
    category: str
    title: str
    nouns: tuple[str, ...]
    attributes: tuple[str, ...]
    options: dict[str, tuple[str, ...]] = field(hash=False)
    price: float
    features: tuple[str, ...]
    description: str
    reviews: tuple[tuple[int, str], ...]
    rating: float

    def search_text(self) -> str:
        """The text the search engine indexes (WebShop indexes title, description, bullets and options)."""
        return " ".join((self.title, self.query, self.category.replace(SEP_CATEGORY, " "), " ".join(self.attributes),
                         " ".join(self.features)))


_FOOD = ("gluten free", "vegan", "non gmo", "low sugar", "keto friendly", "organic", "high protein",
         "individually wrapped", "dairy free", "low sodium")
_CARE = ("paraben free", "cruelty free", "fragrance free", "sensitive skin", "long lasting", "natural ingredients",
         "dermatologist tested", "travel size", "alcohol free")
_WEAR = ("machine wash", "moisture wicking", "relaxed fit", "long sleeve", "quick drying", "button closure",
         "cotton blend", "breathable fabric", "tagless")
_HOME = ("machine washable", "easy clean", "eco friendly", "hand made", "lightweight", "heavy duty", "non toxic",
         "space saving", "fade resistant")
_TECH = ("fast charging", "noise cancelling", "water resistant", "easy install", "high speed", "shockproof",
         "long battery life", "plug and play", "scratch resistant")
_PET = ("grain free", "natural ingredients", "low calorie", "odor control", "made in usa", "vet recommended",
        "easy to digest", "dust free")

_FLAVOR = ("flavor", ("cheddar", "sea salt", "barbecue", "sour cream", "jalapeno", "honey mustard"))
_PACK = ("size", ("6 pack", "12 pack", "24 pack", "36 pack"))
_COLOR = ("color", ("black", "navy blue", "white", "heather grey", "forest green", "burgundy", "sky blue"))
_WEAR_SIZE = ("size", ("small", "medium", "large", "x-large", "xx-large"))
_SCENT = ("scent", ("lavender", "unscented", "citrus", "vanilla", "eucalyptus", "coconut"))
_VOLUME = ("size", ("1.7 fl oz", "3.4 fl oz", "8 fl oz", "16 fl oz"))
_COUNT = ("size", ("30 count", "60 count", "90 count", "120 count"))

TYPES: tuple[ProductType, ...] = (
    ProductType("snack pack", ("Grocery & Gourmet Food", "Snacks", "Snack Packs"), ("snack", "pack"), _FOOD,
                (_FLAVOR, _PACK), (8, 40)),
    ProductType("protein bar", ("Grocery & Gourmet Food", "Snacks", "Protein Bars"), ("protein", "bar"), _FOOD,
                (("flavor", ("chocolate chip", "peanut butter", "cookie dough", "salted caramel", "birthday cake")),
                 _PACK), (12, 55)),
    ProductType("coffee beans", ("Grocery & Gourmet Food", "Beverages", "Coffee"), ("coffee", "beans"), _FOOD,
                (("roast", ("light roast", "medium roast", "dark roast", "espresso roast")),
                 ("size", ("12 ounce", "2 pound", "5 pound"))), (9, 60)),
    ProductType("herbal tea", ("Grocery & Gourmet Food", "Beverages", "Tea"), ("herbal", "tea"), _FOOD,
                (("flavor", ("chamomile", "peppermint", "ginger lemon", "hibiscus", "rooibos")), _COUNT), (5, 30)),
    ProductType("face moisturizer", ("Beauty & Personal Care", "Skin Care", "Moisturizers"), ("face", "moisturizer"),
                _CARE, (_VOLUME, _SCENT), (10, 70)),
    ProductType("shampoo", ("Beauty & Personal Care", "Hair Care", "Shampoos"), ("shampoo",), _CARE,
                (_SCENT, _VOLUME), (6, 45)),
    ProductType("deodorant", ("Beauty & Personal Care", "Personal Care", "Deodorants"), ("deodorant",), _CARE,
                (_SCENT, ("size", ("2.6 ounce", "3 ounce", "pack of 2", "pack of 3"))), (5, 35)),
    ProductType("lipstick", ("Beauty & Personal Care", "Makeup", "Lipsticks"), ("lipstick",), _CARE,
                (("color", ("ruby red", "nude pink", "coral", "berry", "mauve", "plum")),), (6, 40)),
    ProductType("t-shirt", ("Clothing, Shoes & Jewelry", "Men", "Shirts"), ("t-shirt",), _WEAR,
                (_COLOR, _WEAR_SIZE), (9, 45)),
    ProductType("hoodie", ("Clothing, Shoes & Jewelry", "Men", "Hoodies"), ("hoodie",), _WEAR,
                (_COLOR, _WEAR_SIZE), (20, 80)),
    ProductType("running shoes", ("Clothing, Shoes & Jewelry", "Shoes", "Athletic"), ("running", "shoes"), _WEAR,
                (_COLOR, ("size", ("7", "8", "9", "10", "11", "12"))), (35, 160)),
    ProductType("socks", ("Clothing, Shoes & Jewelry", "Men", "Socks"), ("socks",), _WEAR,
                (_COLOR, ("size", ("shoe size 6-8", "shoe size 9-11", "shoe size 12-14"))), (7, 30)),
    ProductType("throw pillow", ("Home & Kitchen", "Decor", "Throw Pillows"), ("throw", "pillow"), _HOME,
                (_COLOR, ("size", ("16x16 inch", "18x18 inch", "20x20 inch"))), (10, 50)),
    ProductType("bath towel set", ("Home & Kitchen", "Bath", "Towels"), ("bath", "towel", "set"), _HOME,
                (_COLOR,), (18, 90)),
    ProductType("scented candle", ("Home & Kitchen", "Decor", "Candles"), ("candle",), _HOME,
                (_SCENT, ("size", ("8 oz", "14 oz", "22 oz"))), (9, 45)),
    ProductType("storage basket", ("Home & Kitchen", "Storage", "Baskets"), ("storage", "basket"), _HOME,
                (_COLOR, ("size", ("small", "medium", "large"))), (12, 60)),
    ProductType("phone case", ("Electronics", "Accessories", "Phone Cases"), ("phone", "case"), _TECH,
                (_COLOR, ("model", ("iphone 14", "iphone 15", "galaxy s23", "pixel 8"))), (8, 40)),
    ProductType("wireless earbuds", ("Electronics", "Audio", "Earbuds"), ("earbuds",), _TECH,
                (_COLOR,), (20, 150)),
    ProductType("usb cable", ("Electronics", "Accessories", "Cables"), ("usb", "cable"), _TECH,
                (("length", ("3 ft", "6 ft", "10 ft")), _COLOR), (5, 25)),
    ProductType("laptop stand", ("Electronics", "Computer Accessories", "Stands"), ("laptop", "stand"), _TECH,
                (("color", ("silver", "space grey", "black")),), (15, 70)),
    ProductType("dog treats", ("Pet Supplies", "Dogs", "Treats"), ("dog", "treats"), _PET,
                (("flavor", ("chicken", "beef", "salmon", "peanut butter")), ("size", ("8 oz", "16 oz", "32 oz"))),
                (6, 40)),
    ProductType("cat litter", ("Pet Supplies", "Cats", "Litter"), ("cat", "litter"), _PET,
                (_SCENT, ("size", ("10 lb", "20 lb", "40 lb"))), (10, 45)),
)
TYPE_BY_NAME = {t.name: t for t in TYPES}

_BRANDS = ("Acorn", "Bluepeak", "Crestline", "Dovetail", "Everwell", "Foxglen", "Greenfield", "Harbor", "Ironwood",
           "Juniper", "Kestrel", "Lumen", "Maplewood", "Northstar", "Oakhaven", "Pinecrest", "Quarry", "Rosewood",
           "Sterling", "Tidewater", "Upland", "Vantage", "Willow", "Yardley", "Zenith")
_STYLES = ("Classic", "Premium", "Everyday", "Deluxe", "Essential", "Original", "Signature", "Select", "Pro",
           "Ultra", "Natural", "Modern")
_PRAISE = ("Great value and exactly as described.", "Would buy again.", "Arrived quickly and well packed.",
           "Quality is better than I expected.", "Does the job, nothing fancy.", "My family loves it.",
           "A bit pricey but worth it.", "Not what I hoped for.", "Works well after a month of use.")
_FEATURE_TEMPLATES = ("{Attr}: made to be {attr} without compromise.", "Thoughtfully designed: {attr} for daily use.",
                      "Trusted by customers who want {attr}.")


def _asin(rng: StableRandom) -> str:
    alphabet = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ"
    return "B0" + "".join(rng.choice(alphabet) for _ in range(8))


def _clean(texts: list[str], option_values: list[str]) -> list[str]:
    """``texts`` without those that name an option value (see the module docstring)."""
    return [t for t in texts if not any(v in t.lower() for v in option_values)]


def _make_product(kind: ProductType, index: int, seen_titles: set[str], seen_asins: set[str]) -> Product:
    rng = StableRandom("web-catalogue", kind.name, index)
    n_attrs = rng.randint(2, 4)
    attributes = tuple(sorted(rng.sample(kind.attributes, n_attrs)))
    options = {}
    for name, values in kind.options:
        k = rng.randint(max(2, len(values) - 2), len(values))
        kept = set(rng.sample(values, k))
        options[name] = tuple(v for v in values if v in kept)
    option_values = [v for vs in options.values() for v in vs]
    brand = rng.choice(_BRANDS)
    for _ in range(100):
        style = rng.choice(_STYLES)
        shown = rng.sample(attributes, min(2, len(attributes)))
        title = f"{brand} {style} {kind.name.title()} - {', '.join(a.title() for a in shown)}"
        if title in seen_titles:  # every title unique: the oracle searches the gold title
            title += f" (Series {rng.choice('ABCDEFGHJK')}{rng.choice('LMNPQRTUVW')})"
        if title not in seen_titles and not any(v in title.lower() for v in option_values):
            break
    else:
        raise RuntimeError(f"no unique title for {kind.name} #{index}: the vocabulary is too small")
    seen_titles.add(title)
    asin = _asin(rng)
    while asin in seen_asins:
        asin = _asin(rng)
    seen_asins.add(asin)
    low, high = kind.price
    price = round(int(rng.uniform(low, high)) + 0.99, 2)
    features = _clean([rng.choice(_FEATURE_TEMPLATES).format(Attr=a.title(), attr=a) for a in attributes],
                      option_values)
    description = " ".join(_clean([
        f"The {brand} {style.lower()} {kind.name} is a {' and '.join(attributes)} choice from our "
        f"{kind.category[1].lower()} range.",
        f"Every {kind.name} is checked before it ships.",
        f"Sold by {brand}.",
    ], option_values))
    reviews = tuple((rng.randint(2, 5), rng.choice(_PRAISE)) for _ in range(rng.randint(1, 3)))
    rating = round(sum(r for r, _ in reviews) / len(reviews), 1)
    return Product(asin=asin, query=kind.name, category=SEP_CATEGORY.join(kind.category), title=title,
                   nouns=(brand.lower(),) + kind.nouns, attributes=attributes, options=options, price=price,
                   features=tuple(features), description=description, reviews=reviews, rating=rating)


@functools.cache
def catalogue() -> tuple[Product, ...]:
    """Every product, in a fixed order (built once per process: ~1,300 products in ~0.1 s)."""
    seen_titles: set[str] = set()
    seen_asins: set[str] = set()
    return tuple(_make_product(kind, i, seen_titles, seen_asins)
                 for kind in TYPES for i in range(PRODUCTS_PER_TYPE))


@functools.cache
def products_by_asin() -> dict[str, Product]:
    """The catalogue keyed by ASIN."""
    return {p.asin: p for p in catalogue()}

