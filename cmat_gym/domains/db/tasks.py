"""Procedural SQL tasks for ``cmat/DB-v0``: AgentBench-style questions over generated databases.

A task is named by ``db/{split}/d{difficulty}/{seed}`` and rebuilt from that name alone: every random
choice comes from :class:`~cmat_gym.core.rng.StableRandom`, so the same name gives the same task on
every machine and Python version (no ``random``, no ``hash()``, no set ordering).

What a task is made of:

* a **schema family** (:data:`SCHEMA_FAMILIES`: a shop, a school, a clinic, ...): one to three tables
  with realistic values (names, cities, ISO dates, prices with two decimals);
* a **question kind** (:data:`QUESTION_KINDS`, AgentBench's ``type``): a SELECT question (counting,
  comparison, ranking, aggregation-SUM/MIN/MAX/AVG, other = lookup) or a change to make (INSERT,
  UPDATE, DELETE);
* a **difficulty**: 1 = one small table (5-12 rows, 3-5 columns), one condition; 2 = one bigger table
  (12-30 rows, 4-7 columns), two conditions or grouping; 3 = two or three tables joined by foreign
  keys, questions that need a JOIN and changes whose WHERE needs a subquery over another table.

Gold answers are never computed by hand: the gold SQL is executed on a fresh
:class:`~cmat_gym.domains.db.backend.SQLiteSandbox`. SELECT kinds store the result values as strings
in ``payload["label"]``; mutations store AgentBench's table hash of the target table after the gold
SQL in ``payload["answer_md5"]``. Questions are built so that the answer is unambiguous: rankings
never tie, comparisons compare different values, lookups match exactly one row, mutations change at
least one row (DELETE: never all rows) and state every value they need.

Train and test are disjoint **by construction**: the split of an instruction is a function of its
text alone, ``test`` iff ``blake2b(instruction) % 5 == 0`` (:func:`instruction_split`).
``generate_task(seed, split, difficulty)`` draws candidate tasks from
``StableRandom("db", split, difficulty, seed, attempt)`` for ``attempt = 0, 1, 2, ...`` and returns the
first candidate whose instruction falls in the requested split (about 1.25 draws for train, 5 for
test). No instruction text can therefore appear in both splits, even across difficulties.
"""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import date
from typing import Any

from cmat_gym.core.rng import StableRandom
from cmat_gym.core.task import SPLITS, Task
from cmat_gym.domains.db.backend import SQLiteSandbox, Table, quote_ident

QUESTION_KINDS: tuple[str, ...] = (
    "counting", "comparison", "ranking", "aggregation-SUM", "aggregation-MIN", "aggregation-MAX",
    "aggregation-AVG", "other", "INSERT", "UPDATE", "DELETE",
)
MUTATION_KINDS: tuple[str, ...] = ("INSERT", "UPDATE", "DELETE")
DIFFICULTIES: tuple[int, ...] = (1, 2, 3)
TEST_BUCKETS = 5  # an instruction is a test instruction iff its fingerprint % TEST_BUCKETS == 0
_MAX_ATTEMPTS = 2000

# ====================================================================== value pools
FIRST_NAMES = (
    "Ann", "Liam", "Olivia", "Noah", "Emma", "Mateo", "Sofia", "Lucas", "Mia", "Ethan", "Chloe", "Arjun",
    "Priya", "Hiroshi", "Yuki", "Omar", "Fatima", "Diego", "Lucia", "Kwame", "Amara", "Ivan", "Elena",
    "Wei", "Mei", "Jonas", "Freya", "Samuel", "Grace", "Tomás", "Ines", "Rahul", "Aisha", "Daniel",
    "Hannah", "Leo", "Nora", "Oscar", "Zara", "Felix", "Maya", "Hugo", "Clara", "Adam", "Lena", "Victor",
    "Julia", "Marcus", "Sara", "Peter", "Helen", "David", "Alice", "George", "Rosa", "Kofi", "Anika",
)
LAST_NAMES = (
    "Lee", "Smith", "Garcia", "Müller", "Rossi", "Nakamura", "Kim", "Patel", "Nguyen", "Silva", "Brown",
    "Johnson", "Martin", "Dubois", "Kowalski", "Novak", "Haddad", "Okafor", "Mensah", "Ivanova", "Chen",
    "Wang", "Singh", "Khan", "Larsen", "Berg", "Costa", "Ferreira", "O'Connor", "Murphy", "Walsh", "Fischer",
    "Schmidt", "Moreau", "Lopez", "Hernandez", "Tanaka", "Sato", "Ali", "Hassan", "Cohen", "Levi", "Jensen",
    "Nielsen", "Popescu", "Horvat", "Andersson", "Virtanen", "Kaplan", "Yilmaz", "Adeyemi", "Mwangi",
)
CITIES = (
    "Paris", "London", "Berlin", "Madrid", "Rome", "Lisbon", "Vienna", "Prague", "Warsaw", "Dublin",
    "Amsterdam", "Oslo", "Stockholm", "Helsinki", "Athens", "Istanbul", "Cairo", "Nairobi", "Lagos",
    "Tokyo", "Seoul", "Mumbai", "Singapore", "Sydney", "Toronto", "Chicago", "Boston", "Denver",
    "Mexico City", "São Paulo", "Buenos Aires", "Lima",
)
COUNTRIES = (
    "France", "Germany", "Spain", "Italy", "Portugal", "Ireland", "Netherlands", "Norway", "Sweden",
    "Finland", "Greece", "Turkey", "Egypt", "Kenya", "Nigeria", "Japan", "South Korea", "India", "Australia",
    "Canada", "United States", "Mexico", "Brazil", "Argentina", "Peru", "Poland",
)
_ADJECTIVES = (
    "Silver", "Golden", "Quiet", "Bright", "Crimson", "Silent", "Hidden", "Wild", "Northern", "Electric",
    "Broken", "Velvet", "Iron", "Blue", "Burning", "Frozen", "Lost", "Secret", "Distant", "Midnight",
)
_NOUNS = (
    "River", "Harbor", "Garden", "Mountain", "Storm", "Forest", "Mirror", "Lantern", "Island", "Bridge",
    "Compass", "Horizon", "Orchard", "Tide", "Crown", "Echo", "Meadow", "Shadow", "Signal", "Voyage",
)
PRODUCT_ADJECTIVES = (
    "Classic", "Compact", "Deluxe", "Eco", "Ultra", "Smart", "Mini", "Pro", "Vintage", "Wireless", "Foldable",
    "Portable", "Premium", "Basic", "Ergonomic", "Travel",
)
PRODUCT_NOUNS = (
    "Desk Lamp", "Kettle", "Backpack", "Headphones", "Blender", "Notebook", "Water Bottle", "Umbrella",
    "Chair", "Keyboard", "Toaster", "Yoga Mat", "Speaker", "Watch", "Camera", "Tent", "Scarf", "Mug",
    "Drill", "Monitor",
)
PRODUCT_CATEGORIES = ("Electronics", "Home", "Kitchen", "Outdoor", "Sports", "Office", "Fashion", "Toys")
BRANDS = ("Acme", "Nordlys", "Zentro", "Bluebird", "Kappa", "Orion", "Helix", "Maple", "Vertex", "Lumo")
MEMBERSHIP_LEVELS = ("Bronze", "Silver", "Gold", "Platinum")
ORDER_STATUSES = ("pending", "shipped", "delivered", "cancelled", "returned")
PAYMENT_METHODS = ("card", "cash", "PayPal", "bank transfer", "gift card")
COURSE_TITLES = (
    "Linear Algebra", "Calculus I", "Calculus II", "Organic Chemistry", "World History", "Microeconomics",
    "Macroeconomics", "Data Structures", "Algorithms", "Operating Systems", "Databases", "Statistics",
    "Genetics", "Cell Biology", "Classical Mechanics", "Quantum Physics", "Modern Poetry", "Creative Writing",
    "Public Speaking", "Art History", "Music Theory", "Ethics", "Logic", "Spanish I", "French I",
    "Japanese I", "Marketing", "Accounting", "Corporate Finance", "Psychology", "Sociology", "Astronomy",
    "Geology", "Ecology", "Machine Learning", "Computer Networks", "Graph Theory", "Number Theory",
    "Film Studies", "Philosophy of Mind",
)
MAJORS = ("Biology", "History", "Mathematics", "Physics", "Economics", "Literature", "Computer Science",
          "Chemistry", "Philosophy", "Music")
