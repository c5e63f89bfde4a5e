"""What a logged value may be, and how it becomes something tensorboardX can write.

A scalar is a float, an int, a numpy scalar or a one-element array / tensor (any device: ``.item()``
copies the one number). A value that is none of these gets an error that names the method, the tag
and what was passed (its type and shape, not its whole repr), instead of an error from deep inside
tensorboardX or numpy. The error is only built once a conversion has failed: checking costs the
writer's hot path nothing.

Tensors for the other ``add_*`` methods are handed to tensorboardX, which converts them with
``x.cpu().numpy()``. Torch dtypes that numpy has no dtype for (bfloat16, the float8 types,
complex32) would raise there: :func:`on_host` widens them exactly (float32, complex64) on the
tensor's own device first, and :func:`tensor_args` applies it to a method's tensor arguments.
"""

from __future__ import annotations

import functools
import inspect
from typing import Any, Callable

import numpy as np

try:  # torch is optional
    import torch
except ImportError:  # pragma: no cover
    torch = None  # type: ignore[assignment]


#: Types ``float()`` converts exactly as ``.item()`` then ``float()`` would: checked first, by exact type.
NUMBER_TYPES: frozenset[type] = frozenset({
    float, int, bool, np.float16, np.float32, np.float64, np.int8, np.int16, np.int32, np.int64,
    np.uint8, np.uint16, np.uint32, np.uint64, np.bool_,
})
TENSOR_TYPE: type | None = None if torch is None else torch.Tensor


def as_float(value: Any) -> float:
    """A Python float from a float, int, numpy scalar or one-element array / tensor.

    Numbers and plain tensors are recognised by their exact type before the generic ``.item()``
    lookup: ``add_scalar`` of a numpy scalar or a 0-d tensor is the hot path too.
    """
    kind = type(value)
    if kind in NUMBER_TYPES:
        return float(value)
    item = value.item if kind is TENSOR_TYPE else getattr(value, "item", None)
    if item is not None:
        try:
            value = item()
        except (ValueError, RuntimeError):
            shape = getattr(value, "shape", "?")
            raise ValueError(f"scalar_value must hold exactly one number, got shape {tuple(shape)}") from None
    return float(value)


def describe(value: Any) -> str:
    """``type 'repr'`` of a rejected argument, short."""
    text = repr(value)
    if len(text) > 60:
        text = text[:57] + "..."
    shape = getattr(value, "shape", None)
    if shape is not None and not isinstance(value, (str, bytes)):
        return f"{type(value).__name__} of shape {tuple(shape)}"
    return f"{type(value).__name__} {text}"


def _scalar_error(method: str, tag: str, value: Any) -> Exception:
    """What ``add_scalar`` says for a value that is not a number (only built when it fails)."""
    kind = ValueError if getattr(value, "shape", None) is not None else TypeError
    return kind(f"{method}({tag!r}): scalar_value must be a number or a one-element tensor/array, got {describe(value)}")


def checked_float(method: str, tag: str, value: Any) -> float:
    try:
        return as_float(value)
    except (TypeError, ValueError, RuntimeError):
        raise _scalar_error(method, tag, value) from None


def checked_step(method: str, tag: str, step: Any) -> int | None:
    if step is None:
        return None
    try:
        return int(step)
    except (TypeError, ValueError, RuntimeError, OverflowError):
        raise TypeError(f"{method}({tag!r}): global_step must be an integer, got {describe(step)}") from None


def on_host(value: Any) -> Any:
    """A torch tensor in a dtype numpy (and so tensorboardX) can convert, detached; others as they are.

    tensorboardX's conversion is ``x.cpu().numpy()``: bfloat16 (and the float8 types) have no
    numpy dtype and raise ``TypeError``. They are widened to float32 on the tensor's device first
    (exact, unlike ``torch.utils.tensorboard``'s float16, which overflows past 65504).
    """
    if torch is None or not isinstance(value, torch.Tensor):
        return value
    value = value.detach()
    if value.dtype == torch.bfloat16 or (value.is_floating_point() and value.element_size() == 1):
        return value.to(torch.float32)
    if value.dtype == torch.complex32:
        return value.to(torch.complex64)
    return value


def tensor_args(*names: str) -> Callable[[Callable], Callable]:
    """Wrap a tensorboardX method so that its tensor arguments ``names`` go through :func:`on_host`."""

    def wrap(method: Callable) -> Callable:
        signature = inspect.signature(method)

        @functools.wraps(method)
        def wrapper(self: Any, *args: Any, **kwargs: Any) -> Any:
            bound = signature.bind(self, *args, **kwargs)
            for name in names:
                if name in bound.arguments:
                    bound.arguments[name] = on_host(bound.arguments[name])
            return method(*bound.args, **bound.kwargs)

        return wrapper

    return wrap
