"""Schema families of the procedural DB tasks: which tables a task may have, and how to word them.

A table spec (:class:`_TableSpec`) lists the columns a table may have (:class:`_Attr`: type, value
generator, role in questions, wording); a family (:class:`_Family`) is a child table with foreign keys
to one or two parent tables (:class:`_Link`). :data:`_STANDALONE` holds the specs that can be the only
table of a difficulty-1/2 task. Names with a leading underscore are private to the ``tasks`` package.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from cmat_gym.domains.db.tasks.pools import (
    _ADJECTIVES,
    _NOUNS,
    ACADEMIC_DEPARTMENTS,
    AIRLINE_SUFFIXES,
    AIRLINE_WORDS,
    APPOINTMENT_STATUSES,
    BAND_NOUNS,
    BLOOD_TYPES,
    BOOK_GENRES,
    BOOKING_STATUSES,
    BRANDS,
    CAMPUS_BUILDINGS,
    CARRIER_CODES,
    CITIES,
    COMPANY_DEPARTMENTS,
    COUNTRIES,
    COURSE_TITLES,
    DEVICES,
    FIRST_NAMES,
    HOSPITAL_WINGS,
    HOTEL_SUFFIXES,
    HOTEL_WORDS,
    INSURERS,
    JOB_TITLES,
    LABEL_SUFFIXES,
    LABEL_WORDS,
    LANGUAGES,
    LAST_NAMES,
    LEAGUES,
    LOYALTY_TIERS,
    MAJORS,
    MEMBERSHIP_LEVELS,
    MOVIE_GENRES,
    MUSIC_GENRES,
    OFFICE_BUILDINGS,
    ORDER_STATUSES,
    PAYMENT_METHODS,
    PLANS,
    POSITIONS,
    PRODUCT_ADJECTIVES,
    PRODUCT_CATEGORIES,
    PRODUCT_NOUNS,
    PUBLISHER_SUFFIXES,
    PUBLISHER_WORDS,
    ROOM_TYPES,
    SEMESTERS,
    SPECIALTIES,
    TEAM_MASCOTS,
)


# ====================================================================== table specs
@dataclass(frozen=True)
class _Attr:
    """One column a table spec may have.

    ``gen`` says how a value is drawn: ``("person",)``, ``("pool", values)``,
    ``("fmt", template, pool, ...)``, ``("code", prefixes, lo, hi)``, ``("int", lo, hi, step)``,
    ``("real", lo, hi, decimals)`` or ``("date", first_year, last_year)``.
    """

    name: str  # canonical snake_case column name
    sqltype: str  # "TEXT", "INTEGER" or "REAL"
    gen: tuple[Any, ...]
    kind: str  # "key" (names a row), "cat" (few repeated values), "num", "date"
    eq: str = ""  # how to say "this column = {v}" after a plural noun, e.g. "from {v}"
    sum_ok: bool = True  # a total of this column means something (not for ages, years, ratings)
    desc: str = ""  # words for the column in questions; default: the name with spaces

    @property
    def words(self) -> str:
        return self.desc or self.name.replace("_", " ")


@dataclass(frozen=True)
class _TableSpec:
    name: str
    noun: str
    plural: str
    ref: str  # how to name one row by its key (or id when key is None): 'customer {v}'
    key: _Attr | None
    attrs: tuple[_Attr, ...]


@dataclass(frozen=True)
class _Link:
    """A foreign key from the family's child table to one parent table."""

    parent: _TableSpec
    column: str  # the child's column, e.g. "customer_id"
    rel: str  # child rows of a parent: "placed by {p}" (orders placed by customer "Ann Lee")
    inv: str  # the parent of one child: "the customer who placed {c}"


@dataclass(frozen=True)
class _Family:
    name: str
    child: _TableSpec
    links: tuple[_Link, ...]  # one per parent table

    @property
    def specs(self) -> tuple[_TableSpec, ...]:
        return tuple(link.parent for link in self.links) + (self.child,)


def _key(name: str, gen: tuple[Any, ...], desc: str = "") -> _Attr:
    return _Attr(name, "TEXT", gen, "key", desc=desc)


