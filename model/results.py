"""Typed measurement results and the JSON they print as.

A result is a dataclass whose fields are its JSON object's keys, in order; a nested result,
a dict, a list or a tuple of them turns into JSON the same way (`jsonable`). A result whose
JSON is laid out otherwise than its fields (flattened, or a key left out when unset)
overrides `to_json`.

    >>> from dataclasses import dataclass
    >>> @dataclass
    ... class Pair(Result):
    ...     value: float
    ...     ci95: tuple[float, float]
    >>> jsonable({"a": Pair(0.5, (0.4, 0.6))})
    {'a': {'value': 0.5, 'ci95': [0.4, 0.6]}}
"""

from __future__ import annotations

import dataclasses
from typing import Any


def jsonable(x: Any) -> Any:
    """`x` as plain JSON values: results as objects (`Result.to_json`), tuples as lists."""
    if isinstance(x, Result):
        return x.to_json()
    if isinstance(x, dict):
        return {k: jsonable(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [jsonable(v) for v in x]
    return x


class Result:
    """Base of the typed results (dataclasses): `to_json` is their JSON object."""

    def to_json(self) -> dict[str, Any]:
        """The fields, in order, as a JSON object."""
        return {f.name: jsonable(getattr(self, f.name))
                for f in dataclasses.fields(self)}  # type: ignore[arg-type]
