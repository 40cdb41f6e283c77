"""Network registry: configs name networks by string, checkpoints rebuild them.

Nets register themselves with :func:`register_net` when their module is imported
(``import nets`` imports them all). :func:`create_net` builds a net by name and records
the full argument set (defaults included) on the instance as ``net.net_spec``, so a
checkpoint can store :func:`net_config` and rebuild the same architecture later::

    net = create_net("resunet", in_channels=1, out_channels=1)
    spec = net_config(net)                      # {"name": "resunet", "kwargs": {...}}
    twin = create_net(spec["name"], **spec["kwargs"])

The only state is the private ``_registry`` dict, filled at import time.
"""

from __future__ import annotations

import copy
import inspect
from typing import Any, Callable, NamedTuple, TypeVar

from torch import nn

__all__ = ["NET_KINDS", "create_net", "list_nets", "net_config", "net_kind", "register_net"]

NET_KINDS = ("dense", "joint", "critic")
"""What a net's ``forward`` returns: ``dense`` a ``(B, C_out, X, Y, Z)`` tensor (image or
logits), ``joint`` a dict ``{"image", "logits"}``, ``critic`` a tensor of patch logits."""


class _Entry(NamedTuple):
    constructor: Callable[..., nn.Module]
    kind: str


_registry: dict[str, _Entry] = {}

_F = TypeVar("_F", bound=Callable[..., nn.Module])


def register_net(name: str, kind: str = "dense") -> Callable[[_F], _F]:
    """Class decorator that registers a network constructor under ``name``.

    Args:
        name: Registry key used by configs, e.g. ``"resunet"``.
        kind: One of :data:`NET_KINDS`, what the net's ``forward`` returns.

    Returns:
        A decorator that stores the class (or factory function) and returns it unchanged.

    Raises:
        ValueError: If ``name`` is empty or already registered, or ``kind`` is unknown.
    """
    if not isinstance(name, str) or not name:
        raise ValueError(f"net name must be a non-empty string, got {name!r}")
    if kind not in NET_KINDS:
        raise ValueError(f"kind must be one of {list(NET_KINDS)}, got {kind!r}")

    def decorator(constructor: _F) -> _F:
        if name in _registry:
            existing = _registry[name].constructor.__qualname__
            raise ValueError(f"a net named {name!r} is already registered ({existing})")
        _registry[name] = _Entry(constructor, kind)
        return constructor

    return decorator


def list_nets(kind: str | None = None) -> list[str]:
    """Return the sorted names of registered networks.

    Args:
        kind: If given, only nets of this kind (see :data:`NET_KINDS`).
    """
    if kind is not None and kind not in NET_KINDS:
        raise ValueError(f"kind must be one of {list(NET_KINDS)}, got {kind!r}")
    return sorted(name for name, entry in _registry.items() if kind in (None, entry.kind))


def net_kind(name: str) -> str:
    """Return the kind (see :data:`NET_KINDS`) of the registered net ``name``."""
    _check_registered(name)
    return _registry[name].kind


def _check_registered(name: str) -> None:
    if name not in _registry:
        raise ValueError(f"unknown net {name!r}; registered nets: {', '.join(list_nets())}")


def _resolve_kwargs(name: str, constructor: Callable[..., nn.Module], kwargs: dict) -> dict:
    """Bind ``kwargs`` to the constructor signature and fill in the defaults."""
    signature = inspect.signature(constructor)
    try:
        bound = signature.bind(**kwargs)
    except TypeError as err:
        accepted = ", ".join(signature.parameters)
        raise ValueError(f"bad arguments for net {name!r}: {err}; accepted: {accepted}") from None
    bound.apply_defaults()
    return dict(bound.arguments)


def create_net(name: str, **kwargs: Any) -> nn.Module:
    """Build a registered network and record how it was built.

    Args:
        name: A name from :func:`list_nets`.
        **kwargs: Constructor arguments of that net.

    Returns:
        The network, with ``net_spec = {"name": name, "kwargs": <all arguments>}`` set.

    Raises:
        ValueError: For an unknown name, unknown arguments or invalid argument values.
    """
    _check_registered(name)
    constructor = _registry[name].constructor
    resolved = _resolve_kwargs(name, constructor, kwargs)
    net = constructor(**copy.deepcopy(resolved))
    net.net_spec = {"name": name, "kwargs": resolved}
    return net


def net_config(net: nn.Module) -> dict[str, Any]:
    """Return ``{"name": ..., "kwargs": ...}`` from which :func:`create_net` rebuilds ``net``.

    Args:
        net: A network built by :func:`create_net`.

    Returns:
        A deep copy of the recorded spec (safe to store in a checkpoint).

    Raises:
        ValueError: If ``net`` was not built by :func:`create_net`.
    """
    spec = getattr(net, "net_spec", None)
    if spec is None:
        raise ValueError(
            f"{type(net).__name__} has no net_spec: build it with create_net(name, **kwargs)"
        )
    return copy.deepcopy(spec)
