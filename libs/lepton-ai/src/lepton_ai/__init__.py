"""The Lepton SDK: ``import lepton_ai as la``.

The client API (``la.Client``, ``la.models``) grows in the SDK issue; this package
is the name users import and ships ``py.typed``.
"""

__all__ = ["__version__"]

__version__ = "0.1.0"