def _cat(name: str, pool: tuple[str, ...], eq: str = "", desc: str = "") -> _Attr:
    return _Attr(name, "TEXT", ("pool", pool), "cat", eq, False, desc)


def _int(name: str, lo: int, hi: int, step: int = 1, sum_ok: bool = True, desc: str = "") -> _Attr:
    return _Attr(name, "INTEGER", ("int", lo, hi, step), "num", "", sum_ok, desc)


def _real(name: str, lo: float, hi: float, decimals: int = 2, sum_ok: bool = True, desc: str = "") -> _Attr:
    return _Attr(name, "REAL", ("real", lo, hi, decimals), "num", "", sum_ok, desc)


def _date(name: str, first_year: int, last_year: int, desc: str = "") -> _Attr:
    return _Attr(name, "TEXT", ("date", first_year, last_year), "date", "", False, desc)


_PERSON = ("person",)

_CUSTOMERS = _TableSpec("customers", "customer", "customers", "customer {v}", _key("name", _PERSON), (
    _cat("city", CITIES, "from {v}"),
    _cat("membership", MEMBERSHIP_LEVELS, "with {v} membership", "membership level"),
    _int("age", 18, 80, sum_ok=False),
    _date("signup_date", 2016, 2024),
    _int("loyalty_points", 0, 5000, 10, desc="loyalty points"),
))
_PRODUCTS = _TableSpec("products", "product", "products", "the product {v}",
                       _key("name", ("fmt", "{0} {1}", PRODUCT_ADJECTIVES, PRODUCT_NOUNS)), (
    _cat("category", PRODUCT_CATEGORIES, "in the category {v}"),
    _cat("brand", BRANDS, "made by {v}"),
    _real("price", 2, 500),
    _int("stock", 0, 300),
    _real("rating", 1, 5, 1, sum_ok=False),
))
_ORDERS = _TableSpec("orders", "order", "orders", "the order with id {v}", None, (
    _int("quantity", 1, 12),
    _real("amount", 5, 900),
    _date("order_date", 2023, 2024),
    _cat("status", ORDER_STATUSES, "with status {v}"),
    _cat("payment_method", PAYMENT_METHODS, "paid by {v}"),
))

_STUDENTS = _TableSpec("students", "student", "students", "student {v}", _key("name", _PERSON), (
    _cat("major", MAJORS, "majoring in {v}"),
    _cat("city", CITIES, "from {v}", "home city"),
    _int("age", 17, 30, sum_ok=False),
    _real("gpa", 1.5, 4.0, sum_ok=False, desc="GPA"),
    _int("credits_earned", 0, 180, 3, desc="number of credits earned"),
    _date("enrollment_date", 2019, 2024),
))
_COURSES = _TableSpec("courses", "course", "courses", "the course {v}",
                      _key("title", ("pool", COURSE_TITLES)), (
    _cat("department", ACADEMIC_DEPARTMENTS, "offered by the {v} department"),
    _cat("building", CAMPUS_BUILDINGS, "taught in {v}"),
    _int("credits", 1, 8),
    _int("capacity", 15, 240, 5),
    _real("fee", 100, 2500),
))
_ENROLLMENTS = _TableSpec("enrollments", "enrollment", "enrollments", "the enrollment with id {v}", None, (
    _int("score", 35, 100, sum_ok=False),
    _cat("semester", SEMESTERS, "in the {v} semester"),
    _date("enrolled_on", 2023, 2025, "enrollment date"),
    _real("attendance_rate", 40, 100, 1, sum_ok=False),
))

_PATIENTS = _TableSpec("patients", "patient", "patients", "patient {v}", _key("name", _PERSON), (
    _cat("city", CITIES, "from {v}"),
    _cat("blood_type", BLOOD_TYPES, "with blood type {v}"),
    _cat("insurer", INSURERS, "insured by {v}"),
    _int("age", 1, 95, sum_ok=False),
    _real("weight_kg", 8, 130, 1, sum_ok=False, desc="weight in kg"),
    _date("admission_date", 2022, 2024),
))
_DOCTORS = _TableSpec("doctors", "doctor", "doctors", "doctor {v}", _key("name", _PERSON), (
    _cat("specialty", SPECIALTIES, "specialising in {v}"),
    _cat("wing", HOSPITAL_WINGS, "working in the {v} wing", "hospital wing"),
    _int("years_experience", 1, 40, sum_ok=False, desc="years of experience"),
    _int("salary", 80000, 350000, 1000),
    _int("patients_per_week", 10, 120),
))
_APPOINTMENTS = _TableSpec("appointments", "appointment", "appointments", "the appointment with id {v}",
                           None, (
    _date("appointment_date", 2023, 2024),
    _real("fee", 40, 400),
    _int("duration_minutes", 10, 90, 5, desc="duration in minutes"),
    _cat("status", APPOINTMENT_STATUSES, "with status {v}"),
))

