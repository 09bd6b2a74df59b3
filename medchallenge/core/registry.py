"""Model registries: a challenge's models by name, built from the one spec a checkpoint records.

A spec is ``{"name": ..., "kwargs": {...}}``. ``Trainer.model_spec`` returns it, the default
``Trainer.build_model`` builds it, checkpoints store it, and ``predict`` rebuilds the model from it,
so a model is described in exactly one place.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import nn

from medchallenge.core.errors import OptionError

Builder = Callable[..., nn.Module]


class Registry:
    """Name → builder (a callable taking the spec's kwargs and returning an ``nn.Module``)."""

    def __init__(self, challenge: str) -> None:
        self.challenge = challenge
        self._builders: dict[str, Builder] = {}

    def register(self, name: str) -> Callable[[Builder], Builder]:
        """Decorator: ``@MODELS.register("unet")`` on a class or a function."""

        def add(builder: Builder) -> Builder:
            if name in self._builders:
                raise ValueError(f"{self.challenge}: model {name!r} registered twice")
            self._builders[name] = builder
            return builder

        return add

    def names(self) -> list[str]:
        return sorted(self._builders)

    def __contains__(self, name: object) -> bool:
        return name in self._builders

    def build(self, spec: dict[str, Any]) -> nn.Module:
        """Build the model a spec describes; an unknown name is an OptionError listing the known ones."""
        name = spec.get("name")
        if name not in self._builders:
            raise OptionError(f"{self.challenge}: unknown model {name!r}; known: {', '.join(self.names())}")
        return self._builders[name](**spec.get("kwargs", {}))
