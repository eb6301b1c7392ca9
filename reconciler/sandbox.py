"""A Jinja2 sandbox with bounds on time and size, for templates that come from Git.

Jinja2's sandbox stops attribute tricks, but not work: two nested `range(100000)` loops run for
hours, `'A' * 3000000000` asks for 3 GB and a macro calling itself ends in RecursionError. Both
the notification templates and the cloud-init user data are rendered at validation and plan
time from whatever was pushed, so every render here is bounded:

- time: a deadline (MAX_SECONDS) checked on every loop iteration, call, attribute and item
  access, operator and string concatenation;
- size: no string or list longer than MAX_SIZE is built by `*`, `+`, `~`, `%`, `join` or a
  call's result, widths (`center`, `indent`, format specifications) are at most MAX_WIDTH, and
  the output is at most the caller's `max_output` characters;
- recursion and memory: RecursionError and MemoryError become a normal error.

Every violation is a TemplateLimit naming the template line where it happened.
"""

from __future__ import annotations

import math
import re
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from types import TracebackType
from typing import Any

import jinja2
from jinja2 import nodes
from jinja2.compiler import CodeGenerator, Frame
from jinja2.sandbox import ImmutableSandboxedEnvironment

MAX_SECONDS = 2.0
"""Longest a single render may take."""
MAX_SIZE = 1_000_000
"""Longest string or list (in characters or items) a template may build."""
MAX_WIDTH = 1000
"""Largest padding width (`center`, `indent`, `ljust`, format specifications)."""
MAX_POWER_BITS = 4096
"""Largest integer `**` may produce, in bits."""

_WIDTH_METHODS = frozenset({"center", "ljust", "rjust", "zfill", "expandtabs"})
_WIDTH_FILTERS = frozenset({"center", "indent"})
_FORMAT_METHODS = frozenset({"format", "format_map"})
# Numbers in a %-conversion or a {...:spec}: the width and precision of the result.
_PERCENT_SPEC = re.compile(r"%(?:\([^)]*\))?[#0\- +]*(\*|\d+)?(?:\.(\*|\d+))?")
_BRACE_SPEC = re.compile(r"\{[^{}]*:([^{}]*)\}")
_NESTED_SPEC = re.compile(r"\{[^{}]*:[^{}]*\{")