_AIRLINES = _TableSpec("airlines", "airline", "airlines", "the airline {v}",
                       _key("name", ("fmt", "{0} {1}", AIRLINE_WORDS, AIRLINE_SUFFIXES)), (
    _cat("country", COUNTRIES, "based in {v}"),
    _cat("hub", CITIES, "with its hub in {v}", "hub city"),
    _int("founded_year", 1920, 2018, sum_ok=False, desc="founding year"),
    _int("fleet_size", 8, 900),
    _real("on_time_rate", 60, 99, 1, sum_ok=False, desc="on-time rate"),
))
_FLIGHTS = _TableSpec("flights", "flight", "flights", "flight {v}",
                      _key("flight_number", ("code", CARRIER_CODES, 100, 9999)), (
    _cat("origin", CITIES, "departing from {v}"),
    _cat("destination", CITIES, "arriving in {v}"),
    _date("departure_date", 2024, 2025),
    _int("duration_minutes", 45, 900, 5, sum_ok=False, desc="duration in minutes"),
    _real("price", 39, 1500),
    _int("passengers", 40, 420, desc="number of passengers"),
))

_AUTHORS = _TableSpec("authors", "author", "authors", "author {v}", _key("name", _PERSON), (
    _cat("nationality", COUNTRIES, "from {v}", "country of origin"),
    _int("birth_year", 1900, 1998, sum_ok=False),
    _int("awards", 0, 15, desc="number of awards"),
    _int("followers", 100, 900000, 100, desc="number of followers"),
))
_PUBLISHERS = _TableSpec("publishers", "publisher", "publishers", "the publisher {v}",
                         _key("name", ("fmt", "{0} {1}", PUBLISHER_WORDS, PUBLISHER_SUFFIXES)), (
    _cat("city", CITIES, "based in {v}"),
    _int("founded_year", 1850, 2015, sum_ok=False, desc="founding year"),
    _int("employees", 5, 2500, desc="number of employees"),
    _real("annual_revenue_musd", 0.5, 900, desc="annual revenue in million dollars"),
))
_BOOKS = _TableSpec("books", "book", "books", "the book {v}",
                    _key("title", ("fmt", "The {0} {1}", _ADJECTIVES, _NOUNS)), (
    _cat("genre", BOOK_GENRES, "in the genre {v}"),
    _int("published_year", 1950, 2024, sum_ok=False, desc="publication year"),
    _int("pages", 90, 1200),
    _real("price", 5, 60),
    _int("copies_sold", 500, 900000, 100, desc="number of copies sold"),
))

_DEPARTMENTS = _TableSpec("departments", "department", "departments", "the {v} department",
                          _key("name", ("pool", COMPANY_DEPARTMENTS)), (
    _cat("building", OFFICE_BUILDINGS, "located in {v}"),
    _int("floor", 1, 25, sum_ok=False),
    _int("budget", 50000, 5000000, 5000),
    _int("open_positions", 0, 15, desc="number of open positions"),
))
_EMPLOYEES = _TableSpec("employees", "employee", "employees", "employee {v}", _key("name", _PERSON), (
    _cat("job_title", JOB_TITLES, "working as {v}", "job title"),
    _cat("city", CITIES, "living in {v}"),
    _int("salary", 28000, 190000, 500),
    _date("hire_date", 2005, 2024),
    _int("age", 20, 66, sum_ok=False),
    _int("vacation_days", 0, 35, desc="number of vacation days"),
))

