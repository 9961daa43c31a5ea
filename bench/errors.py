"""The error every check of a config value raises (bench.config, bench.models.targets, methods, tasks)."""


class ConfigError(ValueError):
    """A config value that cannot work; the message names the key, the value and what is valid."""
