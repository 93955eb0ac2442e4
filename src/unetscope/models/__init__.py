"""Models: the model as the sampler sees it (``model``), its conditioning (``conditioning``: one
strategy per kind), loading from disk or a factory (``loading``) and wrapping your own U-Net
(``wrapping``)."""

from .conditioning import Cond
from .errors import ModelError
from .loading import check_scheduler_config, default_model_path, fingerprint, is_factory_reference, load_factory, load_model
from .model import PREDICTION_TYPES, VARIANCE_TYPES, DiffusionModel
from .wrapping import wrap

__all__ = ["Cond", "ModelError", "DiffusionModel", "load_model", "load_factory", "is_factory_reference", "fingerprint",
           "wrap", "default_model_path", "PREDICTION_TYPES", "VARIANCE_TYPES", "check_scheduler_config"]
