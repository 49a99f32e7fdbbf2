"""What every operation of a request gets: its loaders, and what its operations have cost."""

from __future__ import annotations

from dataclasses import dataclass, field

import strawberry

from gateway.documents.cost import Spending
from gateway.loaders.loaders import Loaders


@dataclass(slots=True)
class Context:
    loaders: Loaders
    # What the request's operations were estimated to cost: a batch's share the cost limit.
    spending: Spending = field(default_factory=Spending)


Info = strawberry.Info[Context, None]
