"""A deterministic Django Packages catalogue, shaped like the site's database tables.

The well-known packages a newcomer tries first (django-debug-toolbar, Django REST framework,
Wagtail, Celery, …) are there with the oldest ids, in the grids where the site lists them; the
rest is generated around them. The embedded catalogue is built from these rows, and the tests'
fake APIv4 and database-backed tests serve the same rows, so every backend meets the same quirks:
sparse ids, titles that sort differently under a C collation, duplicate titles, emoji shortcodes,
non-Latin text, nullable dates, comma-separated participants and membership rows whose ids follow
insertion order rather than grid or package id.
"""

from __future__ import annotations

import math
import random
import re
import unicodedata
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from itertools import accumulate

from gateway.demo.known import (
    CATEGORIES,
    KNOWN_GRIDS,
    KNOWN_PACKAGES,
    QUIRK_GRIDS,
    QUIRK_PACKAGES,
)
from gateway.loaders.records import Category, Grid
from gateway.loaders.sql import rows

__all__ = ["generate"]


START = datetime(2010, 8, 1, 12, 0, tzinfo=UTC)
NOW = datetime(2026, 2, 15, 14, 5, 26, tzinfo=UTC)
SEARCH_BUILT = datetime(2026, 2, 15, 6, 0, 12, tzinfo=UTC)
DAY = 86_400.0

_CATEGORY_WEIGHTS = (75, 8, 7, 10)

# fmt: off
_WORDS = (
    "admin", "activity", "ajax", "allauth", "analytics", "api", "audit", "auth", "autocomplete",
    "avatar", "backup", "badges", "blog", "bootstrap", "cache", "calendar", "captcha", "celery",
    "channels", "charts", "checkout", "cms", "comments", "compressor", "config", "cors", "crispy",
    "cron", "csv", "dashboard", "debug", "deploy", "docs", "dynamic", "email", "encrypted",
    "environ", "events", "export", "extensions", "factory", "feeds", "fields", "files", "filter",
    "flags", "forms", "geo", "graphql", "guardian", "haystack", "health", "history", "htmx",
    "i18n", "import", "invitations", "jobs", "json", "jwt", "ldap", "likes", "locale", "logging",
    "mailer", "maps", "markdown", "media", "messages", "migrations", "model", "money",
    "multitenant", "notifications", "oauth", "orders", "otp", "pagination", "payments", "pdf",
    "permissions", "polls", "polymorphic", "profiles", "push", "queue", "ratings", "redis",
    "registration", "reports", "rest", "revisions", "rq", "s3", "sass", "scheduler", "search",
    "seo", "sessions", "settings", "shop", "simple", "sitemap", "slugs", "social", "sso", "static",
    "storages", "stripe", "subscriptions", "tables", "tagging", "tasks", "templates", "tenants",
    "test", "thumbnails", "timezone", "tokens", "tracking", "tree", "upload", "users",
    "versioning", "video", "webhooks", "webpack", "widgets", "wiki", "workflow",
)
_BRAND_SUFFIXES = ("", "Kit", "Hub", "ify", "ly", "Py", "Pro")
_ACRONYMS = {"api", "cms", "csv", "jwt", "otp", "pdf", "seo", "sso", "rq", "s3", "ldap", "cors"}
_SYLLABLES = (
    "al", "an", "ar", "be", "bo", "ca", "da", "de", "el", "en", "fa", "ga", "ha", "il", "jo", "ka",
    "ki", "la", "le", "li", "lo", "ma", "mi", "mo", "na", "ne", "ni", "no", "pa", "pe", "ra", "re",
    "ri", "ro", "sa", "se", "si", "so", "ta", "te", "ti", "to", "va", "ve", "vi", "yu", "za",
)
# fmt: on
_SENTENCES = (
    "A reusable Django app for {a}.",
    "{A} support for Django {b} projects.",
    "Simple {a} integration with the Django admin.",
    "Provides {a} and {b} helpers for Django REST framework.",
    "Yet another {a} library.",
    "Fast, tested {a} backend for Django ≥ 4.2.",
    "Django {a} made easy.",
    "Drop-in {a} with zero configuration.",
)
_EXTRAS = (
    " :gear:",
    " :rocket:",
    " :sparkles: New!",
    " 🚀",
    " ✨",
    " 🐍 Python 3 only.",
    ' It\'s "batteries included".',
    "\nSee the docs for details.",
    " Поддерживает Django.",
    " 日本語のドキュメントあり。",
    " Très rapide, déjà testé.",
    " Uses % and _ in LIKE patterns.",
)
_GRID_TOPICS = (  # besides the well-known grids
    "API creation",
    "Authorization",
    "Background tasks",
    "Caching",
    "Full-text search",
    "Image thumbnails",
    "Payment processing",
    "Static assets",
    "Tagging",
    "Testing tools",
    "Multi-tenancy",
    "Model auditing",
    "Email backends",
    "Deployment",
    "Geolocation",
)
_MEMBERSHIP_WEIGHTS = (22, 22, 18, 13, 9, 6, 4, 2, 2, 1, 1)  # P(a package is in k grids), k=0..10


