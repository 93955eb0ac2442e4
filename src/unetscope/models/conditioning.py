"""A model's conditioning, one small strategy per kind: what a user gives for N samples (``Cond``)
-> the U-Net's keyword tensors, and the unconditional branch classifier-free guidance runs beside it.
``DiffusionModel.conditioning`` names the strategy (``"none"``, ``"class"``, ``"text"``)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Union

import torch

from .errors import ModelError

__all__ = ["Cond", "Conditioning", "Unconditional", "ClassLabels", "TextPrompts", "Unsupported", "CONDITIONINGS",
           "conditioning_of"]

# The conditions a user gives for N samples: none (unconditional), one class label or prompt for all,
# one per sample (a sequence), or the U-Net's own keyword tensors, batch-first (GLIDE tokens, your own)
Cond = Union[None, int, str, Sequence[Any], Mapping[str, torch.Tensor]]


class Conditioning:
    """One kind of conditioning; ``model`` is the ``DiffusionModel`` it serves (its name, device,
    classes or text encoder)."""

    name = ""

    def make(self, model, cond: Cond, n: int) -> dict:
        """User conditioning for ``n`` samples -> the U-Net's keyword tensors."""
        raise ModelError(f"conditioning {self.name!r} is not supported")

    def has_null(self, model) -> bool:
        """Whether classifier-free guidance can run (the model has an unconditional branch)."""
        return False

    def null(self, model, n: int) -> dict:
        """The unconditional branch of classifier-free guidance, for ``n`` samples."""
        raise ModelError(f"{model.name} has no unconditional branch: guidance needs a conditional model with one")


class Unconditional(Conditioning):
    """No condition: the U-Net takes none."""

    name = "none"

    def make(self, model, cond: Cond, n: int) -> dict:
        if cond is not None:
            raise ModelError(f"{model.name} is unconditional: it takes no class labels or prompts")
        return {}


class ClassLabels(Conditioning):
    """Class labels (one for all samples, or one per sample) -> ``class_labels``; the null class, when
    the model has one, is the unconditional branch."""

    name = "class"

    def make(self, model, cond: Cond, n: int) -> dict:
        last = model.num_classes_real - 1
        if cond is None:
            raise ModelError(f"{model.name} is class-conditional: give class labels (0..{last})")
        try:
            raw = torch.as_tensor(cond)
        except (TypeError, ValueError, RuntimeError):  # a string, a ragged list, objects
            raise ModelError(f"class labels must be integers in 0..{last}, got {cond!r}"[:200]) from None
        if raw.is_floating_point() or raw.dtype == torch.bool or raw.is_complex():
            raise ModelError(f"class labels must be integers, got {cond!r}"[:200])
        labels = raw.to(torch.long).reshape(-1)
        if labels.numel() == 1 and n > 1:
            labels = labels.expand(n)
        if labels.numel() != n:
            raise ModelError(f"give one class label per sample ({n}), got {labels.numel()}")
        bad = labels[(labels < 0) | (labels >= model.num_classes_real)]
        if bad.numel():
            raise ModelError(f"class labels must be in 0..{last}, got {int(bad[0])}")
        return {"class_labels": labels.to(model.device)}

    def has_null(self, model) -> bool:
        return model.null_class is not None

    def null(self, model, n: int) -> dict:
        if model.null_class is None:
            raise ModelError(f"{model.name} has no null class: classifier-free guidance needs one (set null_class)")
        return {"class_labels": torch.full((n,), model.null_class, dtype=torch.long, device=model.device)}


class TextPrompts(Conditioning):
    """Prompts (one for all samples, or one per sample) -> the text encoder's ``encoder_hidden_states``,
    or the U-Net's own keyword tensors given as a dict; the empty prompt is the unconditional branch."""

    name = "text"

    def make(self, model, cond: Cond, n: int) -> dict:
        if isinstance(cond, dict):  # raw keyword tensors, batch-first (GLIDE tokens, your own)
            return {k: v.to(model.device) for k, v in cond.items()}
        if model.text_encoder is None:
            raise ModelError(f"{model.name} needs a text encoder and tokenizer to take prompts")
        prompts = [cond] * n if isinstance(cond, str) else list(cond or [])
        if len(prompts) == 1 and n > 1:
            prompts = prompts * n
        if len(prompts) != n or not all(isinstance(p, str) for p in prompts):
            raise ModelError(f"give one prompt (a string) per sample ({n}), got {len(prompts)}")
        return {"encoder_hidden_states": model.encode_prompts(prompts)}

    def has_null(self, model) -> bool:
        return model.text_encoder is not None

    def null(self, model, n: int) -> dict:
        if model.text_encoder is None:
            return super().null(model, n)
        return {"encoder_hidden_states": model.null_text().expand(n, -1, -1)}


class Unsupported(Conditioning):
    """A name that no strategy has (a ``DiffusionModel`` built by hand): every condition refused."""

    def __init__(self, name):
        self.name = name


CONDITIONINGS: dict[str, Conditioning] = {c.name: c() for c in (Unconditional, ClassLabels, TextPrompts)}


def conditioning_of(name: str) -> Conditioning:
    """The strategy named ``name``; a name with none refuses every condition ("not supported")."""
    found = CONDITIONINGS.get(name) if isinstance(name, str) else None
    return found if found is not None else Unsupported(name)
