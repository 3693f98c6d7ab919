"""User-facing failures. Each carries its exit code; only `cli.main` turns them into exits."""

from __future__ import annotations


class MonitorError(Exception):
    exit_code = 1


class ConfigError(MonitorError):
    """One problem in the config, at a dotted key path (`models.fraud.windows[1]`)."""

    exit_code = 2

    def __init__(self, path: str, message: str) -> None:
        super().__init__(f"{path}: {message}" if path else message)
        self.path = path


class ConfigErrors(MonitorError):
    """Every problem found in one config, so `check-config` can print them all."""

    exit_code = 2

    def __init__(self, errors: list[ConfigError]) -> None:
        super().__init__("\n".join(str(e) for e in errors))
        self.errors = errors


class StateError(MonitorError):
    """The state directory cannot be used (missing permissions, not a directory)."""

    exit_code = 1



class CheckpointError(MonitorError):
    """Saved state that cannot be used: corrupt, truncated, from an unknown version, or
    well-formed but not what this config can hold. The daemon moves it aside and starts
    fresh; nothing else a restore raises is caught (a schema bug must fail loudly)."""