_MOVIES = _TableSpec("movies", "movie", "movies", "the movie {v}",
                     _key("title", ("fmt", "{0} {1}", _ADJECTIVES, _NOUNS)), (
    _cat("genre", MOVIE_GENRES, "in the genre {v}"),
    _cat("language", LANGUAGES, "in the language {v}"),
    _int("release_year", 1970, 2024, sum_ok=False),
    _int("runtime_minutes", 75, 195, sum_ok=False, desc="runtime in minutes"),
    _real("budget_musd", 0.5, 250, desc="budget in million dollars"),
    _real("box_office_musd", 0.1, 1500, desc="box office in million dollars"),
))
_USERS = _TableSpec("users", "user", "users", "user {v}", _key("name", _PERSON), (
    _cat("country", COUNTRIES, "from {v}"),
    _cat("plan", PLANS, "on the {v} plan", "subscription plan"),
    _int("age", 16, 80, sum_ok=False),
    _date("joined_date", 2015, 2024),
    _int("watch_hours", 0, 3000),
))
_RATINGS = _TableSpec("ratings", "rating", "ratings", "the rating with id {v}", None, (
    _int("stars", 1, 5, sum_ok=False),
    _date("review_date", 2020, 2024),
    _int("helpful_votes", 0, 500, desc="number of helpful votes"),
    _cat("device", DEVICES, "submitted from {v}"),
))

_TEAMS = _TableSpec("teams", "team", "teams", "the team {v}",
                    _key("name", ("fmt", "{0} {1}", CITIES, TEAM_MASCOTS)), (
    _cat("league", LEAGUES, "in the {v}"),
    _int("founded_year", 1880, 2010, sum_ok=False, desc="founding year"),
    _int("stadium_capacity", 5000, 90000, 500),
    _int("titles", 0, 30, desc="number of titles"),
    _real("budget_musd", 2, 400, desc="budget in million dollars"),
))
_PLAYERS = _TableSpec("players", "player", "players", "player {v}", _key("name", _PERSON), (
    _cat("position", POSITIONS, "playing as {v}"),
    _cat("nationality", COUNTRIES, "from {v}"),
    _int("age", 17, 39, sum_ok=False),
    _int("goals", 0, 40, desc="number of goals"),
    _int("matches_played", 0, 50, desc="number of matches played"),
    _int("salary", 20000, 3000000, 1000),
))

_HOTELS = _TableSpec("hotels", "hotel", "hotels", "the hotel {v}",
                     _key("name", ("fmt", "{0} {1}", HOTEL_WORDS, HOTEL_SUFFIXES)), (
    _cat("city", CITIES, "in {v}"),
    _int("stars", 1, 5, sum_ok=False),
    _int("rooms", 12, 650, desc="number of rooms"),
    _real("nightly_rate", 40, 650),
    _int("opened_year", 1890, 2023, sum_ok=False),
))
_GUESTS = _TableSpec("guests", "guest", "guests", "guest {v}", _key("name", _PERSON), (
    _cat("country", COUNTRIES, "from {v}"),
    _cat("loyalty_tier", LOYALTY_TIERS, "with loyalty tier {v}"),
    _int("age", 18, 90, sum_ok=False),
    _int("total_stays", 1, 80, desc="number of stays"),
))
_BOOKINGS = _TableSpec("bookings", "booking", "bookings", "the booking with id {v}", None, (
    _date("check_in", 2023, 2025, "check-in date"),
    _int("nights", 1, 14, desc="number of nights"),
    _real("total_cost", 60, 5000),
    _cat("status", BOOKING_STATUSES, "with status {v}"),
    _cat("room_type", ROOM_TYPES, "for a {v} room"),
))

