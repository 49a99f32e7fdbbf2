"""Content negotiation: how much a client's Accept header wants a media type."""

from __future__ import annotations

GRAPHQL_RESPONSE = "application/graphql-response+json"


def quality(accept: str, media_type: str) -> float:
    """The q-value `accept` gives `media_type`: the most specific matching range decides."""
    ranges = {media_type: 2, media_type.split("/")[0] + "/*": 1, "*/*": 0}
    specificity, found = -1, 0.0
    for item in accept.split(","):
        media_range, *params = (part.strip() for part in item.split(";"))
        rank = ranges.get(media_range.lower(), -1)
        if rank > specificity:
            specificity, found = rank, _q_value(params)
    return found


def _q_value(params: list[str]) -> float:
    for param in params:
        name, _, value = param.partition("=")
        if name.strip().lower() == "q":
            try:
                return float(value)
            except ValueError:
                return 0.0
    return 1.0


def prefers_graphql_response(accept: str) -> bool:
    """Only a client that names the new media type gets it; `*/*` keeps `application/json`."""
    if GRAPHQL_RESPONSE not in accept.lower():
        return False
    wanted = quality(accept, GRAPHQL_RESPONSE)
    return wanted > 0 and wanted >= quality(accept, "application/json")
