"""Procedural knowledge graphs: typed entities, typed relations with inverses, numeric and date
attributes, in Freebase's shape (``domain.type.property`` names, ``m.0...`` ids, both directions of
every relation stored, ``type.property.expected_type`` declaring each relation's range).

A world is a function of its key (``StableRandom``): the same key gives the same triples on every
machine. Sizes grow with difficulty (about 30 entities at difficulty 1, 60 at 3).
"""

from __future__ import annotations

from dataclasses import dataclass

from cmat_gym.core.rng import StableRandom
from cmat_gym.domains.kg.backend import XSD, ntriples, string_literal
from cmat_gym.domains.kg.sexpr import EXPECTED_TYPE, NAME_PREDICATE, REVERSE_PROPERTY, TYPE_PREDICATE

PERSON, ORG, CITY, COUNTRY, BOOK, EVENT = (
    "people.person", "organization.organization", "location.citytown", "location.country",
    "book.written_work", "time.event")
LOCATION = "location.location"


@dataclass(frozen=True)
class Relation:
    """A relation ``name`` from ``domain`` to ``range`` with its stored inverse ``inverse``; ``low``
    to ``high`` targets per subject; ``phrase``/``inverse_phrase`` describe the targets of a set
    (``{}`` is the set's description; plural, since a set may hold several)."""

    name: str
    inverse: str
    domain: str
    range: str
    low: int
    high: int
    phrase: str
    inverse_phrase: str


@dataclass(frozen=True)
class Attribute:
    """A numeric or date attribute of the entities of ``domain``; ``noun`` names it in questions."""

    name: str
    domain: str
    kind: str  # "integer", "double" or "date"
    low: int
    high: int
    noun: str


RELATIONS = (
    Relation("people.person.place_of_birth", "location.location.people_born_here", PERSON, CITY, 1, 1,
             "the birthplaces of {}", "the people born in {}"),
    Relation("people.person.employer", "organization.organization.employees", PERSON, ORG, 1, 2,
             "the employers of {}", "the employees of {}"),
    Relation("organization.organization.headquarters", "location.location.organizations_headquartered_here", ORG,
             CITY, 1, 1, "the headquarters cities of {}", "the organizations headquartered in {}"),
    Relation("location.citytown.country", "location.country.cities", CITY, COUNTRY, 1, 1,
             "the countries of {}", "the cities in {}"),
    Relation("book.written_work.author", "people.person.works_written", BOOK, PERSON, 1, 2,
             "the authors of {}", "the works written by {}"),
    Relation("book.written_work.publisher", "organization.organization.works_published", BOOK, ORG, 1, 1,
             "the publishers of {}", "the works published by {}"),
    Relation("time.event.locations", "location.location.events", EVENT, CITY, 1, 1,
             "the locations of {}", "the events held in {}"),
    Relation("time.event.participants", "people.person.events_participated_in", EVENT, PERSON, 2, 3,
             "the participants of {}", "the events {} took part in"),
    Relation("time.event.sponsors", "organization.organization.events_sponsored", EVENT, ORG, 1, 1,
             "the sponsors of {}", "the events sponsored by {}"),
)

ATTRIBUTES = (
    Attribute("people.person.date_of_birth", PERSON, "date", 1900, 2005, "date of birth"),
    Attribute("people.person.height_meters", PERSON, "double", 150, 205, "height"),
    Attribute("organization.organization.date_founded", ORG, "date", 1800, 2020, "founding date"),
    Attribute("organization.organization.number_of_employees", ORG, "integer", 5, 90000, "number of employees"),
    Attribute("location.citytown.population", CITY, "integer", 1000, 9000000, "population"),
    Attribute("location.location.area", CITY, "double", 10, 3000, "area"),
    Attribute("location.location.area", COUNTRY, "double", 5000, 900000, "area"),
    Attribute("book.written_work.date_of_first_publication", BOOK, "date", 1850, 2023, "publication date"),
    Attribute("book.written_work.number_of_pages", BOOK, "integer", 40, 1200, "number of pages"),
    Attribute("time.event.start_date", EVENT, "date", 1950, 2024, "start date"),
    Attribute("time.event.attendance", EVENT, "integer", 50, 200000, "attendance"),
)

