"""Value pools of the procedural DB tasks: names, places, products, titles, ... drawn into table cells.

Plain tuples in a fixed order: :func:`~cmat_gym.domains.db.tasks.tables._draw` picks by index, so
reordering or editing a pool changes every task generated from it.
"""

from __future__ import annotations

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
