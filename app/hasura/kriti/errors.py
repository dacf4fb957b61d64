"""Where a Kriti error is and why: the `SerializedError` of kriti-lang (`Kriti/Error.hs`), with a source span."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Span:
    """Character offsets [start, end) into the template; `a | b` spans both (`Semigroup Span` in Spans.hs)."""

    start: int
    end: int

    def __or__(self, other: Span) -> Span:
        return Span(min(self.start, other.start), max(self.end, other.end))


class KritiError(ValueError):
    """A Kriti parse or evaluation error: kriti-lang's error code, its message, and where in the template."""

    def __init__(self, code: str, message: str, span: Span, source: str):
        self.code, self.message, self.span = code, message, span
        line = source.count("\n", 0, span.start) + 1
        column = span.start - (source.rfind("\n", 0, span.start) + 1) + 1
        self.line, self.column = line, column
        super().__init__(f"{message} (line {line}, column {column})")


class KritiParseError(KritiError):
    """The template is not Kriti (Hasura refuses it in `FromJSON KritiTemplate`)."""


class KritiEvalError(KritiError):
    """Evaluation failed (`EvalError` in Eval.hs; Hasura answers `template-resolution-failed`)."""
