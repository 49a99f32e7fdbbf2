"""The rows every demo catalogue holds by name, whatever its scale.

The site's four categories; the well-known grids and packages a newcomer tries first, with the
oldest ids; and the quirk rows (odd titles, scripts, punctuation, duplicate titles) that every
backend must carry through unchanged. `dataset.py` generates the rest around them.
"""

CATEGORIES = (
    (1, "App", "apps", "Apps", True, "Small components used to build projects."),
    (2, "Framework", "frameworks", "Frameworks", True, "Large efforts that combine many modules."),
    (3, "Other", "others", "Other", False, "Other are not installed by pip, or are not apps."),
    (4, "Project", "projects", "Projects", False, "Individual Django-powered sites and templates."),
)

# (title, slug, description): the site's well-known grids, with ids 1, 2, … at every scale.
KNOWN_GRIDS = (
    ("Admin interface", "admin-interface", "Packages that change or extend the Django admin."),
    ("CMS", "cms", "Content management systems built on Django."),
    ("REST frameworks", "rest-frameworks", "Toolkits for building REST APIs with Django."),
    ("Debugging tools", "debugging-tools", "Inspect requests, queries and templates."),
    ("Authentication", "authentication", "Sign-in, sign-up, social accounts and permissions."),
    ("Task queues", "task-queues", "Run work in the background, outside the request 🚀"),
    ("Filters", "filters", "Filter querysets from request parameters."),
    ("Forms", "forms", "Render, validate and lay out forms."),
)
# (title, slug, category id, stars, description, grid slugs): the well-known packages, with ids
# 1, 2, … at every scale, a PyPI release and a recent commit; each also joins generated grids.
KNOWN_PACKAGES = (
    (
        "django-debug-toolbar",
        "django-debug-toolbar",
        1,
        8_200,
        "A configurable set of panels that display debug information about the request.",
        ("debugging-tools",),
    ),
    (
        "Django REST framework",
        "djangorestframework",
        1,
        29_000,
        "Web APIs for Django. 🎸",
        ("rest-frameworks",),
    ),
    (
        "django-filter",
        "django-filter",
        1,
        4_500,
        "A generic system for filtering Django QuerySets based on user selections.",
        ("filters", "rest-frameworks"),
    ),
    (
        "Wagtail",
        "wagtail",
        2,
        19_000,
        "A Django content management system focused on flexibility and user experience.",
        ("cms", "admin-interface"),
    ),
    (
        "django CMS",
        "django-cms",
        2,
        10_500,
        "The easy-to-use and developer-friendly enterprise CMS powered by Django.",
        ("cms", "admin-interface"),
    ),
    ("Celery", "celery", 3, 25_000, "Distributed task queue.", ("task-queues",)),
    (
        "django-allauth",
        "django-allauth",
        1,
        9_800,
        "Authentication, registration, account management and social accounts for Django.",
        ("authentication",),
    ),
    (
        "django-crispy-forms",
        "django-crispy-forms",
        1,
        5_100,
        "The best way to have DRY Django forms.",
        ("forms",),
    ),
    (
        "django-extensions",
        "django-extensions",
        1,
        6_600,
        "A collection of custom extensions for the Django Framework.",
        ("debugging-tools",),
    ),
    (
        "django-grappelli",
        "django-grappelli",
        1,
        3_500,
        "A jazzy skin for the Django admin interface.",
        ("admin-interface",),
    ),
    (
        "django-import-export",
        "django-import-export",
        1,
        3_200,
        "Import and export data in many formats, from the Django admin.",
        ("admin-interface",),
    ),
    ("Mezzanine", "mezzanine", 2, 4_700, "CMS framework for Django.", ("cms", "admin-interface")),
    (
        "django-guardian",
        "django-guardian",
        1,
        3_700,
        "Per object permissions for Django.",
        ("authentication",),
    ),
    (
        "drf-spectacular",
        "drf-spectacular",
        1,
        2_600,
        "Sane and flexible OpenAPI 3 schema generation for Django REST framework.",
        ("rest-frameworks",),
    ),
    (
        "Django Ninja",
        "django-ninja",
        2,
        8_000,
        "Fast, async-ready web framework for building APIs with Django and Python type hints.",
        ("rest-frameworks",),
    ),
    (
        "django-rq",
        "django-rq",
        1,
        1_900,
        "A simple app that provides Django integration for RQ (Redis Queue).",
        ("task-queues",),
    ),
    (
        "django-celery-beat",
        "django-celery-beat",
        1,
        1_800,
        "Celery periodic tasks backed by the Django ORM.",
        ("task-queues",),
    ),
    (
        "django-storages",
        "django-storages",
        1,
        2_800,
        "A collection of custom storage backends for Django.",
        (),
    ),
    (
        "django-environ",
        "django-environ",
        1,
        3_100,
        "Configure your Django application with environment variables.",
        (),
    ),
    (
        "django-cors-headers",
        "django-cors-headers",
        1,
        5_400,
        "Django app for handling the server headers required for CORS.",
        (),
    ),
)

# (title, slug, description): present at every scale, so small test datasets carry the quirks too.
QUIRK_PACKAGES = (
    ("django-foo", "django-foo", "The original :gear: foo."),
    ("Django-Foo", "django-foo-2", 'A "Foo" fork with capitals.'),
    ("DJANGO-FOO", "django-foo-3", "Shouting foo.\nNow with newlines."),
    ("django-twin", "django-twin", "One of two packages with the same title."),
    ("django-twin", "django-twin-2", "The other one of the twins."),
    ("Robert'); DROP TABLE package_package;--", "robert-drop-table", "Little Bobby Tables' app."),
    (
        "select * from grids",
        "select-from-grids",
        "SELECT title FROM package WHERE 1=1; -- :rocket:",
    ),
    ("100% Coverage", "100-coverage", "Reports 100% of lines; matches LIKE '%' and '_'."),
    ("O'Reilly's utils", "oreillys_utils", "It's \"quoted\" and 'single-quoted'."),
    ("django_under_score", "django_under_score", "Underscores _ in slug and title."),
    ("Джанго утилиты", "dzhango-utility", "Утилиты для Django: формы, кеш и ✨ магия."),
    ("日本語テンプレート", "nihongo-template", "Djangoのための日本語テンプレート集 :sparkles:"),
    ("Café Crème", "cafe-creme", "Crème brûlée, naïve café, résumé — à la carte."),
    ("🚀 Rocket Admin", "rocket-admin", ":rocket: A faster admin 🚀 with :snake: and :zap:."),
    ("zzz-last", "zzz-last", ""),
    ("Aardvark", "aardvark", "Capital A sorts before every lower-case title under C collation."),
)
QUIRK_GRIDS = (
    (
        "Health checkers",
        "healt-checkers",
        "Packages that enables Django's health check (eg: is alive, can talk to database, etc...)",
    ),
    ('Quirks & "Edge" cases', "quirks-edge-cases", "Every odd title in one grid :gear:"),
    ("国際化 (i18n)", "i18n", "Internationalisation — 国際化, интернационализация."),
)