ACADEMIC_DEPARTMENTS = ("Science", "Humanities", "Engineering", "Arts", "Business", "Languages")
CAMPUS_BUILDINGS = ("North Hall", "South Hall", "Main Building", "Library Wing", "Science Center", "Annex")
SEMESTERS = ("Fall 2023", "Spring 2024", "Fall 2024", "Spring 2025")
SPECIALTIES = ("Cardiology", "Dermatology", "Neurology", "Pediatrics", "Oncology", "Orthopedics",
               "Radiology", "Psychiatry", "General Practice")
BLOOD_TYPES = ("A+", "A-", "B+", "B-", "O+", "O-", "AB+", "AB-")
INSURERS = ("HealthFirst", "CarePlus", "MediShield", "Unity Health", "BlueCross")
HOSPITAL_WINGS = ("North", "South", "East", "West")
APPOINTMENT_STATUSES = ("scheduled", "completed", "cancelled", "no-show")
AIRLINE_WORDS = (
    "Atlantic", "Pacific", "Nordic", "Alpine", "Coastal", "Sun", "Star", "Eagle", "Falcon", "Horizon",
    "Summit", "Polar", "Crescent", "Aurora", "Meridian", "Zephyr", "Sierra", "Orient", "Island", "Royal",
    "Desert", "Lagoon", "Continental", "Skyline", "Cobalt", "Jade", "Amber", "Emerald", "Harbor", "Union",
)
AIRLINE_SUFFIXES = ("Air", "Airways", "Airlines")
CARRIER_CODES = ("AZ", "BX", "CQ", "DL", "EK", "FR", "GN", "HV", "JL", "KM", "LX", "NW", "QR", "SK", "TP",
                 "UA")
BOOK_GENRES = ("Fantasy", "Mystery", "Romance", "Science Fiction", "History", "Biography", "Poetry",
               "Thriller", "Travel")
PUBLISHER_WORDS = ("Penrose", "Blue Harbor", "Oakleaf", "Granite", "Lighthouse", "Fable", "Northgate",
                   "Redwood", "Quill", "Marlowe", "Sparrow", "Ironbark", "Kestrel", "Willow", "Copper",
                   "Beacon", "Thistle", "Juniper", "Cobble", "Saffron")
PUBLISHER_SUFFIXES = ("Press", "Books", "Publishing")
COMPANY_DEPARTMENTS = ("Sales", "Marketing", "Engineering", "Finance", "Human Resources", "Legal",
                       "Customer Support", "Research", "Operations", "Procurement", "Logistics", "Design",
                       "Quality Assurance", "IT")
OFFICE_BUILDINGS = ("Tower A", "Tower B", "Riverside", "Campus East", "Campus West")
JOB_TITLES = ("Analyst", "Engineer", "Manager", "Assistant", "Consultant", "Designer", "Technician",
              "Specialist", "Accountant", "Coordinator")
MOVIE_GENRES = ("Drama", "Comedy", "Action", "Horror", "Documentary", "Animation", "Thriller", "Romance")
LANGUAGES = ("English", "French", "Spanish", "Japanese", "Korean", "Hindi", "German", "Italian")
PLANS = ("Free", "Basic", "Standard", "Premium")
DEVICES = ("web", "iOS", "Android", "Smart TV")
TEAM_MASCOTS = ("Lions", "Eagles", "Wolves", "Sharks", "Bears", "Falcons", "Tigers", "Rangers", "Pirates",
                "Hawks", "Bulls", "Dragons", "Comets", "Knights", "Foxes", "Owls", "Stallions", "Vikings")
LEAGUES = ("Northern League", "Southern League", "Premier Division", "Coastal Conference")
POSITIONS = ("Goalkeeper", "Defender", "Midfielder", "Forward")
HOTEL_WORDS = ("Grand", "Royal", "Harbor", "Park", "Sunset", "Palace", "Garden", "Riverside", "Alpine",
               "Central", "Seaside", "Majestic", "Meadow", "Lakeview", "Old Town", "Skyline")
HOTEL_SUFFIXES = ("Hotel", "Inn", "Resort", "Suites", "Lodge")
LOYALTY_TIERS = ("Standard", "Silver", "Gold", "Diamond")
BOOKING_STATUSES = ("confirmed", "cancelled", "completed")
ROOM_TYPES = ("Single", "Double", "Twin", "Suite", "Family")
MUSIC_GENRES = ("Rock", "Pop", "Jazz", "Hip Hop", "Electronic", "Folk", "Classical", "Metal", "Reggae")
BAND_NOUNS = ("Wolves", "Echoes", "Rivers", "Lanterns", "Comets", "Tides", "Shadows", "Pilots", "Foxes",
              "Signals", "Giants", "Sparrows", "Ghosts", "Saints", "Engines", "Owls")
LABEL_WORDS = ("Sunset", "Echo", "Iron", "Velvet", "Golden", "Blue Note", "Moonlight", "Atlas", "Neon",
               "Harbor", "Vinyl", "Crown", "Parlor", "Wildfire")
LABEL_SUFFIXES = ("Records", "Music", "Sound")


# ====================================================================== schema specs
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


# ====================================================================== generated tables
@dataclass(eq=False)
class _Column:
    name: str  # as it appears in the database
    sqltype: str
    role: str  # "id", "fk", "key", "cat", "num", "date"
    attr: _Attr | None = None  # None for id / foreign-key columns

    @property
    def words(self) -> str:
        return self.attr.words if self.attr else self.name


