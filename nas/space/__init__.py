"""Declarative search spaces: YAML in, a validated :class:`SearchSpace` out."""

from nas.space.expressions import Expression, ExpressionError
from nas.space.load import apply_overrides, load_space, load_space_text, parse_space
from nas.space.shipped import list_shipped_spaces, shipped_space_path
from nas.space.spec import Candidate, SearchSpace, SpaceError

__all__ = [
    "Candidate",
    "Expression",
    "ExpressionError",
    "SearchSpace",
    "SpaceError",
    "apply_overrides",
    "list_shipped_spaces",
    "load_space",
    "load_space_text",
    "parse_space",
    "shipped_space_path",
]
