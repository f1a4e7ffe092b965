"""Forward models: ``labels -> normalised flux`` on the model's own wavelength grid."""

from ..model import ForwardModel, check_labels_in_bounds, check_model

__all__ = ["ForwardModel", "check_labels_in_bounds", "check_model"]
