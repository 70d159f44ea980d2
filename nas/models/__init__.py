"""Model families: each builds a transformers model from a plain architecture config."""

from nas.models import cnn, transformer, vit  # noqa: F401  (registration)
from nas.models.base import FAMILIES, ArchKey, DataShape, ModelFamily, ParamCount, get_family, register_family

__all__ = ["FAMILIES", "ArchKey", "DataShape", "ModelFamily", "ParamCount", "get_family", "register_family"]