@dataclass(eq=False)
class _Gen:
    """A generated table: its columns and rows, plus the spec it came from (for wording)."""

    spec: _TableSpec
    name: str
    columns: list[_Column]
    rows: list[list[Any]]
    foreign_keys: list[tuple[str, str, str]]

    def idx(self, col: _Column) -> int:
        return next(i for i, c in enumerate(self.columns) if c is col)

    def values(self, col: _Column) -> list[Any]:
        i = self.idx(col)
        return [r[i] for r in self.rows]

    def role(self, *roles: str) -> list[_Column]:
        return [c for c in self.columns if c.role in roles]

    @property
    def key(self) -> _Column | None:
        return next((c for c in self.columns if c.role == "key"), None)

    @property
    def id(self) -> _Column | None:
        return next((c for c in self.columns if c.role == "id"), None)

    @property
    def pk(self) -> _Column:
        """The id column (every table of a joined task has one)."""
        col = self.id
        if col is None:
            raise RuntimeError(f"Expects table {self.name!r} to have an id column, actual none")
        return col

    @property
    def kcol(self) -> _Column:
        """The key column (every table a question names rows of has one)."""
        col = self.key
        if col is None:
            raise RuntimeError(f"Expects table {self.name!r} to have a key column, actual none")
        return col

    @property
    def attrs(self) -> list[_Column]:
        return self.role("cat", "num", "date")

    def q(self, col: _Column, qual: bool = False) -> str:
        """The column as SQL: quoted, and prefixed with the table when ``qual``."""
        return f"{quote_ident(self.name)}.{quote_ident(col.name)}" if qual else quote_ident(col.name)

    @property
    def qname(self) -> str:
        return quote_ident(self.name)

    def ref(self, row: Sequence[Any]) -> str:
        """Words naming one row: 'customer "Ann Lee"', or 'order 7' for a table without key."""
        col = self.key or self.id
        assert col is not None
        return self.spec.ref.format(v=_show(col, row[self.idx(col)]))

    def to_table(self) -> Table:
        return Table(self.name, [(c.name, c.sqltype) for c in self.columns], self.rows,
                     self.id.name if self.id else None, self.foreign_keys)

    def to_payload(self) -> dict[str, Any]:
        return {"name": self.name, "columns": [[c.name, c.sqltype] for c in self.columns],
                "rows": [list(r) for r in self.rows], "primary_key": self.id.name if self.id else None,
                "foreign_keys": [list(fk) for fk in self.foreign_keys]}


def _display(name: str, spaced: bool) -> str:
    """snake_case in the database, or 'Title Case With Spaces' (AgentBench has both)."""
    if not spaced:
        return name
    return " ".join("ID" if w == "id" else w.capitalize() for w in name.split("_"))


