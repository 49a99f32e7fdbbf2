"""pg_trgm's `similarity()` in Python, which the gateway gives SQLite under the same name.

As pg_trgm computes it: the text is lower-cased and cut into words of letters and digits;
each word, padded with two spaces in front and one behind, gives its three-character runs;
the similarity is the number of trigrams two texts share over the number either has.
"""

from __future__ import annotations

import re
from functools import lru_cache

__all__ = ["similarity", "trigrams"]

_WORD = re.compile(r"[^\W_]+")


def trigrams(text: str) -> frozenset[str]:
    """The text's trigrams as pg_trgm's `show_trgm` lists them."""
    padded = ["  " + word + " " for word in _WORD.findall(text.lower())]
    return frozenset(word[i : i + 3] for word in padded for i in range(len(word) - 2))


@lru_cache(maxsize=64)
def _query_trigrams(text: str) -> frozenset[str]:
    """One query meets every row: its trigrams are worth keeping; the rows' are not."""
    return trigrams(text)


def similarity(text: str | None, query: str | None) -> float:
    """pg_trgm's `similarity(text, query)`: 0 when either has no trigram (or is NULL)."""
    if text is None or query is None:
        return 0.0
    mine, theirs = trigrams(text), _query_trigrams(query)
    if not mine or not theirs:
        return 0.0
    shared = len(mine & theirs)
    return shared / (len(mine) + len(theirs) - shared)