def generate(scale: float = 1.0, seed: int = 0) -> rows.Dataset:
    """About 5,400 packages and 420 grids times `scale`; the same seed gives the same rows."""
    if scale <= 0:
        raise ValueError("scale must be positive")
    rng = random.Random(seed)
    categories = _categories()
    users = _usernames(rng, max(40, round(1200 * scale)))
    known_packages, known_grids = len(KNOWN_PACKAGES), len(KNOWN_GRIDS)
    n_packages = max(known_packages + len(QUIRK_PACKAGES), round(5400 * scale))
    n_grids = max(known_grids + len(QUIRK_GRIDS), round(420 * scale))
    package_ids = _ids(rng, known_packages, n_packages, round(6000 * scale))
    grid_ids = _ids(rng, known_grids, n_grids, round(450 * scale))
    packages, versions = _packages(rng, package_ids, users)
    grids = _grids(rng, grid_ids)
    generated = n_packages - known_packages
    quirk_ids = {
        package_ids[known_packages + _spread(i, generated)] for i in range(len(QUIRK_PACKAGES))
    }
    memberships = _memberships(rng, packages, grids, quirk_ids)
    search_rows = _search_rows(rng, categories, packages, versions, grids, memberships)
    return rows.Dataset(categories, packages, versions, grids, memberships, search_rows)


def _categories() -> tuple[Category, ...]:
    categories = []
    for id_, title, slug, plural, show_pypi, description in CATEGORIES:
        created = START + timedelta(days=id_, microseconds=137_000 * id_ + 1)
        modified = START + timedelta(days=900 + id_, microseconds=251_000 * id_ + 7)
        categories.append(
            Category(id_, title, slug, description, plural, show_pypi, created, modified)
        )
    return tuple(categories)


def _ids(rng: random.Random, known: int, count: int, space: int) -> list[int]:
    """`count` ids: 1..known for the well-known rows, then sparse ones up to about `space` (the
    gaps are rows deleted over the years)."""
    sparse = range(known + 1, max(space, count) + 1)
    return [*range(1, known + 1), *sorted(rng.sample(sparse, count - known))]


def _spread(index: int, count: int) -> int:
    """Where the index-th quirk goes among `count` rows: spread evenly, first to last."""
    return round(index * (count - 1) / (len(QUIRK_PACKAGES) - 1))


def _usernames(rng: random.Random, count: int) -> list[str]:
    names: set[str] = set()
    while len(names) < count:
        name = "".join(rng.choices(_SYLLABLES, k=rng.randint(2, 4)))
        if rng.random() < 0.3:
            name += str(rng.randint(1, 99))
        elif rng.random() < 0.1:
            name = name.capitalize() + "-" + rng.choice(_SYLLABLES)
        names.add(name)
    return sorted(names)


def _stamp(rng: random.Random, start: datetime, end: datetime) -> datetime:
    """An auto timestamp between start and end: whole seconds plus non-zero microseconds."""
    seconds = int(rng.uniform(0, max((end - start).total_seconds(), 1)))
    return start + timedelta(seconds=seconds, microseconds=rng.randrange(1, 1_000_000))


def _created(rng: random.Random, id_: int, step: float) -> datetime:
    """When the row with this id was made: ids grow with time, `step` seconds apart on average."""
    return START + timedelta(
        seconds=int(step * (id_ - 1) + rng.uniform(0, step - 1)),
        microseconds=rng.randrange(1, 1_000_000),
    )


