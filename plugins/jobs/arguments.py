"""Job arguments, checked when a job is enqueued rather than when it runs.

A bad argument is the caller's mistake: it fails ``enqueue`` with
:class:`JobArgumentsError` instead of poisoning the queue with a job that
can only fail. Arguments must be JSON values (they cross processes as
JSON), bind to the task's signature (minus the ``job`` context parameter),
and pass simple checks of ``str``/``int``/``float``/``bool``/``list``/``dict``
and ``Literal[...]`` annotations (optionally ``| None``). A task taking
``**extra: Unpack[SomeTypedDict]`` accepts exactly that TypedDict's keys.
"""

from __future__ import annotations

import inspect
import json
import types
import typing
from typing import Any, Callable, Mapping

import attrs

from plugboard.plugins.jobs.errors import JobArgumentsError
from plugboard.tasks import CONTEXT_PARAMETER

_SIMPLE: dict[Any, tuple[type, ...]] = {
    str: (str,),
    int: (int,),
    float: (int, float),
    bool: (bool,),
    list: (list,),
    dict: (dict,),
}


#: ``json.dumps(value, allow_nan=False)`` builds an encoder per call; one will do.
_dumps = json.JSONEncoder(allow_nan=False).encode


def takes_context(fn: Callable[..., Any]) -> bool:
    """True when ``fn`` declares the ``job`` parameter (gets a TaskContext)."""
    return CONTEXT_PARAMETER in inspect.signature(fn).parameters


def _hints(fn: Callable[..., Any]) -> dict[str, Any]:
    try:
        return typing.get_type_hints(fn)
    except Exception:  # noqa: BLE001 - an unresolvable annotation only skips the checks
        return {}


@attrs.define(frozen=True)
class TaskArguments:
    """What :func:`check_arguments` needs of a task, read once when the task
    is registered: ``inspect.signature`` and ``typing.get_type_hints`` on
    every enqueue were a quarter of its CPU (issue 16)."""

    #: The signature without the ``job`` context parameter (what callers bind to).
    signature: inspect.Signature
    kinds: Mapping[str, Any]
    hints: Mapping[str, Any]

    @classmethod
    def of(cls, fn: Callable[..., Any]) -> "TaskArguments":
        signature = inspect.signature(fn)
        params = [p for name, p in signature.parameters.items() if name != CONTEXT_PARAMETER]
        return cls(signature.replace(parameters=params), {p.name: p.kind for p in params}, _hints(fn))


def _accepts(annotation: Any, value: Any) -> bool | None:
    """True/False for the simple annotations, None when not checked."""
    origin = typing.get_origin(annotation)
    if origin is typing.Union or origin is types.UnionType:
        arms = typing.get_args(annotation)
        if value is None:
            return type(None) in arms or None
        results = [_accepts(a, value) for a in arms if a is not type(None)]
        if any(r is None for r in results):
            return None
        return any(results)
    if origin is typing.Literal:
        return value in typing.get_args(annotation)
    base = origin or annotation
    allowed = _SIMPLE.get(base)
    if allowed is None:
        return None
    if isinstance(value, bool) and base is not bool:
        return False  # bool is an int subclass; `count: true` is a mistake
    return isinstance(value, allowed)


def _type_name(annotation: Any) -> str:
    if typing.get_origin(annotation) is typing.Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(annotation))
    return getattr(annotation, "__name__", None) or str(annotation).replace("typing.", "")


def check_arguments(task: str, spec: TaskArguments, args: Mapping[str, Any] | None) -> dict[str, Any]:
    """The arguments as stored (a JSON round trip), or :class:`JobArgumentsError`."""
    if args is None:
        args = {}
    if not isinstance(args, Mapping) or not all(isinstance(k, str) for k in args):
        raise JobArgumentsError(f"arguments of task {task!r} must be a mapping of names to values")
    if CONTEXT_PARAMETER in args:
        raise JobArgumentsError(f"task {task!r}: {CONTEXT_PARAMETER!r} is not an argument (the job context is passed by the runner)")
    try:
        stored = json.loads(_dumps(dict(args)))
    except (TypeError, ValueError) as e:
        raise JobArgumentsError(f"arguments of task {task!r} must be JSON values: {e}") from None
    try:
        bound = spec.signature.bind(**stored)
    except TypeError as e:
        raise JobArgumentsError(f"bad arguments for task {task!r}: {e}") from None
    checks: list[tuple[str, Any, Any]] = []
    for name, value in bound.arguments.items():
        annotation = spec.hints.get(name)
        kind = spec.kinds[name]
        if kind is inspect.Parameter.VAR_KEYWORD:
            checks.extend(_extra_keywords(task, annotation, value))
        elif annotation is not None and kind is not inspect.Parameter.VAR_POSITIONAL:
            checks.append((name, annotation, value))
    for name, annotation, value in checks:
        if _accepts(annotation, value) is False:
            got = repr(value) if typing.get_origin(annotation) is typing.Literal else type(value).__name__
            raise JobArgumentsError(f"bad arguments for task {task!r}: {name!r} must be {_type_name(annotation)}, not {got}")
    return stored


def _extra_keywords(task: str, annotation: Any, extra: Mapping[str, Any]) -> list[tuple[str, Any, Any]]:
    """``**extra: Unpack[SomeTypedDict]`` (PEP 692) names the extra keywords a
    task takes (``from``, a Python keyword) and their types; others fail."""
    if typing.get_origin(annotation) is not typing.Unpack:
        return []
    (typed,) = typing.get_args(annotation)
    fields = typing.get_type_hints(typed)
    unknown = sorted(set(extra) - set(fields))
    if unknown:
        raise JobArgumentsError(f"bad arguments for task {task!r}: unknown {', '.join(map(repr, unknown))}")
    return [(name, fields[name], value) for name, value in extra.items()]
