"""Models made from values the project itself produced, already of the types validation would give them (its
own table rows, its own analysis of a file), without validating them again."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from pydantic import BaseModel

M = TypeVar("M", bound=BaseModel)
_set = object.__setattr__


def builder(cls: type[M]) -> Callable[[dict[str, Any]], M]:
    """A function making a ``cls`` of a dict holding every field's value, as ``model_construct`` given every field
    makes one (no default to fill in), without validation nor ``model_construct``'s per-field loop: for a model
    of twelve fields, validating took 2.7 us, ``model_construct`` 3.7, this 0.8 (2026-12-07). The dict becomes the
    model's ``__dict__``. Only for a model that forbids extras and has no private attributes (checked here)."""
    if cls.model_config.get("extra") != "forbid" or cls.__private_attributes__:
        raise TypeError(f"{cls.__name__}: builder() needs a model that forbids extras and has no private attributes")
    fields = frozenset(cls.model_fields)
    new = cls.__new__

    def build(values: dict[str, Any]) -> M:
        obj = new(cls)
        _set(obj, "__dict__", values)
        _set(obj, "__pydantic_fields_set__", set(fields))
        _set(obj, "__pydantic_extra__", None)
        _set(obj, "__pydantic_private__", None)
        return obj

    build.__doc__ = f"A {cls.__name__} of every field's value (see lorahub.schemas.construct.builder)."
    return build


__all__ = ["builder"]
