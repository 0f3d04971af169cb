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


class DivergenceError(LoraError):
    """Training produced a non-finite loss."""
