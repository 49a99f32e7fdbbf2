"""What every resolver gets: the request's loaders."""

from __future__ import annotations

from dataclasses import dataclass

import strawberry

from gateway.loaders.loaders import Loaders


@dataclass(slots=True)
class Context:
    loaders: Loaders


Info = strawberry.Info[Context, None]