_ARTISTS = _TableSpec("artists", "artist", "artists", "the artist {v}",
                      _key("name", ("fmt", "The {0} {1}", _ADJECTIVES, BAND_NOUNS)), (
    _cat("country", COUNTRIES, "from {v}"),
    _cat("genre", MUSIC_GENRES, "playing {v}"),
    _int("debut_year", 1960, 2022, sum_ok=False),
    _int("monthly_listeners", 1000, 90000000, 1000),
))
_LABELS = _TableSpec("record_labels", "record label", "record labels", "the label {v}",
                     _key("name", ("fmt", "{0} {1}", LABEL_WORDS, LABEL_SUFFIXES)), (
    _cat("city", CITIES, "based in {v}"),
    _int("founded_year", 1940, 2020, sum_ok=False, desc="founding year"),
    _int("artists_signed", 3, 300, desc="number of artists signed"),
))
_ALBUMS = _TableSpec("albums", "album", "albums", "the album {v}",
                     _key("title", ("fmt", "{0} {1}", _ADJECTIVES, _NOUNS)), (
    _int("release_year", 1965, 2024, sum_ok=False),
    _int("tracks", 6, 22, desc="number of tracks"),
    _int("duration_minutes", 25, 80, sum_ok=False, desc="duration in minutes"),
    _int("copies_sold", 1000, 5000000, 1000, desc="number of copies sold"),
    _real("price", 7, 35),
    _cat("format", ("Vinyl", "CD", "Digital", "Cassette"), "available on {v}"),
))

_FAMILIES: tuple[_Family, ...] = (
    _Family("retail", _ORDERS, (
        _Link(_CUSTOMERS, "customer_id", "placed by {p}", "the customer who placed {c}"),
        _Link(_PRODUCTS, "product_id", "for {p}", "the product ordered in {c}"))),
    _Family("school", _ENROLLMENTS, (
        _Link(_STUDENTS, "student_id", "of {p}", "the student of {c}"),
        _Link(_COURSES, "course_id", "in {p}", "the course of {c}"))),
    _Family("clinic", _APPOINTMENTS, (
        _Link(_PATIENTS, "patient_id", "for {p}", "the patient of {c}"),
        _Link(_DOCTORS, "doctor_id", "with {p}", "the doctor of {c}"))),
    _Family("airline", _FLIGHTS, (
        _Link(_AIRLINES, "airline_id", "operated by {p}", "the airline that operates {c}"),)),
    _Family("library", _BOOKS, (
        _Link(_AUTHORS, "author_id", "written by {p}", "the author of {c}"),
        _Link(_PUBLISHERS, "publisher_id", "published by {p}", "the publisher of {c}"))),
    _Family("company", _EMPLOYEES, (
        _Link(_DEPARTMENTS, "department_id", "working in {p}", "the department of {c}"),)),
    _Family("movies", _RATINGS, (
        _Link(_MOVIES, "movie_id", "for {p}", "the movie of {c}"),
        _Link(_USERS, "user_id", "given by {p}", "the user who gave {c}"))),
    _Family("sports", _PLAYERS, (
        _Link(_TEAMS, "team_id", "playing for {p}", "the team of {c}"),)),
    _Family("hotel", _BOOKINGS, (
        _Link(_HOTELS, "hotel_id", "at {p}", "the hotel of {c}"),
        _Link(_GUESTS, "guest_id", "made by {p}", "the guest who made {c}"))),
    _Family("music", _ALBUMS, (
        _Link(_ARTISTS, "artist_id", "by {p}", "the artist of {c}"),
        _Link(_LABELS, "label_id", "released on {p}", "the label of {c}"))),
)
SCHEMA_FAMILIES: tuple[str, ...] = tuple(f.name for f in _FAMILIES)


def _key_capacity(gen: tuple[Any, ...]) -> int:
    """How many distinct values a key generator can produce."""
    if gen[0] == "person":
        return len(FIRST_NAMES) * len(LAST_NAMES)
    if gen[0] == "pool":
        return len(gen[1])
    if gen[0] == "fmt":
        return math.prod(len(pool) for pool in gen[2:])
    if gen[0] == "code":
        return len(gen[1]) * (gen[3] - gen[2] + 1)
    raise ValueError(f"Expects a key generator, actual {gen[0]!r}")


# Specs that can stand alone at difficulty 1 / 2: they have a key with room for 3x the rows.
_STANDALONE: dict[tuple[str, int], tuple[_TableSpec, ...]] = {
    (fam.name, d): tuple(s for s in fam.specs
                         if s.key is not None and _key_capacity(s.key.gen) >= 3 * (12 if d == 1 else 30))
    for fam in _FAMILIES for d in (1, 2)
}