def _slugify(title: str) -> str:
    """Django's slugify, truncated to the column's 50 characters."""
    text = unicodedata.normalize("NFKD", title).encode("ascii", "ignore").decode("ascii")
    text = re.sub(r"[^\w\s-]", "", text.lower())
    return re.sub(r"[-\s]+", "-", text).strip("-_")[:50] or "package"


def _unique(slug: str, taken: set[str]) -> str:
    candidate, n = slug, 1
    while candidate in taken:
        n += 1
        candidate = f"{slug[: 50 - len(str(n)) - 1]}-{n}"
    taken.add(candidate)
    return candidate


def _word(rng: random.Random, capital: bool) -> str:
    word = rng.choice(_WORDS)
    if capital:
        return word.upper() if word in _ACRONYMS else word.capitalize()
    return word


def _package_title(rng: random.Random) -> str:
    r = rng.random()
    words = rng.randint(1, 3)
    if r < 0.50:
        return "django-" + "-".join(_word(rng, False) for _ in range(words))
    if r < 0.58:
        return "django_" + "_".join(_word(rng, False) for _ in range(words))
    if r < 0.66:
        prefix = rng.choice(("drf-", "wagtail-", "dj-", "pytest-django-", "channels-"))
        return prefix + "-".join(_word(rng, False) for _ in range(words))
    if r < 0.80:
        return "Django " + " ".join(_word(rng, True) for _ in range(words))
    if r < 0.90:
        return _word(rng, True) + rng.choice(_BRAND_SUFFIXES)
    return "Django-" + "-".join(_word(rng, True) for _ in range(words))


def _description(rng: random.Random) -> str:
    if rng.random() < 0.05:
        return ""
    a, b = rng.choice(_WORDS), rng.choice(_WORDS)
    text = rng.choice(_SENTENCES).format(a=a, A=a.capitalize(), b=b)
    while rng.random() < 0.3:
        text += rng.choice(_EXTRAS)
    return text


def _participants(rng: random.Random, users: Sequence[str]) -> str:
    """The TEXT column: usually "a,b,c", sometimes with spaces and empty parts."""
    count = min(len(users), int(rng.lognormvariate(1.2, 1.0)) if rng.random() < 0.9 else 0)
    names = rng.sample(users, count)
    if count > 2 and rng.random() < 0.08:
        names.insert(rng.randrange(1, count), "")
        return ", ".join(names[:2]) + "," + ",".join(names[2:])
    return ",".join(names)


def _commits(rng: random.Random) -> tuple[int, ...]:
    if rng.random() < 0.65:
        return (0,) * 52
    busy = rng.uniform(0.1, 0.8)
    return tuple(int(rng.expovariate(0.25)) if rng.random() < busy else 0 for _ in range(52))


def _version_numbers(rng: random.Random, count: int) -> list[str]:
    major, minor, patch = (0, 1, 0) if rng.random() < 0.6 else (1, 0, 0)
    numbers = []
    for _ in range(count):
        numbers.append(f"{major}.{minor}.{patch}")
        r = rng.random()
        if r < 0.7:
            patch += 1
        elif r < 0.95:
            minor, patch = minor + 1, 0
        else:
            major, minor, patch = major + 1, 0, 0
    return numbers