TYPE_NOUNS = {PERSON: "people", ORG: "organizations", CITY: "cities", COUNTRY: "countries", BOOK: "works",
              EVENT: "events"}
EXTRA_TYPES = {CITY: (LOCATION,), COUNTRY: (LOCATION,)}
SIZES = {1: {PERSON: 8, ORG: 4, CITY: 5, COUNTRY: 2, BOOK: 6, EVENT: 4},
         2: {PERSON: 12, ORG: 6, CITY: 7, COUNTRY: 3, BOOK: 9, EVENT: 6},
         3: {PERSON: 16, ORG: 8, CITY: 9, COUNTRY: 4, BOOK: 12, EVENT: 8}}

_FIRST = ("Ada", "Bruno", "Chiara", "Dmitri", "Elena", "Farid", "Greta", "Hiro", "Ines", "Jonas", "Kemal", "Lena",
          "Mateo", "Nadia", "Oskar", "Priya", "Quentin", "Rosa", "Sven", "Tamar", "Ugo", "Vera", "Wei", "Yara")
_LAST = ("Alder", "Brandt", "Castillo", "Dufresne", "Eklund", "Ferreira", "Garber", "Halloran", "Ivanova", "Jansen",
         "Kowalski", "Lindqvist", "Moreau", "Nakamura", "Okafor", "Petrov", "Quiroga", "Rossi", "Sato", "Tanaka")
_SYLLABLES = ("ba", "ber", "ca", "dor", "el", "fen", "gar", "hal", "is", "ka", "lun", "mar", "nor", "ost", "pel",
              "quor", "ran", "sel", "tor", "ul", "ven", "wyn", "xa", "zel")
_ORG_KINDS = ("Corporation", "Institute", "Press", "Group", "University", "Foundation", "Works", "Labs")
_ADJ = ("Silent", "Crimson", "Hidden", "Last", "Golden", "Broken", "Distant", "Quiet", "Iron", "Paper", "Winter",
        "Hollow", "Burning", "Glass")
_NOUN = ("Harbor", "Orchard", "Lantern", "Meridian", "Tide", "Archive", "Compass", "Garden", "Signal", "Atlas",
         "Furnace", "Ladder", "River", "Crown")
_EVENT_KINDS = ("Festival", "Summit", "Expo", "Congress", "Fair", "Symposium", "Regatta", "Games")
_ID_CHARS = "0123456789bcdfghjklmnpqrstvwxyz_"


@dataclass(frozen=True)
class World:
    """One generated knowledge graph.

    Attributes:
        entities: ``{id: (type, name)}``.
        triples: ``(subject, predicate, object)``: names, ints/floats, or written literals.
    """

    entities: dict[str, tuple[str, str]]
    triples: tuple[tuple[str, str, object], ...]

    def ntriples(self) -> str:
        """The world as N-Triples text."""
        return _ntriples(self)

    def of_type(self, type_: str) -> list[str]:
        """The ids of the entities of ``type_``, in generation order."""
        return [i for i, (t, _) in self.entities.items() if t == type_]

    def name(self, entity: str) -> str:
        """The entity's name."""
        return self.entities[entity][1]


def _word(rng: StableRandom, syllables: int) -> str:
    return "".join(rng.choice(_SYLLABLES) for _ in range(syllables)).capitalize()


def _name(rng: StableRandom, type_: str) -> str:
    if type_ == PERSON:
        return f"{rng.choice(_FIRST)} {rng.choice(_LAST)}"
    if type_ == ORG:
        return f"{_word(rng, 2)} {rng.choice(_ORG_KINDS)}"
    if type_ == CITY:
        return _word(rng, rng.randint(2, 3))
    if type_ == COUNTRY:
        return _word(rng, 2) + rng.choice(("ia", "land", "stan", "onia"))
    if type_ == BOOK:
        return f"The {rng.choice(_ADJ)} {rng.choice(_NOUN)}"
    return f"{_word(rng, 2)} {rng.choice(_EVENT_KINDS)} {rng.randint(1950, 2024)}"


