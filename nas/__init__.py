"""ssl-nas: neural architecture search for self-supervised backbones."""

__version__ = "0.1.0"

__all__ = ["__version__"]
