"""Name -> component registries: components register where they are defined; ``create`` validates."""
import inspect
from typing import Any, Callable

EMPTY = inspect.Parameter.empty


class UnknownNameError(ValueError):
    """Raised for a name that no registry entry has; the message lists the valid names."""


def signature_options(factory: Callable[..., Any]) -> tuple[dict[str, inspect.Parameter], bool]:
    """(name -> parameter, accepts any keyword) of a factory or a class's __init__; a class whose
    __init__ passes ``**kwargs`` to its base also takes the base's options (acts_on of balancers)."""
    chain = [k.__init__ for k in factory.__mro__ if "__init__" in vars(k)] if inspect.isclass(factory) else [factory]
    options: dict[str, inspect.Parameter] = {}
    for init in chain:
        params = list(inspect.signature(init).parameters.values())[inspect.isclass(factory):]  # no self
        options.update({p.name: p for p in params if p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)
                        and p.name not in options})
        if not any(p.kind is p.VAR_KEYWORD for p in params):
            return options, False
    return options, True


class Registry:
    """A named collection of classes or factories: ``@register(name)``, ``create(name, **options)``."""

    def __init__(self, kind: str):
        self.kind = kind
        self._entries: dict[str, Callable[..., Any]] = {}

    def register(self, name: str):
        """Decorator for a class or a factory; its first docstring line describes it in ``mmbal list``."""
        def decorator(factory):
            if name in self._entries:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            self._entries[name] = factory
            return factory
        return decorator

    def get(self, name: str) -> Callable[..., Any]:
        if name not in self._entries:
            raise UnknownNameError(f"unknown {self.kind} {name!r}; valid {self.kind} names: {', '.join(self.names())}")
        return self._entries[name]

    def create(self, name: str, /, **options: Any) -> Any:
        """The one place that builds a component: unknown or missing options fail naming the valid ones."""
        params, open_ended = signature_options(self.get(name))
        unknown = [] if open_ended else sorted(set(options) - set(params))
        missing = [k for k, p in params.items() if p.default is EMPTY and k not in options]
        if unknown or missing:
            problem = f"unknown options {unknown}" if unknown else f"missing options {missing}"
            raise ValueError(f"{self.kind} {name!r}: {problem}; valid options: {', '.join(params)}")
        return self._entries[name](**options)

    def defaults(self, name: str) -> dict[str, Any]:
        """The keyword defaults of a component (so a result can name every value it ran with)."""
        return {k: p.default for k, p in signature_options(self.get(name))[0].items() if p.default is not EMPTY}

    def names(self) -> list[str]:
        return sorted(self._entries)

    def describe(self) -> dict[str, str]:
        """Name -> one-line description (first docstring line of the class or factory)."""
        return {name: (inspect.getdoc(self._entries[name]) or "").partition("\n")[0] for name in self.names()}

    def __contains__(self, name: str) -> bool:
        return name in self._entries