def _packages(
    rng: random.Random, ids: list[int], users: Sequence[str]
) -> tuple[tuple[rows.PackageRow, ...], tuple[rows.VersionRow, ...]]:
    step = (NOW - START - timedelta(days=30)).total_seconds() / ids[-1]
    known = len(KNOWN_PACKAGES)
    quirks = {known + _spread(i, len(ids) - known): q for i, q in enumerate(QUIRK_PACKAGES)}
    taken = {slug for _, slug, _ in QUIRK_PACKAGES} | {row[1] for row in KNOWN_PACKAGES}
    titles: list[str] = []
    packages: list[rows.PackageRow] = []
    versions: list[rows.VersionRow] = []
    version_id = 0
    for index, id_ in enumerate(ids):
        created = _created(rng, id_, step)
        watchers = int(rng.lognormvariate(3.0, 1.6))
        category_id = rng.choices((1, 2, 3, 4), weights=_CATEGORY_WEIGHTS)[0]
        if index < known:
            title, slug, category_id, watchers, description, _ = KNOWN_PACKAGES[index]
        elif index in quirks:
            title, slug, description = quirks[index]
        else:
            duplicate = titles and rng.random() < 0.02
            title = rng.choice(titles) if duplicate else _package_title(rng)
            slug, description = _unique(_slugify(title), taken), _description(rng)
        titles.append(title)
        owner = rng.choice(users).lower()
        host = rng.choices(("github.com", "gitlab.com", "bitbucket.org"), weights=(88, 7, 5))[0]

        last_commit_date = None
        if rng.random() >= 0.08:
            earliest = max(START - timedelta(days=700), created - timedelta(days=365))
            last_commit_date = _stamp(rng, earliest, NOW).replace(microsecond=0)
        if index < known:  # maintained: a commit within the last month
            last_commit_date = _stamp(rng, NOW - timedelta(days=30), NOW).replace(microsecond=0)
        last_fetched = None
        if rng.random() >= 0.06:
            last_fetched = _stamp(rng, max(created, NOW - timedelta(days=40)), NOW)
        modified = max(created, NOW - timedelta(seconds=rng.expovariate(1 / (90 * DAY))))
        modified = _stamp(rng, modified, modified + timedelta(seconds=1))

        latest_version_id = None
        has_pypi = rng.random() < (0.85 if category_id in (1, 2) else 0.2) or index < known
        if has_pypi:
            count = min(12, 1 + int(rng.expovariate(0.25)))
            uploaded = created
            for number in _version_numbers(rng, count):
                version_id += 1 + (rng.randrange(1, 6) if rng.random() < 0.1 else 0)
                uploaded = _stamp(rng, uploaded, min(NOW, uploaded + timedelta(days=200)))
                versions.append(rows.VersionRow(version_id, id_, number, uploaded))
            latest_version_id = version_id
            pypi_url = f"https://pypi.org/project/{slug}/"
        else:
            pypi_url = "" if rng.random() < 0.95 else f"https://pypi.python.org/pypi/{slug}"

        r = rng.random()
        documentation_url = (
            None
            if r < 0.25
            else ""
            if r < 0.55
            else f"https://{slug.replace('_', '-')}.readthedocs.io/en/latest/"
        )
        packages.append(
            rows.PackageRow(
                id=id_,
                title=title,
                slug=slug,
                category_id=category_id,
                repo_description=description,
                repo_url=f"https://{host}/{owner}/{slug}",
                repo_watchers=watchers,
                repo_forks=int(watchers * rng.uniform(0.02, 0.3)),
                pypi_url=pypi_url,
                pypi_downloads=int(rng.lognormvariate(6, 2)) if has_pypi else 0,
                participants=_participants(rng, users),
                last_fetched=last_fetched,
                documentation_url=documentation_url,
                commits_over_52w=_commits(rng),
                last_commit_date=last_commit_date,
                latest_version_id=latest_version_id,
                created=created,
                modified=modified,
            )
        )
    return tuple(packages), tuple(versions)


def _grids(rng: random.Random, ids: list[int]) -> tuple[Grid, ...]:
    step = (NOW - START - timedelta(days=200)).total_seconds() / ids[-1]
    taken: set[str] = set()
    grids = []
    fixed = KNOWN_GRIDS + QUIRK_GRIDS
    for index, id_ in enumerate(ids):
        if index < len(fixed):
            title, slug, description = fixed[index]
            taken.add(slug)
        else:
            topic = rng.choice(_GRID_TOPICS)
            title = rng.choice(
                (
                    topic,
                    f"{topic} for {rng.choice(('Wagtail', 'DRF', 'django CMS', 'HTMX'))}",
                    f"{_word(rng, True)} {rng.choice(('tools', 'backends', 'integrations'))}",
                    f"{_word(rng, True)} and {_word(rng, False)}",
                )
            )
            slug = _slugify(title)
            if rng.random() < 0.05 and len(slug) > 6:  # hand-typed slugs with typos exist
                cut = rng.randrange(2, len(slug) - 2)
                slug = slug[:cut] + slug[cut + 1 :]
            slug, description = _unique(slug, taken), _description(rng)
        created = _created(rng, id_, step)
        grids.append(
            Grid(
                id=id_,
                title=title,
                slug=slug,
                description=description,
                is_locked=rng.random() < 0.08,
                header=rng.random() < 0.1,
                created=created,
                modified=_stamp(rng, created, NOW),
            )
        )
    return tuple(grids)


