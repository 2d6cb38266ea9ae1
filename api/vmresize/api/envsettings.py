"""How a process setting becomes a value: the base of the operator's and the agent's settings.

Both processes read their settings through :class:`EnvSettings` (pydantic-settings), so they
parse alike:

- every field names its environment variable (``validation_alias="VMRESIZE_..."``) and has a
  description; both are checked when a settings class is defined;
- an unset or empty variable keeps the field's default (a field without one is required);
- booleans are ``true/false``, ``1/0``, ``yes/no``, ``on/off`` (any case); anything else is
  an error, as is a number outside a field's bounds: nothing is silently clamped;
- only the environment is read (no ``.env`` file, no secrets directory).

An invalid value raises :class:`SettingsError` naming the variable, at start-up.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from contextvars import ContextVar
from typing import Any, ClassVar, Self

from pydantic import ValidationError
from pydantic_settings import (
    BaseSettings,
    EnvSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

ENV_PREFIX = "VMRESIZE_"


#: The environment :meth:`EnvSettings.from_env` reads; unset, ``os.environ``. (pydantic-settings
#: builds its sources inside validation, so the mapping is handed over this way.)
_ENV: ContextVar[Mapping[str, str] | None] = ContextVar("vmresize_settings_env", default=None)


class SettingsError(ValueError):
    """Settings that do not validate; the message names each offending variable."""


class _MappingEnvSource(EnvSettingsSource):
    """pydantic-settings' own environment source, reading a given mapping, and only the
    fields' ``VMRESIZE_*`` names (by default it would also read a variable named like a
    field, e.g. ``max_attempts``, since fields may be given by name in code)."""

    def __init__(self, settings_cls: type[BaseSettings], env: Mapping[str, str]) -> None:
        self._env = env
        self._names = {f.validation_alias for f in settings_cls.model_fields.values()}
        super().__init__(settings_cls)

    def _load_env_vars(self) -> Mapping[str, str | None]:
        return {k: v for k, v in self._env.items() if k in self._names and v.strip() != ""}


class EnvSettings(BaseSettings):
    """Settings of one process, every field read from its own ``VMRESIZE_*`` variable."""

    model_config = SettingsConfigDict(
        frozen=True, case_sensitive=True, env_ignore_empty=True, extra="ignore",
        str_strip_whitespace=True, validate_default=True, validate_by_name=True)

    #: What a variable is called in error messages (subclasses add their flag).
    flag_names: ClassVar[bool] = False

    @classmethod
    def __pydantic_init_subclass__(cls, **kwargs: Any) -> None:
        super().__pydantic_init_subclass__(**kwargs)
        for name, info in cls.model_fields.items():
            alias = info.validation_alias
            if not (isinstance(alias, str) and alias.startswith(ENV_PREFIX)):
                raise TypeError(f"{cls.__name__}.{name} needs validation_alias='VMRESIZE_...'")
            if not info.description:
                raise TypeError(f"{cls.__name__}.{name} needs a description")

    @classmethod
    def settings_customise_sources(
            cls, settings_cls: type[BaseSettings], init_settings: PydanticBaseSettingsSource,
            env_settings: PydanticBaseSettingsSource, dotenv_settings: PydanticBaseSettingsSource,
            file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """Only init arguments and the ``VMRESIZE_*`` variables of the mapping given to
        :meth:`from_env` (else ``os.environ``): no dotenv or secret files."""
        env = _ENV.get()
        return init_settings, _MappingEnvSource(settings_cls, os.environ if env is None else env)

    @classmethod
    def env_name(cls, field: str) -> str:
        """The environment variable of ``field``."""
        alias = cls.model_fields[field].validation_alias
        assert isinstance(alias, str)
        return alias

    @classmethod
    def flag(cls, field: str) -> str:
        """The command-line flag of ``field`` (processes that take flags)."""
        return "--" + field.replace("_", "-")

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None,
                 overrides: Mapping[str, Any] | None = None) -> Self:
        """The settings from ``env`` (default ``os.environ``), with ``overrides`` (by field
        name, e.g. command-line flags) winning; raises :class:`SettingsError`."""
        given = {cls.env_name(n): v for n, v in (overrides or {}).items() if v is not None}
        token = _ENV.set(env)
        try:
            return cls(**given)
        except ValidationError as e:
            raise SettingsError(cls._explain(e, set(given))) from None
        finally:
            _ENV.reset(token)

    @classmethod
    def _explain(cls, error: ValidationError, overridden: set[str]) -> str:
        by_alias = {cls.env_name(n): n for n in cls.model_fields}
        lines = []
        for err in error.errors():
            alias = str(err["loc"][0]) if err["loc"] else ""
            field = by_alias.get(alias)
            label = alias
            if field is not None and cls.flag_names:
                label = f"{alias} ({cls.flag(field)})"
            if err["type"] == "missing":
                lines.append(f"{label} is required")
            else:
                source = cls.flag(field) if alias in overridden and field else alias
                lines.append(f"{label}: {err['msg']} (got {source}={err['input']!r})")
        return f"invalid {cls.__name__}: " + "; ".join(lines)
