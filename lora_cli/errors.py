"""Domain errors. Each carries the exit code the CLI turns it into."""


class LoraError(Exception):
    """An expected failure, written for the person at the terminal."""

    exit_code = 1


class ConfigError(LoraError):
    """A config file, override or option is invalid. One message per problem."""

    exit_code = 2

    def __init__(self, problems: list[str] | str):
        self.problems = [problems] if isinstance(problems, str) else list(problems)
        super().__init__("\n".join(self.problems))


class RunError(LoraError):
    """A run folder is missing, incomplete or not in the state a stage needs."""


class DamageError(RunError):
    """Something a run folder holds is not what lora wrote: `problem` says what and where,
    `fix` what to do about it."""

    def __init__(self, problem: str, fix: str):
        self.problem, self.fix = problem, fix
        super().__init__(f"{problem}; {fix}")


class DivergenceError(LoraError):
    """Training produced a non-finite loss."""


class Interrupted(LoraError):
    """The person stopped the command (Ctrl-C, SIGINT) or the system asked it to (SIGTERM).

    `resume_hint` is filled in by the command, the one layer that knows how it was called.
    """

    def __init__(self, message: str, signal_name: str = "SIGINT", resume_hint: str = ""):
        self.message, self.signal_name, self.resume_hint = message, signal_name, resume_hint
        self.exit_code = 143 if signal_name == "SIGTERM" else 130  # 128 + the signal's number
        super().__init__(f"{message}; {resume_hint}" if resume_hint else message)

    def with_hint(self, hint: str) -> "Interrupted":
        return Interrupted(self.message, self.signal_name, hint)


def signal_name(exc: BaseException) -> str:
    """SIGTERM when our SIGTERM handler raised `exc`, else SIGINT (Ctrl-C)."""
    return "SIGTERM" if exc.args[:1] == ("SIGTERM",) else "SIGINT"
