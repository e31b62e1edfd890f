"""Frozen settings read from one environment mapping with pydantic-settings, failing with the variable's name.

It lives in the lowest layer so the storage providers and workers/settings.py (and celeryconfig.py) parse the
environment one way: each model names its variables by field name (case-insensitive, or a validation_alias), an
unset or blank variable means the field's default, values are stripped unless a model lists them as raw
(secrets are kept byte for byte), and a bad value raises the model's configuration error naming the variable.
"""
from __future__ import annotations

import os
from typing import Any, ClassVar, Mapping

from pydantic import ValidationError
from pydantic_settings import BaseSettings, EnvSettingsSource, SettingsConfigDict
from pydantic_settings.sources.utils import parse_env_vars


class _MappingEnvSource(EnvSettingsSource):
    """pydantic-settings' environment source, reading the mapping it is given instead of os.environ (so tests and
    create_app(test_config) pass a plain dict). Overrides _load_env_vars, the one hook the source reads through:
    pydantic-settings is pinned in requirements.txt and test_settings.py covers this."""

    def __init__(self, settings_cls: type[BaseSettings], env: Mapping[str, str]) -> None:
        self._mapping = env
        super().__init__(settings_cls)

    def _load_env_vars(self) -> Mapping[str, str | None]:
        return parse_env_vars(self._mapping, self.case_sensitive, self.env_ignore_empty, self.env_parse_none_str)


class EnvSettings(BaseSettings):
    """Base of every settings model: frozen, unknown variables ignored, built only through from_env."""

    model_config = SettingsConfigDict(frozen=True, extra="ignore", case_sensitive=False)

    config_error: ClassVar[type[Exception]] = ValueError
    """What a bad value raises; each layer names its own (StorageConfigError, ConfigurationError)."""
    raw_variables: ClassVar[frozenset[str]] = frozenset()
    """Variables kept exactly as set (passwords): never stripped, never echoed in an error."""
    secret_variables: ClassVar[frozenset[str]] = frozenset()
    """Variables never echoed in an error (tokens, keys)."""

    @classmethod
    def settings_customise_sources(cls, settings_cls: type[BaseSettings], init_settings: Any, env_settings: Any,
                                   dotenv_settings: Any, file_secret_settings: Any) -> tuple:
        """Only what the constructor is given: the environment is read through from_env alone, so a model built
        directly (a default, a test's fixture) never picks up the process's variables behind the caller's back."""
        return (init_settings,)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Any:
        """The settings from env (os.environ when None); a bad or missing value raises config_error naming it."""
        env = os.environ if env is None else env
        values = {name: value if name.upper() in cls.raw_variables else value.strip()
                  for name, value in env.items() if isinstance(value, str) and value.strip()}
        try:
            return cls(_build_sources=((_MappingEnvSource(cls, values),), {}))
        except ValidationError as exc:
            raise cls.config_error(cls._explain(exc)) from None

    @classmethod
    def _explain(cls, exc: ValidationError) -> str:
        """One line per bad variable: its name, what is wrong and (unless it is a secret) what was given."""
        lines = []
        for error in exc.errors():
            message = error["msg"].removeprefix("Value error, ")
            if not error["loc"]:  # a rule across variables: its message names them
                lines.append(message)
                continue
            name = str(error["loc"][0]).upper()
            if error["type"] == "missing":
                lines.append(f"{name} must be set")
                continue
            shown = "" if name in cls.raw_variables | cls.secret_variables or not isinstance(error.get("input"), str) \
                else f", got {error['input']!r}"
            lines.append(f"{name}: {message}{shown}")
        return "; ".join(lines)