def _value(rng: StableRandom, attribute: Attribute, taken: set[object]) -> object:
    """A value of ``attribute`` not yet taken by another entity (so ARGMAX/ARGMIN have one answer)."""
    while True:
        if attribute.kind == "integer":
            value: object = rng.randint(attribute.low, attribute.high)
        elif attribute.kind == "double":
            value = round(rng.uniform(attribute.low, attribute.high) / (100 if attribute.noun == "height" else 1), 2)
        else:
            value = f'"{rng.randint(attribute.low, attribute.high):04d}-{rng.randint(1, 12):02d}-' \
                    f'{rng.randint(1, 28):02d}"^^<{XSD}date>'
        if value not in taken:
            taken.add(value)
            return value


def generate_world(rng: StableRandom, difficulty: int) -> World:
    """A world drawn from ``rng`` with the sizes of ``difficulty`` (see the module docstring)."""
    entities: dict[str, tuple[str, str]] = {}
    names: set[str] = set()
    triples: list[tuple[str, str, object]] = []
    for type_, count in SIZES[difficulty].items():
        for _ in range(count):
            name = _name(rng, type_)
            while name in names:
                name = _name(rng, type_)
            names.add(name)
            entity = "m.0" + "".join(rng.choice(_ID_CHARS) for _ in range(6))
            while entity in entities:
                entity = "m.0" + "".join(rng.choice(_ID_CHARS) for _ in range(6))
            entities[entity] = (type_, name)
            triples.append((entity, TYPE_PREDICATE, type_))
            triples.extend((entity, TYPE_PREDICATE, extra) for extra in EXTRA_TYPES.get(type_, ()))
            triples.append((entity, NAME_PREDICATE, string_literal(name)))
    by_type = {t: [i for i, (tt, _) in entities.items() if tt == t] for t in SIZES[difficulty]}
    for relation in RELATIONS:
        # Schema triples, as Freebase stores them: the range of each direction and the pairing.
        triples += [(relation.name, EXPECTED_TYPE, relation.range), (relation.inverse, EXPECTED_TYPE, relation.domain),
                    (relation.name, REVERSE_PROPERTY, relation.inverse),
                    (relation.inverse, REVERSE_PROPERTY, relation.name)]
        targets = by_type[relation.range]
        for subject in by_type[relation.domain]:
            for target in rng.sample(targets, min(len(targets), rng.randint(relation.low, relation.high))):
                triples.append((subject, relation.name, target))
                triples.append((target, relation.inverse, subject))
    for attribute in ATTRIBUTES:
        taken: set[object] = set()
        for subject in by_type[attribute.domain]:
            triples.append((subject, attribute.name, _value(rng, attribute, taken)))
    return World(entities, tuple(triples))


def _ntriples(world: World) -> str:
    return ntriples(world.triples)  # type: ignore[arg-type]


def relation_named(name: str) -> tuple[Relation, bool]:
    """The relation with this name or inverse name, and whether ``name`` is the inverse."""
    for relation in RELATIONS:
        if relation.name == name:
            return relation, False
        if relation.inverse == name:
            return relation, True
    raise KeyError(name)


def directed(type_: str) -> list[tuple[str, str, str]]:
    """``(relation name, range, phrase)`` of every relation leaving entities of ``type_`` (both
    directions of the declared relations)."""
    found = []
    for r in RELATIONS:
        if r.domain == type_:
            found.append((r.name, r.range, r.phrase))
        if r.range == type_:
            found.append((r.inverse, r.domain, r.inverse_phrase))
    return found


def attributes_of(type_: str) -> list[Attribute]:
    """The attributes entities of ``type_`` carry."""
    return [a for a in ATTRIBUTES if a.domain == type_]