def _draw(rng: StableRandom, gen: tuple[Any, ...]) -> Any:
    """One value of generator ``gen``, from a single draw of ``rng`` (draws are the cost of a task)."""
    kind = gen[0]
    if kind == "int":
        lo, hi, step = gen[1], gen[2], gen[3]
        return lo + step * rng.randbelow((hi - lo) // step + 1)
    if kind == "real":
        return round(rng.uniform(gen[1], gen[2]), gen[3])
    if kind == "date":
        first, last = date(gen[1], 1, 1).toordinal(), date(gen[2], 12, 31).toordinal()
        return date.fromordinal(first + rng.randbelow(last - first + 1)).isoformat()
    if kind == "pool":
        return rng.choice(gen[1])
    if kind == "person":
        i, j = divmod(rng.randbelow(len(FIRST_NAMES) * len(LAST_NAMES)), len(LAST_NAMES))
        return f"{FIRST_NAMES[i]} {LAST_NAMES[j]}"
    if kind == "fmt":  # one draw over the product of the pools, split into one index per pool
        pools = gen[2:]
        index = rng.randbelow(math.prod(len(pool) for pool in pools))
        picks = []
        for pool in reversed(pools):
            index, i = divmod(index, len(pool))
            picks.append(pool[i])
        return gen[1].format(*reversed(picks))
    if kind == "code":
        i, number = divmod(rng.randbelow(len(gen[1]) * (gen[3] - gen[2] + 1)), gen[3] - gen[2] + 1)
        return f"{gen[1][i]}{gen[2] + number}"
    raise ValueError(f"Expects a known value generator, actual {kind!r}")


def _distinct(rng: StableRandom, gen: tuple[Any, ...], k: int, taken: Sequence[Any] = ()) -> list[Any]:
    """k distinct values of ``gen``, none of them in ``taken`` (order of drawing, not of a set)."""
    seen = set(taken)
    out: list[Any] = []
    for _ in range(100 * (k + 1)):
        if len(out) == k:
            return out
        value = _draw(rng, gen)
        if value not in seen:
            seen.add(value)
            out.append(value)
    raise RuntimeError(f"Could not draw {k} distinct values from {gen[0]!r}")


def _new_value(rng: StableRandom, col: _Column, old: Any) -> Any:
    """A fresh value for ``col`` that differs from ``old``."""
    assert col.attr is not None
    for _ in range(100):
        value = _draw(rng, col.attr.gen)
        if value != old:
            return value
    raise RuntimeError(f"Could not draw a new value for {col.name!r}")


def _column_values(rng: StableRandom, attr: _Attr, n: int) -> list[Any]:
    if attr.kind == "cat":  # a few values per table, so that conditions match several rows
        pool_size = len(attr.gen[1])
        used = _distinct(rng, attr.gen, min(pool_size, rng.randint(2, max(2, min(6, n // 3)))))
        return [rng.choice(used) for _ in range(n)]
    return [_draw(rng, attr.gen) for _ in range(n)]


def _pick_attrs(rng: StableRandom, spec: _TableSpec, n_attrs: int, n_nums: int) -> list[_Attr]:
    """``n_attrs`` attributes of ``spec`` in spec order, with at least one category and ``n_nums`` numbers."""
    cats = [a for a in spec.attrs if a.kind == "cat"]
    nums = [a for a in spec.attrs if a.kind == "num"]
    chosen = ([rng.choice(cats)] if cats else []) + rng.sample(nums, min(n_nums, len(nums)))
    rest = [a for a in spec.attrs if a not in chosen]
    chosen += rng.sample(rest, max(0, min(len(rest), n_attrs - len(chosen))))
    return sorted(chosen, key=spec.attrs.index)


def _build_table(rng: StableRandom, spec: _TableSpec, attrs: list[_Attr], n: int, spaced: bool,
                 has_id: bool, links: Sequence[tuple[_Link, _Gen]] = ()) -> _Gen:
    columns: list[_Column] = []
    data: list[list[Any]] = []
    if has_id:
        columns.append(_Column(_display("id", spaced), "INTEGER", "id"))
        data.append(list(range(1, n + 1)))
    if spec.key is not None:
        columns.append(_Column(_display(spec.key.name, spaced), "TEXT", "key", spec.key))
        data.append(_distinct(rng, spec.key.gen, n))
    foreign_keys = []
    for link, parent in links:
        col = _Column(_display(link.column, spaced), "INTEGER", "fk")
        columns.append(col)
        parent_ids = parent.values(parent.pk)
        data.append([rng.choice(parent_ids) for _ in range(n)])
        foreign_keys.append((col.name, parent.name, parent.pk.name))
    for attr in attrs:
        columns.append(_Column(_display(attr.name, spaced), attr.sqltype, attr.kind, attr))
        data.append(_column_values(rng, attr, n))
    rows = [list(r) for r in zip(*data, strict=True)]
    return _Gen(spec, _display(spec.name, spaced), columns, rows, foreign_keys)


# ====================================================================== wording and SQL helpers
def _show(col: _Column, value: Any) -> str:
    """A value as the instruction states it: text quoted, dates bare, reals with their decimals."""
    if col.role == "date":
        return str(value)
    if isinstance(value, str):
        return f'"{value}"'
    if isinstance(value, float):
        decimals = col.attr.gen[3] if col.attr and col.attr.gen[0] == "real" else 2
        return f"{value:.{decimals}f}"
    return str(value)


def _lit(value: Any) -> str:
    """A value as an SQL literal."""
    if isinstance(value, str):
        return "'" + value.replace("'", "''") + "'"
    return repr(value)


@dataclass(frozen=True)
class _Cond:
    """A condition on one table's rows: as words, as SQL, and as a Python test of a row."""

    text: str
    sql: str
    test: Callable[[Sequence[Any]], bool]
    col: _Column


def _eq(t: _Gen, col: _Column, value: Any, qual: bool = False) -> _Cond:
    i = t.idx(col)
    if col.attr is not None and col.attr.eq:
        text = col.attr.eq.format(v=_show(col, value))
    elif col.role == "num":
        text = f"with {col.words} {_show(col, value)}"
    else:
        text = f"whose {col.words} is {_show(col, value)}"
    return _Cond(text, f"{t.q(col, qual)} = {_lit(value)}", lambda r: r[i] == value, col)


def _cmp(t: _Gen, col: _Column, op: str, value: Any, qual: bool = False) -> _Cond:
    i = t.idx(col)
    if col.role == "date":
        word = "after" if op == ">" else "before"
    else:
        word = "greater than" if op == ">" else "less than"
    test = (lambda r: r[i] > value) if op == ">" else (lambda r: r[i] < value)
    text = f"with {col.words} {word} {_show(col, value)}"
    return _Cond(text, f"{t.q(col, qual)} {op} {_lit(value)}", test, col)


def _where(conds: Sequence[_Cond]) -> str:
    return " WHERE " + " AND ".join(c.sql for c in conds) if conds else ""


def _words(conds: Sequence[_Cond]) -> str:
    return " and ".join(c.text for c in conds)


def _matching(rows: Sequence[Sequence[Any]], conds: Sequence[_Cond]) -> list[Sequence[Any]]:
    return [r for r in rows if all(c.test(r) for c in conds)]


def _threshold(rng: StableRandom, t: _Gen, col: _Column, op: str, must: Any = None,
               rows: Sequence[Sequence[Any]] | None = None) -> Any:
    """A threshold for ``col op threshold`` that some but not all ``rows`` pass (and ``must`` passes).

    Real thresholds are rounded to a whole number when that keeps both properties.
    """
    rows = t.rows if rows is None else rows
    i = t.idx(col)
    values = [r[i] for r in rows]
    distinct = sorted(set(values))
    candidates = distinct[:-1] if op == ">" else distinct[1:]
    if must is not None:
        candidates = [v for v in candidates if (must > v if op == ">" else must < v)]
    if not candidates:
        return None
    value = rng.choice(candidates)

    def ok(x: Any) -> bool:
        hits = sum(1 for v in values if (v > x if op == ">" else v < x))
        return 0 < hits < len(values) and (must is None or (must > x if op == ">" else must < x))

    if isinstance(value, float):
        nicer = float(math.floor(value) if op == ">" else math.ceil(value))
        if ok(nicer):
            return nicer
    return value


_EXTREME = {("num", True): "highest", ("num", False): "lowest", ("date", True): "latest",
            ("date", False): "earliest"}


def _ordinal(rng: StableRandom, k: int) -> str:
    return "" if k == 1 else rng.choice({2: ("2nd", "second"), 3: ("3rd", "third")}[k]) + " "


def _rank_ok(values: Sequence[Any], k: int, descending: bool) -> bool:
    """The k-th value is unambiguous: the first k+1 sorted values are pairwise different."""
    head = sorted(values, reverse=descending)[: k + 1]
    return len(head) >= k and len(set(head)) == len(head)


def _order(col_sql: str, descending: bool, k: int = 1) -> str:
    offset = f" OFFSET {k - 1}" if k > 1 else ""
    return f" ORDER BY {col_sql} {'DESC' if descending else 'ASC'} LIMIT 1{offset}"


def _agg_expr(fn: str, col_sql: str, col: _Column) -> str:
    expr = f"{fn}({col_sql})"
    return f"ROUND({expr}, 2)" if fn == "AVG" or (fn == "SUM" and col.sqltype == "REAL") else expr


def _agg_word(rng: StableRandom, fn: str, col: _Column) -> str:
    if fn == "SUM":
        return "total"
    if fn == "AVG":
        return "average"
    if col.role == "date":
        return "earliest" if fn == "MIN" else "latest"
    return rng.choice(("lowest", "minimum") if fn == "MIN" else ("highest", "maximum"))


def _agg_cols(t: _Gen, fn: str) -> list[_Column]:
    nums = t.role("num")
    if fn == "SUM":
        return [c for c in nums if c.attr and c.attr.sum_ok]
    if fn == "AVG":
        return nums
    return nums + t.role("date")


def _group_top(groups: dict[Any, list[float]], fn: str, descending: bool) -> bool:
    """Whether one group clearly wins (no tie at the top) under COUNT / SUM / AVG."""
    if len(groups) < 2:
        return False
    scores = sorted((_aggregate(fn, vals) for vals in groups.values()), reverse=descending)
    return abs(scores[0] - scores[1]) > 1e-6


def _aggregate(fn: str, values: Sequence[float]) -> float:
    if fn == "COUNT":
        return float(len(values))
    if fn == "SUM":
        return float(sum(values))
    return float(sum(values)) / len(values)


def _pairs(t: _Gen, row: Sequence[Any], skip: Sequence[_Column] = ()) -> str:
    return ", ".join(f"{c.name} = {_show(c, v)}" for c, v in zip(t.columns, row, strict=True)
                     if not any(c is s for s in skip))


@dataclass
class _Question:
    instruction: str
    gold_sql: list[str]


# ====================================================================== one-table questions (d1, d2)
def _second_cond(rng: StableRandom, t: _Gen, row: Sequence[Any], used: Sequence[_Column]) -> _Cond | None:
    """A second condition that ``row`` satisfies, on a column not in ``used``."""
    options: list[_Cond] = []
    for col in t.role("cat"):
        if not any(col is u for u in used):
            options.append(_eq(t, col, row[t.idx(col)]))
    for col in t.role("num", "date"):
        if any(col is u for u in used):
            continue
        op = rng.choice((">", "<"))
        value = _threshold(rng, t, col, op, must=row[t.idx(col)])
        if value is not None:
            options.append(_cmp(t, col, op, value))
    return rng.choice(options) if options else None


def _conditions(rng: StableRandom, t: _Gen, d: int, avoid: Sequence[_Column] = ()) -> list[_Cond] | None:
    """One equality condition (d1) or two conditions (d2) that at least one row satisfies."""
    row = rng.choice(t.rows)
    cat = rng.choice(t.role("cat"))
    conds = [_eq(t, cat, row[t.idx(cat)])]
    if d == 2:
        second = _second_cond(rng, t, row, [cat, *avoid])
        if second is None:
            return None
        conds.append(second)
    return conds


def _single_counting(rng: StableRandom, t: _Gen, d: int) -> _Question | None:
    conds = _conditions(rng, t, d)
    if conds is None:
        return None
    template = rng.choice(("How many {p} {c} are there?", "Count the {p} {c}.",
                           "What is the number of {p} {c}?"))
    return _Question(template.format(p=t.spec.plural, c=_words(conds)),
                     [f"SELECT COUNT(*) FROM {t.qname}{_where(conds)}"])


def _single_comparison(rng: StableRandom, t: _Gen, d: int) -> _Question | None:
    if rng.random() < 0.5:  # count the rows beyond a threshold
        col = rng.choice(t.role("num", "date"))
        op = rng.choice((">", "<"))
        conds: list[_Cond] = []
        rows = t.rows
        if d == 2:
            cat = rng.choice(t.role("cat"))
            conds = [_eq(t, cat, rng.choice(t.rows)[t.idx(cat)])]
            rows = _matching(t.rows, conds)
        value = _threshold(rng, t, col, op, must=rng.choice(rows)[t.idx(col)] if d == 2 else None, rows=rows)
        if value is None:
            return None
        conds.append(_cmp(t, col, op, value))
        return _Question(f"How many {t.spec.plural} {_words(conds)} are there?",
                         [f"SELECT COUNT(*) FROM {t.qname}{_where(conds)}"])
    higher = rng.random() < 0.5
    if d == 1 or len(t.rows) < 4:  # which of two rows has the higher value
        col = rng.choice(t.role("num"))
        key = t.kcol
        a, b = rng.sample(t.rows, 2)
        if a[t.idx(col)] == b[t.idx(col)]:
            return None
        text = (f"Which {t.spec.noun} has a {'higher' if higher else 'lower'} {col.words}, "
                f"{_show(key, a[t.idx(key)])} or {_show(key, b[t.idx(key)])}?")
        sql = (f"SELECT {t.q(key)} FROM {t.qname} WHERE {t.q(key)} IN ({_lit(a[t.idx(key)])}, "
               f"{_lit(b[t.idx(key)])})" + _order(t.q(col), higher))
        return _Question(text, [sql])
    # d2: which of two groups has the higher total / average
    cat = rng.choice(t.role("cat"))
    groups_present = sorted(set(t.values(cat)))
    if len(groups_present) < 2:
        return None
    x, y = rng.sample(groups_present, 2)
    fn = rng.choice(("AVG", "SUM"))
    cols = _agg_cols(t, fn)
    if not cols:
        return None
    col = rng.choice(cols)
    ci, vi = t.idx(cat), t.idx(col)
    groups = {g: [r[vi] for r in t.rows if r[ci] == g] for g in (x, y)}
    if not _group_top(groups, fn, True):
        return None
    text = (f"Which {cat.words} has the {'higher' if higher else 'lower'} {_agg_word(rng, fn, col)} "
            f"{col.words} of {t.spec.plural}, {_show(cat, x)} or {_show(cat, y)}?")
    sql = (f"SELECT {t.q(cat)} FROM {t.qname} WHERE {t.q(cat)} IN ({_lit(x)}, {_lit(y)}) GROUP BY {t.q(cat)}"
           + _order(f"{fn}({t.q(col)})", higher))
    return _Question(text, [sql])


def _single_ranking(rng: StableRandom, t: _Gen, d: int) -> _Question | None:
    key = t.kcol
    if d == 2 and rng.random() < 0.5:  # which group has the most / highest total / average
        cat = rng.choice(t.role("cat"))
        fn = rng.choice(("COUNT", "SUM", "AVG"))
        cols = _agg_cols(t, fn) if fn != "COUNT" else [cat]
        if not cols:
            return None
        col = rng.choice(cols)
        descending = rng.random() < 0.6
        ci, vi = t.idx(cat), t.idx(col)
        groups: dict[Any, list[Any]] = {}
        for r in t.rows:
            groups.setdefault(r[ci], []).append(r[vi])
        if not _group_top(groups, fn, descending):
            return None
        if fn == "COUNT":
            text = f"Which {cat.words} has the {'most' if descending else 'fewest'} {t.spec.plural}?"
            expr = "COUNT(*)"
        else:
            word = "average" if fn == "AVG" else "total"
            text = (f"Which {cat.words} has the {'highest' if descending else 'lowest'} {word} {col.words} "
                    f"of {t.spec.plural}?")
            expr = f"{fn}({t.q(col)})"
        sql = f"SELECT {t.q(cat)} FROM {t.qname} GROUP BY {t.q(cat)}" + _order(expr, descending)
        return _Question(text, [sql])
    conds: list[_Cond] = []
    rows = t.rows
    if d == 2:
        cat = rng.choice(t.role("cat"))
        conds = [_eq(t, cat, rng.choice(t.rows)[t.idx(cat)])]
        rows = _matching(t.rows, conds)
    options = [(col, desc, k) for col in t.role("num", "date") for desc in (True, False) for k in (1, 2, 3)
               if _rank_ok([r[t.idx(col)] for r in rows], k, desc)]
    if not options:
        return None
    col, descending, k = rng.choice(options)
    what = f"the {_ordinal(rng, k)}{_EXTREME[(col.role, descending)]} {col.words}"
    if conds:
        text = f"Among the {t.spec.plural} {_words(conds)}, which one has {what}?"
    else:
        text = rng.choice(("Which {n} has {w}?", "Name the {n} with {w}.")).format(n=t.spec.noun, w=what)
    sql = f"SELECT {t.q(key)} FROM {t.qname}{_where(conds)}" + _order(t.q(col), descending, k)
    return _Question(text, [sql])


def _single_aggregation(rng: StableRandom, t: _Gen, d: int, fn: str) -> _Question | None:
    cols = _agg_cols(t, fn)
    if not cols:
        return None
    col = rng.choice(cols)
    if d == 1 and rng.random() < 0.3:
        conds: list[_Cond] | None = []
        scope = f"all {t.spec.plural}"
    else:
        conds = _conditions(rng, t, d, avoid=[col])
        if conds is None:
            return None
        scope = f"{t.spec.plural} {_words(conds)}"
    text = f"What is the {_agg_word(rng, fn, col)} {col.words} of {scope}?"
    if fn == "AVG":
        text += " Round the answer to 2 decimal places."
    return _Question(text, [f"SELECT {_agg_expr(fn, t.q(col), col)} FROM {t.qname}{_where(conds)}"])


def _single_other(rng: StableRandom, t: _Gen, d: int) -> _Question | None:
    key = t.kcol
    row = rng.choice(t.rows)
    if d == 1:
        col = rng.choice(t.attrs)
        return _Question(f"What is the {col.words} of {t.ref(row)}?",
                         [f"SELECT {t.q(col)} FROM {t.qname} WHERE {t.q(key)} = {_lit(row[t.idx(key)])}"])
    # d2: the row that two conditions single out
    cat = rng.choice(t.role("cat"))
    first = _eq(t, cat, row[t.idx(cat)])
    for col in rng.sample(t.attrs, len(t.attrs)):
        if col is cat:
            continue
        conds = [first, _eq(t, col, row[t.idx(col)])]
        if len(_matching(t.rows, conds)) == 1:
            text = f"What is the {key.words} of the {t.spec.noun} {_words(conds)}?"
            return _Question(text, [f"SELECT {t.q(key)} FROM {t.qname}{_where(conds)}"])
    return None


def _single_insert(rng: StableRandom, t: _Gen, d: int) -> _Question | None:
    row: list[Any] = []
    for col in t.columns:
        if col.role == "id":
            row.append(max(t.values(col)) + 1)
        elif col.role == "key":
            assert col.attr is not None
            row.append(_distinct(rng, col.attr.gen, 1, taken=t.values(col))[0])
        else:
            assert col.attr is not None
            row.append(_draw(rng, col.attr.gen))
    template = rng.choice((
        "Insert a new {n} into the table {t} with the following values: {v}.",
        "Add a new {n} to the {t} table: {v}.",
        "Record a new {n} in the table {t} with {v}.",
    ))
    text = template.format(n=t.spec.noun, t=t.name, v=_pairs(t, row))
    cols = ", ".join(t.q(c) for c in t.columns)
    return _Question(text, [f"INSERT INTO {t.qname} ({cols}) VALUES ({', '.join(_lit(v) for v in row)})"])


def _countable(col: _Column) -> bool:
    """An INTEGER column that can be increased (a stock, a number of votes; not an age or a year)."""
    return col.role == "num" and col.sqltype == "INTEGER" and col.attr is not None and col.attr.sum_ok


def _group_update_cols(t: _Gen) -> list[_Column]:
    """Columns that may sensibly change for many rows at once: categories, dates, countable numbers."""
    return [c for c in t.attrs if c.role in ("cat", "date") or _countable(c)]


def _set_clause(rng: StableRandom, t: _Gen, col: _Column, rows: Sequence[Sequence[Any]], target: str,
                many: bool = False) -> tuple[str, str]:
    """(instruction, SET clause) for a change of ``col`` in ``target`` that changes at least one of ``rows``.

    Countable columns are increased (always when ``many`` rows change), other columns set to a new value.
    """
    if _countable(col) and (many or rng.random() < 0.4):
        delta = col.attr.gen[3] * rng.randint(1, 10)
        return f"Increase the {col.words} of {target} by {delta}.", f"{t.q(col)} = {t.q(col)} + {delta}"
    new = _new_value(rng, col, rows[0][t.idx(col)])
    verb = rng.choice(("Set", "Change", "Update"))
    return f"{verb} the {col.words} of {target} to {_show(col, new)}.", f"{t.q(col)} = {_lit(new)}"


def _single_update(rng: StableRandom, t: _Gen, d: int) -> _Question | None:
    key = t.kcol
    if d == 1 and rng.random() < 0.6:  # one row, named by its key
        row = rng.choice(t.rows)
        col = rng.choice(t.attrs)
        text, change = _set_clause(rng, t, col, [row], t.ref(row))
        return _Question(text, [f"UPDATE {t.qname} SET {change} WHERE {t.q(key)} = {_lit(row[t.idx(key)])}"])
    conds = _conditions(rng, t, d)
    if conds is None:
        return None
    cols = [c for c in _group_update_cols(t) if not any(c is cond.col for cond in conds)]
    if not cols:
        return None
    col = rng.choice(cols)
    target = f"all {t.spec.plural} {_words(conds)}"
    text, change = _set_clause(rng, t, col, _matching(t.rows, conds), target, many=True)
    return _Question(text, [f"UPDATE {t.qname} SET {change}{_where(conds)}"])


def _single_delete(rng: StableRandom, t: _Gen, d: int) -> _Question | None:
    if d == 1 and rng.random() < 0.3:
        key = t.kcol
        row = rng.choice(t.rows)
        return _Question(f"Delete {t.ref(row)} from the table {t.name}.",
                         [f"DELETE FROM {t.qname} WHERE {t.q(key)} = {_lit(row[t.idx(key)])}"])
    if d == 1 and rng.random() < 0.5:
        col = rng.choice(t.role("num", "date"))
        op = rng.choice((">", "<"))
        value = _threshold(rng, t, col, op)
        if value is None:
            return None
        conds = [_cmp(t, col, op, value)]
    else:
        conds = _conditions(rng, t, d)
        if conds is None:
            return None
    if len(_matching(t.rows, conds)) == len(t.rows):
        return None
    template = rng.choice(("Delete all {p} {c}.", "Remove every {n} {c} from the table {t}."))
    return _Question(template.format(p=t.spec.plural, n=t.spec.noun, c=_words(conds), t=t.name),
                     [f"DELETE FROM {t.qname}{_where(conds)}"])


# ====================================================================== joined questions (d3)
@dataclass
class _Join:
    """The child table, the parent it is asked about, and the foreign key between them."""

    child: _Gen
    parent: _Gen
    link: _Link
    fk: _Column

    @property
    def sql(self) -> str:
        c, p = self.child, self.parent
        return f"{c.qname} JOIN {p.qname} ON {c.q(self.fk, True)} = {p.q(p.pk, True)}"

    def parent_row(self, child_row: Sequence[Any]) -> Sequence[Any]:
        pid = child_row[self.child.idx(self.fk)]
        id_i = self.parent.idx(self.parent.pk)
        return next(r for r in self.parent.rows if r[id_i] == pid)

    def selector(self, rng: StableRandom, parent_row: Sequence[Any]) -> tuple[str, _Cond]:
        """Words and a (qualified) condition picking ``parent_row`` or its group of parents."""
        p = self.parent
        cats = p.role("cat")
        if cats and rng.random() < 0.5:
            cat = rng.choice(cats)
            cond = _eq(p, cat, parent_row[p.idx(cat)], qual=True)
            return f"{p.spec.plural} {cond.text}", cond
        return p.ref(parent_row), _eq(p, p.kcol, parent_row[p.idx(p.kcol)], qual=True)

    def children_of(self, cond: _Cond) -> list[Sequence[Any]]:
        id_i = self.parent.idx(self.parent.pk)
        ids = {r[id_i] for r in self.parent.rows if cond.test(r)}
        fk_i = self.child.idx(self.fk)
        return [r for r in self.child.rows if r[fk_i] in ids]

    def subquery(self, cond: _Cond) -> str:
        p = self.parent
        return f"{self.child.q(self.fk)} IN (SELECT {p.q(p.pk, True)} FROM {p.qname} WHERE {cond.sql})"


def _joined_counting(rng: StableRandom, j: _Join) -> _Question | None:
    words, cond = j.selector(rng, j.parent_row(rng.choice(j.child.rows)))
    rel = j.link.rel.format(p=words)
    template = rng.choice(("How many {c} {r} are there?", "Count the {c} {r}."))
    return _Question(template.format(c=j.child.spec.plural, r=rel),
                     [f"SELECT COUNT(*) FROM {j.sql} WHERE {cond.sql}"])


def _joined_comparison(rng: StableRandom, j: _Join) -> _Question | None:
    c, p = j.child, j.parent
    if rng.random() < 0.5:
        row = rng.choice(c.rows)
        words, cond = j.selector(rng, j.parent_row(row))
        col = rng.choice(c.role("num", "date"))
        op = rng.choice((">", "<"))
        value = _threshold(rng, c, col, op, must=row[c.idx(col)], rows=j.children_of(cond))
        if value is None:
            return None
        cmp = _cmp(c, col, op, value, qual=True)
        return _Question(f"How many {c.spec.plural} {j.link.rel.format(p=words)} {cmp.text} are there?",
                         [f"SELECT COUNT(*) FROM {j.sql} WHERE {cond.sql} AND {cmp.sql}"])
    key, pid = p.kcol, p.pk
    a, b = rng.sample(p.rows, 2)
    counts = [len(j.children_of(_eq(p, key, r[p.idx(key)]))) for r in (a, b)]
    if counts[0] == counts[1]:
        return None
    more = rng.random() < 0.6
    text = (f"Which {p.spec.noun} has {'more' if more else 'fewer'} {c.spec.plural}, "
            f"{_show(key, a[p.idx(key)])} or {_show(key, b[p.idx(key)])}?")
    sql = (f"SELECT {p.q(key, True)} FROM {p.qname} LEFT JOIN {c.qname}"
           f" ON {c.q(j.fk, True)} = {p.q(pid, True)}"
           f" WHERE {p.q(key, True)} IN ({_lit(a[p.idx(key)])}, {_lit(b[p.idx(key)])})"
           f" GROUP BY {p.q(pid, True)}" + _order(f"COUNT({c.q(c.pk, True)})", more))
    return _Question(text, [sql])


def _joined_ranking(rng: StableRandom, j: _Join) -> _Question | None:
    c, p = j.child, j.parent
    key, pid = p.kcol, p.pk
    if rng.random() < 0.5:  # the parent with the most children / highest total
        fn = rng.choice(("COUNT", "SUM"))
        cols = _agg_cols(c, "SUM") if fn == "SUM" else []
        if fn == "SUM" and not cols:
            fn = "COUNT"
        col = rng.choice(cols) if fn == "SUM" else None
        fk_i = c.idx(j.fk)
        groups: dict[Any, list[Any]] = {}
        for r in c.rows:
            groups.setdefault(r[fk_i], []).append(r[c.idx(col)] if col else 1)
        if not _group_top(groups, fn, True):
            return None
        if col is None:
            text, expr = f"Which {p.spec.noun} has the most {c.spec.plural}?", "COUNT(*)"
        else:
            text = f"Which {p.spec.noun} has the highest total {col.words} of {c.spec.plural}?"
            expr = f"SUM({c.q(col, True)})"
        return _Question(text, [f"SELECT {p.q(key, True)} FROM {j.sql} GROUP BY {p.q(pid, True)}"
                                + _order(expr, True)])
    options = [(col, desc, k) for col in c.role("num", "date") for desc in (True, False) for k in (1, 2, 3)
               if _rank_ok(c.values(col), k, desc)]
    if not options:
        return None
    col, descending, k = rng.choice(options)
    extreme = _EXTREME[(col.role, descending)]
    child_words = f"the {c.spec.noun} with the {_ordinal(rng, k)}{extreme} {col.words}"
    text = f"Give the {key.words} of {j.link.inv.format(c=child_words)}."
    return _Question(text, [f"SELECT {p.q(key, True)} FROM {j.sql}" + _order(c.q(col, True), descending, k)])


def _joined_aggregation(rng: StableRandom, j: _Join, fn: str) -> _Question | None:
    c = j.child
    cols = _agg_cols(c, fn)
    if not cols:
        return None
    col = rng.choice(cols)
    words, cond = j.selector(rng, j.parent_row(rng.choice(c.rows)))
    rel = j.link.rel.format(p=words)
    text = f"What is the {_agg_word(rng, fn, col)} {col.words} of {c.spec.plural} {rel}?"
    if fn == "AVG":
        text += " Round the answer to 2 decimal places."
    return _Question(text, [f"SELECT {_agg_expr(fn, c.q(col, True), col)} FROM {j.sql} WHERE {cond.sql}"])


def _joined_other(rng: StableRandom, j: _Join) -> _Question | None:
    c, p = j.child, j.parent
    row = rng.choice(c.rows)
    col = rng.choice([p.key, *p.attrs])
    assert col is not None
    named = c.key or c.id
    assert named is not None
    text = f"What is the {col.words} of {j.link.inv.format(c=c.ref(row))}?"
    return _Question(text, [f"SELECT {p.q(col, True)} FROM {j.sql} WHERE {c.q(named, True)} = "
                            f"{_lit(row[c.idx(named)])}"])


def _joined_insert(rng: StableRandom, joins: Sequence[_Join]) -> _Question | None:
    c = joins[0].child
    row: list[Any] = []
    values_sql: list[str] = []
    rels: list[str] = []
    for col in c.columns:
        if col.role == "id":
            row.append(max(c.values(col)) + 1)
        elif col.role == "key":
            assert col.attr is not None
            row.append(_distinct(rng, col.attr.gen, 1, taken=c.values(col))[0])
        elif col.role == "fk":
            j = next(j for j in joins if j.fk is col)
            p = j.parent
            parent_row = rng.choice(p.rows)
            rels.append(j.link.rel.format(p=p.ref(parent_row)))
            row.append(None)
            values_sql.append(f"(SELECT {p.q(p.pk)} FROM {p.qname} WHERE {p.q(p.kcol)} = "
                              f"{_lit(parent_row[p.idx(p.kcol)])})")
            continue
        else:
            assert col.attr is not None
            row.append(_draw(rng, col.attr.gen))
        values_sql.append(_lit(row[-1]))
    text = (f"Add a new {c.spec.noun} {' and '.join(rels)} to the table {c.name}, with the following values: "
            f"{_pairs(c, row, skip=c.role('fk'))}.")
    cols = ", ".join(c.q(col) for col in c.columns)
    return _Question(text, [f"INSERT INTO {c.qname} ({cols}) VALUES ({', '.join(values_sql)})"])


def _joined_update(rng: StableRandom, j: _Join) -> _Question | None:
    c = j.child
    words, cond = j.selector(rng, j.parent_row(rng.choice(c.rows)))
    col = rng.choice(_group_update_cols(c))
    target = f"all {c.spec.plural} {j.link.rel.format(p=words)}"
    text, change = _set_clause(rng, c, col, j.children_of(cond), target, many=True)
    return _Question(text, [f"UPDATE {c.qname} SET {change} WHERE {j.subquery(cond)}"])


def _joined_delete(rng: StableRandom, j: _Join) -> _Question | None:
    c = j.child
    words, cond = j.selector(rng, j.parent_row(rng.choice(c.rows)))
    if len(j.children_of(cond)) == len(c.rows):
        return None
    template = rng.choice(("Delete all {c} {r}.", "Remove every {n} {r} from the table {t}."))
    text = template.format(c=c.spec.plural, n=c.spec.noun, r=j.link.rel.format(p=words), t=c.name)
    return _Question(text, [f"DELETE FROM {c.qname} WHERE {j.subquery(cond)}"])


# ====================================================================== candidates
@dataclass
class _Candidate:
    family: str
    kind: str
    tables: list[_Gen]
    target: _Gen
    question: _Question


def _single_tables(rng: StableRandom, family: _Family, d: int) -> list[_Gen]:
    spec = rng.choice(_STANDALONE[(family.name, d)])
    spaced = rng.random() < 0.25
    has_id = rng.random() < (0.4 if d == 1 else 0.5)
    if d == 1:
        n, attrs = rng.randint(5, 12), _pick_attrs(rng, spec, rng.randint(2, 4 - has_id), 1)
    else:
        n_attrs = rng.randint(3, min(len(spec.attrs), 6 - has_id))
        n, attrs = rng.randint(12, 30), _pick_attrs(rng, spec, n_attrs, 2)
    return [_build_table(rng, spec, attrs, n, spaced, has_id)]


def _joined_tables(rng: StableRandom, family: _Family) -> tuple[list[_Gen], list[_Join]]:
    spaced = rng.random() < 0.25
    links = list(family.links)
    if len(links) > 1 and rng.random() < 0.4:
        links = [rng.choice(links)]
    parents = [_build_table(rng, link.parent, _pick_attrs(rng, link.parent, rng.randint(2, 3), 1),
                            rng.randint(5, 10), spaced, True) for link in links]
    child_spec = family.child
    attrs = _pick_attrs(rng, child_spec, rng.randint(3, len(child_spec.attrs)), 1)
    child = _build_table(rng, child_spec, attrs, rng.randint(12, 25), spaced, True,
                         list(zip(links, parents, strict=True)))
    fks = child.role("fk")
    joins = [_Join(child, p, link, fk) for link, p, fk in zip(links, parents, fks, strict=True)]
    return [*parents, child], joins


def _candidate(rng: StableRandom, d: int) -> _Candidate | None:
    """One task draft (no SQL run yet), or None when the drawn question would be ambiguous."""
    kind = rng.choice(QUESTION_KINDS)
    family = rng.choice(_FAMILIES)
    fn = kind.split("-")[1] if kind.startswith("aggregation") else ""
    question: _Question | None
    if d in (1, 2):
        tables = _single_tables(rng, family, d)
        t = target = tables[0]
        if fn:
            question = _single_aggregation(rng, t, d, fn)
        else:
            builder = {"counting": _single_counting, "comparison": _single_comparison,
                       "ranking": _single_ranking, "other": _single_other, "INSERT": _single_insert,
                       "UPDATE": _single_update, "DELETE": _single_delete}[kind]
            question = builder(rng, t, d)
    else:
        tables, joins = _joined_tables(rng, family)
        target = joins[0].child
        j = rng.choice(joins)
        if fn:
            question = _joined_aggregation(rng, j, fn)
        elif kind == "INSERT":
            question = _joined_insert(rng, joins)
        else:
            builder3 = {"counting": _joined_counting, "comparison": _joined_comparison,
                        "ranking": _joined_ranking, "other": _joined_other, "UPDATE": _joined_update,
                        "DELETE": _joined_delete}[kind]
            question = builder3(rng, j)
    return None if question is None else _Candidate(family.name, kind, tables, target, question)


def _context(tables: Sequence[_Gen]) -> str:
    """What the agent may see: each table's name, columns and types, and foreign keys (no rows)."""
    lines = [f"The database has {len(tables)} tables." if len(tables) > 1 else "The database has one table."]
    for t in tables:
        cols = ", ".join(f"{quote_ident(c.name)} {c.sqltype}" + (" PRIMARY KEY" if c.role == "id" else "")
                         for c in t.columns)
        lines.append(f"Table {quote_ident(t.name)} ({cols}).")
        for col, ref_table, ref_col in t.foreign_keys:
            lines.append(f"Foreign key: {quote_ident(t.name)}.{quote_ident(col)} references "
                         f"{quote_ident(ref_table)}.{quote_ident(ref_col)}.")
        lines.append(f"The name of this table is {t.name}, and the headers of this table are "
                     f"{','.join(c.name for c in t.columns)}.")
    return "\n".join(lines)


def _label_value(value: Any) -> str:
    return str(round(value, 2)) if isinstance(value, float) else str(value)


def _solve(cand: _Candidate) -> tuple[list[str], str | None]:
    """Run the gold SQL on a fresh sandbox: (label, answer_md5)."""
    sandbox = SQLiteSandbox()
    try:
        sandbox.load([t.to_table() for t in cand.tables])
        # Graded like AgentBench: the fingerprint of every table of the task, not just the target.
        names = [t.name for t in cand.tables]
        before = sandbox.tables_hash(names)
        result = None
        for sql in cand.question.gold_sql:
            result = sandbox.execute(sql)
            if result.error:
                raise RuntimeError(f"Gold SQL failed ({result.error}): {sql}")
        assert result is not None
        if cand.kind in MUTATION_KINDS:
            after = sandbox.tables_hash(names)
            if after == before:
                raise RuntimeError(f"Gold SQL changed nothing: {cand.question.gold_sql}")
            return [], after
        label = [_label_value(v) for row in result.rows for v in row]
        if not label or any(v is None for row in result.rows for v in row):
            raise RuntimeError(f"Gold SQL gave no answer: {cand.question.gold_sql}")
        return label, None
    finally:
        sandbox.close()


# ====================================================================== public API
def instruction_split(instruction: str) -> str:
    """The split an instruction text belongs to: ``"test"`` iff blake2b(text) % 5 == 0, else ``"train"``."""
    digest = hashlib.blake2b(instruction.encode("utf-8"), digest_size=8).digest()
    return "test" if int.from_bytes(digest, "little") % TEST_BUCKETS == 0 else "train"


def make_task_id(seed: int, split: str, difficulty: int) -> str:
    """The id of a procedural task: ``db/{split}/d{difficulty}/{seed}``."""
    return f"db/{split}/d{difficulty}/{seed}"


def generate_task(seed: int, split: str, difficulty: int) -> Task:
    """The procedural DB task named by ``(seed, split, difficulty)``; the same on every machine.

    Args:
        seed: any integer >= 0.
        split: ``"train"`` or ``"test"``; the two never share an instruction (see the module docstring).
        difficulty: 1 (one small table), 2 (one bigger table, two conditions / grouping) or
            3 (two or three tables joined by foreign keys).
    """
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"Expects seed to be an int >= 0, actual {seed!r}")
    if split not in SPLITS:
        raise ValueError(f"Expects split in {SPLITS}, actual {split!r}")
    if isinstance(difficulty, bool) or difficulty not in DIFFICULTIES:
        raise ValueError(f"Expects difficulty in {DIFFICULTIES}, actual {difficulty!r}")
    for attempt in range(_MAX_ATTEMPTS):
        cand = _candidate(StableRandom("db", split, difficulty, seed, attempt), difficulty)
        if cand is None or instruction_split(cand.question.instruction) != split:
            continue
        label, answer_md5 = _solve(cand)
        payload = {
            "source": "procedural",
            "family": cand.family,
            "kind": cand.kind,
            "tables": [t.to_payload() for t in cand.tables],
            "gold_sql": list(cand.question.gold_sql),
            "label": label,
            "answer_md5": answer_md5,
            "target_table": cand.target.name,
        }
        return Task(domain="db", task_id=make_task_id(seed, split, difficulty),
                    instruction=cand.question.instruction, context=_context(cand.tables), payload=payload,
                    split=split, difficulty=difficulty)
    raise RuntimeError(f"No {split} task for seed {seed} at difficulty {difficulty}")  # pragma: no cover


_TASK_ID = re.compile(r"db/(train|test)/d([123])/(0|[1-9][0-9]*)")


def task_from_id(task_id: str) -> Task:
    """Rebuild a procedural task from its id ``db/{split}/d{difficulty}/{seed}``, e.g. ``db/train/d2/17``."""
    match = _TASK_ID.fullmatch(task_id) if isinstance(task_id, str) else None
    if match is None:
        raise ValueError("Expects a task id 'db/{train|test}/d{1|2|3}/{seed >= 0}' such as 'db/train/d2/17', "
                         f"actual {task_id!r}")
    split, difficulty, seed = match.groups()
    return generate_task(int(seed), split, int(difficulty))
