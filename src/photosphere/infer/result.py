"""The fit result type, :class:`~photosphere.result.Result`, under its historical name.

Result lives beside the spectrum (:mod:`photosphere.result`) so that every engine, the forward
models' own label fits included, returns it without importing the inference layer.
"""

from ..result import Result, Segment

__all__ = ["Result", "Segment"]
