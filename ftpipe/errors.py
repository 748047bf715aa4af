"""ftpipe's typed errors and the exit codes the CLI maps them to (documented in README)."""

from __future__ import annotations

EXIT_OK = 0
EXIT_STEP_FAILED = 1
EXIT_INVALID = 2  # invalid pipeline or usage
EXIT_GATE_BLOCKED = 3
EXIT_LOCKED = 4
EXIT_INTERRUPTED = 130


class FtpipeError(Exception):
    """An error a user can cause and fix; printed without a traceback."""

    exit_code = EXIT_STEP_FAILED

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message + (f"\n  hint: {self.hint}" if self.hint else "")


class UsageError(FtpipeError):
    exit_code = EXIT_INVALID


class PipelineInvalid(FtpipeError):
    """The pipeline file has problems; ``problems`` are already formatted lines."""

    exit_code = EXIT_INVALID

    def __init__(self, report: str, problems: list) -> None:
        super().__init__(report)
        self.problems = problems


class StepError(FtpipeError):
    """A step failed for a reason the user can act on (bad data, a remote job failed)."""

    exit_code = EXIT_STEP_FAILED


class RemoteError(StepError):
    """A remote service (Hub, OpenAI, Azure, Ray) answered with an error."""

    def __init__(
        self,
        service: str,
        message: str,
        *,
        status: int | None = None,
        code: str | None = None,
        request_id: str | None = None,
        job_id: str | None = None,
        hint: str | None = None,
    ) -> None:
        details = ", ".join(
            f"{k} {v}" for k, v in (("status", status), ("code", code), ("request", request_id), ("job", job_id)) if v
        )
        super().__init__(f"{service}: {message}" + (f" ({details})" if details else ""), hint=hint)
        self.service, self.status, self.code, self.request_id, self.job_id = service, status, code, request_id, job_id


class LockHeld(FtpipeError):
    exit_code = EXIT_LOCKED


class MissingDependency(FtpipeError):
    """An optional dependency is not installed: the message gives the install command."""

    exit_code = EXIT_INVALID

    def __init__(self, package: str, extra: str, what: str) -> None:
        super().__init__(
            f"{what} needs the '{package}' package, which is not installed",
            hint=f'pip install "ftpipe[{extra}]"',
        )


class PluginError(FtpipeError):
    exit_code = EXIT_INVALID


class NotFound(FtpipeError):
    exit_code = EXIT_INVALID
