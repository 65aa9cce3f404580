"""Error types: one user-facing error that the CLI and the HTTP layer print without a traceback."""

from __future__ import annotations


class KilnError(Exception):
    """A problem the user can fix: says what was received, what was expected, and how to fix it.

    ``status`` is the HTTP status the server answers with when this error reaches a client.
    """

    status: int = 400

    def __init__(self, message: str, *, hint: str | None = None, status: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint
        if status is not None:
            self.status = status

    def __str__(self) -> str:
        return f"{self.message} ({self.hint})" if self.hint else self.message


class NotFoundError(KilnError):
    """A named thing (model, version, case, engine) does not exist."""

    status = 404


class PayloadTooLargeError(KilnError):
    """A body, file, image or tensor is over a configured limit."""

    status = 413


class UnavailableError(KilnError):
    """The service cannot take the request now (queue full, dependency down); retry later."""

    status = 503

    def __init__(self, message: str, *, hint: str | None = None, retry_after_s: float = 1.0) -> None:
        super().__init__(message, hint=hint)
        self.retry_after_s = retry_after_s


class DeadlineExceededError(KilnError):
    """A request did not complete within its timeout."""

    status = 504


class EngineMismatchError(KilnError):
    """An engine artifact was built for other hardware or runtime versions than this machine has."""

    status = 409


class MissingDependencyError(KilnError):
    """An optional package is needed for a feature; the message names the pip command."""

    def __init__(self, package: str, feature: str) -> None:
        super().__init__(
            f"{package} must be installed to use {feature}",
            hint=f"pip install {package}",
        )