class TemplateLimit(Exception):
    """A render went past a bound; `line` is the template line, when known."""

    def __init__(self, message: str, line: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.line = line

    def __str__(self) -> str:
        return f"line {self.line}: {self.message}" if self.line else self.message


def _size(value: Any) -> int:
    """Characters of a string, or items plus the characters of the strings a list holds."""
    if isinstance(value, str):
        return len(value)
    if isinstance(value, list | tuple):
        return len(value) + sum(len(v) for v in value if isinstance(v, str))
    return 0


def _check_size(size: int, what: str) -> None:
    if size > MAX_SIZE:
        raise TemplateLimit(f"{what} would be longer than {MAX_SIZE} characters or items")


def _check_format(spec: str) -> None:
    """Refuse format specifications that pad a value to a huge width."""
    numbers: list[str] = []
    for width, precision in _PERCENT_SPEC.findall(spec):
        numbers += [width, precision]
    for inner in _BRACE_SPEC.findall(spec):
        numbers += re.findall(r"\d+", inner)
    if _NESTED_SPEC.search(spec):
        raise TemplateLimit("a format width taken from the arguments ({:{}}) is not allowed")
    if "*" in numbers:
        raise TemplateLimit("a format width taken from the arguments ('*') is not allowed")
    if any(n and int(n) > MAX_WIDTH for n in numbers):
        raise TemplateLimit(f"a format width or precision is larger than {MAX_WIDTH}")


def _check_width(name: str, args: Iterable[Any]) -> None:
    for arg in args:
        if isinstance(arg, int) and not isinstance(arg, bool) and abs(arg) > MAX_WIDTH:
            raise TemplateLimit(f"{name}() width {arg} is larger than {MAX_WIDTH}")


def _power(base: Any, exponent: Any) -> Any:
    huge = (
        isinstance(base, int)
        and isinstance(exponent, int)
        and exponent > 0
        and abs(base) > 1
        and exponent * math.log2(abs(base)) > MAX_POWER_BITS
    )
    if huge:
        raise TemplateLimit(f"** would build an integer of more than {MAX_POWER_BITS} bits")
    return base**exponent


class _BoundedCodeGenerator(CodeGenerator):
    """Routes every for-loop's iterable and every `~` through the environment's bounds."""

    def visit_For(self, node: nodes.For, frame: Frame) -> None:
        if not getattr(node, "_bounded", False):
            node.iter = nodes.Call(
                nodes.EnvironmentAttribute("bounded_iter"),
                [node.iter],
                [],
                None,
                None,
                lineno=node.iter.lineno,
            )
            node._bounded = True  # type: ignore[attr-defined]  # compile once per node
        super().visit_For(node, frame)

    def visit_Concat(self, node: nodes.Concat, frame: Frame) -> None:
        self.write("environment.bounded_concat((")
        for arg in node.nodes:
            self.visit(arg, frame)
            self.write(", ")
        self.write("))")


class BoundedSandbox(ImmutableSandboxedEnvironment):
    """Jinja2's immutable sandbox, bounded in time and size (see the module's text)."""

    code_generator_class = _BoundedCodeGenerator
    intercepted_binops = frozenset({"*", "**", "%", "+"})

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self._local = threading.local()
        self.binop_table["**"] = _power
        self.filters = {name: self._bounded_filter(name, f) for name, f in self.filters.items()}

    # --- the deadline --------------------------------------------------------------------

    def check_deadline(self) -> None:
        deadline: float | None = getattr(self._local, "deadline", None)
        if deadline is not None and time.monotonic() > deadline:
            raise TemplateLimit(f"rendering took longer than {MAX_SECONDS:g} s")

    def bounded_iter(self, iterable: Iterable[Any]) -> Iterator[Any]:
        for item in iterable:
            self.check_deadline()
            yield item

    def bounded_concat(self, parts: Iterable[Any]) -> str:
        self.check_deadline()
        texts = [str(p) for p in parts]
        _check_size(sum(map(len, texts)), "a string joined with ~")
        return "".join(texts)

    # --- the sandbox's hooks -------------------------------------------------------------

    def call(
        __self, __context: jinja2.runtime.Context, __obj: Any, *args: Any, **kwargs: Any
    ) -> Any:
        __self.check_deadline()
        for arg in (*args, *kwargs.values()):
            _check_size(_size(arg), "an argument")
        # The sandbox hands out str.format wrapped (functools.wraps keeps __wrapped__).
        target = getattr(__obj, "__wrapped__", __obj)
        name = getattr(target, "__name__", "")
        owner = getattr(target, "__self__", None)
        if isinstance(owner, str):
            if name in _WIDTH_METHODS:
                _check_width(name, (*args, *kwargs.values()))
            elif name in _FORMAT_METHODS:
                _check_format(owner)
        result = super().call(__context, __obj, *args, **kwargs)
        _check_size(_size(result), f"the result of {name or 'a call'}")
        return result

    def call_binop(
        self, context: jinja2.runtime.Context, operator_: str, left: Any, right: Any
    ) -> Any:
        self.check_deadline()
        if operator_ == "*":
            for sequence, count in ((left, right), (right, left)):
                if _size(sequence) and isinstance(count, int):
                    _check_size(_size(sequence) * max(count, 0), "a repeated string or list")
        elif operator_ == "+" and _size(left) and _size(right):
            _check_size(_size(left) + _size(right), "a sum of strings or lists")
        elif operator_ == "%" and isinstance(left, str):
            _check_format(left)
        return super().call_binop(context, operator_, left, right)

    def getattr(self, obj: Any, attribute: str) -> Any:
        self.check_deadline()
        return super().getattr(obj, attribute)

    def getitem(self, obj: Any, argument: Any) -> Any:
        self.check_deadline()
        return super().getitem(obj, argument)

    def _bounded_filter(self, name: str, function: Callable[..., Any]) -> Callable[..., Any]:
        def bounded(*args: Any, **kwargs: Any) -> Any:
            self.check_deadline()
            if name in _WIDTH_FILTERS:
                _check_width(name, (*args[1:], *kwargs.values()))
            if name == "format" and args and isinstance(args[0], str):
                _check_format(args[0])
            if name == "join" and len(args) > 1:
                args = (args[0], _joined_items(args[1:]), *args[2:])
            result = function(*args, **kwargs)
            _check_size(_size(result), f"the result of filter {name}")
            return result

        # Keep pass_context / pass_environment markers: Jinja decides how to call by them.
        bounded.__dict__.update(getattr(function, "__dict__", {}))
        return bounded

    # --- compiling -----------------------------------------------------------------------

    def parse(
        self, source: str, name: str | None = None, filename: str | None = None
    ) -> nodes.Template:
        try:
            return super().parse(source, name, filename)
        except RecursionError:
            raise _too_nested(self, source) from None

    def compile(
        self,
        source: Any,
        name: str | None = None,
        filename: str | None = None,
        raw: bool = False,
        defer_init: bool = False,
    ) -> Any:
        # Jinja's parser and code generator recurse once per nesting level, and Python refuses
        # more than 20 nested blocks: a deeply nested template must be an error, not a crash.
        try:
            return super().compile(  # type: ignore[call-overload]  # one body, two overloads
                source, name, filename, raw, defer_init
            )
        except (RecursionError, SyntaxError):
            raise _too_nested(self, source if isinstance(source, str) else "") from None

    # --- rendering -----------------------------------------------------------------------

    def render(self, template: jinja2.Template, context: Mapping[str, Any], max_output: int) -> str:
        """`template` rendered with `context`, or TemplateLimit naming the line at fault."""
        self._local.deadline = time.monotonic() + MAX_SECONDS
        chunks: list[str] = []
        size = 0
        try:
            for chunk in template.generate(context):
                size += len(chunk)
                if size > max_output:
                    raise TemplateLimit(f"renders more than {max_output} characters")
                chunks.append(chunk)
        except TemplateLimit as exc:
            exc.line = exc.line or template_line(exc.__traceback__)
            raise
        except RecursionError as exc:
            raise TemplateLimit(
                "macros or loops call themselves too deeply", template_line(exc.__traceback__)
            ) from None
        except MemoryError as exc:
            raise TemplateLimit(
                "rendering ran out of memory", template_line(exc.__traceback__)
            ) from None
        finally:
            self._local.deadline = None
        return "".join(chunks)


def _joined_items(args: tuple[Any, ...]) -> list[Any]:
    """The items `join` is given (value, separator, ...), collected while counting their
    length, so that many long strings are refused before they are joined."""
    separator = args[1] if len(args) > 1 and isinstance(args[1], str) else ""
    items: list[Any] = []
    total = 0
    for item in args[0]:
        total += len(str(item)) + len(separator)
        _check_size(total, "a joined string")
        items.append(item)
    return items


def _too_nested(env: jinja2.Environment, source: str) -> TemplateLimit:
    """The error for a template nested too deeply to compile, at its most nested line."""
    depth = chain = deepest = 0
    line = None
    try:
        for lineno, kind, value in env.lex(source):
            if kind == "operator" and value in "([{":
                depth += 1
            elif kind == "operator" and value in ")]}":
                depth -= 1
            elif kind == "name" and value in _BLOCKS:
                depth += 1
            elif kind == "name" and value.startswith("end") and value[3:] in _BLOCKS:
                depth -= 1
            elif kind == "operator" and value in _BINARY:
                chain += 1  # a chain of operators nests as deeply as parentheses
            elif kind in ("variable_end", "block_end"):
                chain = 0
            if depth + chain > deepest:
                deepest, line = depth + chain, lineno
    except jinja2.TemplateSyntaxError:
        pass
    return TemplateLimit("the template nests expressions or blocks too deeply", line)


_BLOCKS = frozenset({"if", "for", "macro", "call", "filter", "block", "with"})
_BINARY = frozenset({"+", "-", "*", "/", "//", "%", "**", "~"})


def template_line(tb: TracebackType | None) -> int | None:
    """The template line of the innermost template frame of a traceback (Jinja rewrites
    tracebacks so that template frames carry the template's file and line)."""
    line = None
    while tb is not None:
        code = tb.tb_frame.f_code
        if (
            code.co_filename.startswith("<template>")
            or tb.tb_frame.f_globals.get("__jinja_template__") is not None
        ):
            line = tb.tb_lineno
        tb = tb.tb_next
    return line


__all__ = [
    "MAX_SECONDS",
    "MAX_SIZE",
    "MAX_WIDTH",
    "BoundedSandbox",
    "TemplateLimit",
    "template_line",
]
