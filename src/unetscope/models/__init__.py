"""The model as the sampler sees it (``model``), its conditioning, loading and wrapping."""

from .model import (PREDICTION_TYPES, VARIANCE_TYPES, Cond, DiffusionModel, ModelError, available_devices,
                    check_device, check_scheduler_config, default_model_path, fingerprint, is_factory_reference,
                    load_factory, load_model, wrap)

__all__ = ["Cond", "ModelError", "DiffusionModel", "load_model", "load_factory", "is_factory_reference", "fingerprint",
           "wrap", "default_model_path", "PREDICTION_TYPES", "VARIANCE_TYPES", "available_devices", "check_device",
           "check_scheduler_config"]