def _memberships(
    rng: random.Random,
    packages: tuple[rows.PackageRow, ...],
    grids: tuple[Grid, ...],
    quirk_ids: set[int],
) -> tuple[rows.GridPackageRow, ...]:
    """Rows in insertion (creation) order: neither grid id nor package id order."""
    known_grids = {grid.slug: grid for grid in grids[: len(KNOWN_GRIDS)]}
    known_packages = {row[1]: row[5] for row in KNOWN_PACKAGES}
    quirk_grid = grids[len(KNOWN_GRIDS) + 1]
    popularity = [rng.lognormvariate(0, 0.6) / (rank + 2) ** 0.6 for rank in range(len(grids))]
    rng.shuffle(popularity)
    cumulative = list(accumulate(popularity))
    pairs: dict[tuple[int, int], datetime] = {}
    for package in packages:
        k = min(len(grids), rng.choices(range(11), weights=_MEMBERSHIP_WEIGHTS)[0])
        chosen: dict[int, Grid] = {}
        while len(chosen) < k:
            grid = rng.choices(grids, cum_weights=cumulative)[0]
            chosen.setdefault(grid.id, grid)
        if package.id in quirk_ids:  # one grid holds every quirk, to test title ordering
            chosen.setdefault(quirk_grid.id, quirk_grid)
        for slug in known_packages.get(package.slug, ()):  # where the site lists it
            chosen.setdefault(known_grids[slug].id, known_grids[slug])
        for grid in chosen.values():
            joined = max(package.created, grid.created)
            delay = timedelta(seconds=rng.expovariate(1 / (120 * DAY)))
            pairs[grid.id, package.id] = _stamp(rng, min(NOW, joined + delay), NOW)
    memberships = []
    row_id = 0
    for (grid_id, package_id), created in sorted(pairs.items(), key=lambda item: item[1]):
        row_id += 1 + (rng.randrange(1, 4) if rng.random() < 0.05 else 0)
        memberships.append(rows.GridPackageRow(row_id, grid_id, package_id, created, created))
    return tuple(memberships)


def _search_rows(
    rng: random.Random,
    categories: tuple[Category, ...],
    packages: tuple[rows.PackageRow, ...],
    versions: tuple[rows.VersionRow, ...],
    grids: tuple[Grid, ...],
    memberships: tuple[rows.GridPackageRow, ...],
) -> tuple[rows.SearchRow, ...]:
    """The index as the site's build leaves it: packages, then grids, stamped at build time."""
    category_titles = {category.id: category.title for category in categories}
    released = {version.id: version.upload_time for version in versions}
    grid_sizes: dict[int, int] = {}
    for membership in memberships:
        grid_sizes[membership.grid_id] = grid_sizes.get(membership.grid_id, 0) + 1
    index: list[rows.SearchRow] = []
    built = (SEARCH_BUILT, SEARCH_BUILT)
    for package in packages:
        usage = int(rng.lognormvariate(0.5, 1.5))
        built = _built(rng, built[0])
        index.append(
            rows.package_search_row(
                len(index) + 1,
                package,
                category_titles[package.category_id],
                weight=int(12 * math.log1p(package.repo_watchers) + 6 * math.log1p(usage)),
                usage=usage,
                score=package.repo_watchers + 10 * usage,
                last_released=(
                    released[package.latest_version_id] if package.latest_version_id else None
                ),
                built=built,
            )
        )
    for grid in grids:
        built = _built(rng, built[0])
        weight = int(20 * math.log1p(grid_sizes.get(grid.id, 0)))
        index.append(rows.grid_search_row(len(index) + 1, grid, weight=weight, built=built))
    return tuple(index)


def _built(rng: random.Random, previous: datetime) -> tuple[datetime, datetime]:
    """The next index row's (created, modified): a few milliseconds after the one before."""
    created = _stamp(rng, previous, previous + timedelta(milliseconds=40))
    return created, created + timedelta(microseconds=rng.randrange(5, 900))
