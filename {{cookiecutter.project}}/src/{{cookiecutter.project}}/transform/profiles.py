"""What the dbt project reads from its caller: the variables of dbt/profiles.yml and the `--vars`.

dbt/profiles.yml takes its connection settings (and secrets) from environment variables, which
`dbt_environment` derives from the settings (they may come from `.env` rather than the
environment); only the dbt call's environment sees them, the password included. The
session-length bounds of the models and their tests come in as dbt `--vars` (`session_vars`), so
their defaults are written once, in schema.py and the settings; a `dbt build` by hand without them
stops on dbt's "Required var 'min_session_length' not found" (see dbt/dbt_project.yml). The raw
log's schema comes in as `raw_schema` (`dbt_vars`): a pull request's own on Snowflake.
"""

from __future__ import annotations

from ..schema import MAX_SESSION_LENGTH, MIN_SESSION_LENGTH
from ..settings import Settings
from ..warehouse.base import RAW_SCHEMA
from ..warehouse.snowflake_backend import REQUIRED_SETTINGS, require_settings


def session_vars(max_session_length: int = MAX_SESSION_LENGTH) -> dict[str, int]:
    """The dbt vars bounding the sessions kept for training (`training_sessions`)."""
    return {"min_session_length": MIN_SESSION_LENGTH, "max_session_length": max_session_length}


def dbt_vars(settings: Settings) -> dict[str, int | str]:
    """The `--vars` of a dbt call: the session-length bounds and the raw log's schema."""
    raw_schema = settings.snowflake_raw_schema if settings.warehouse == "snowflake" else RAW_SCHEMA
    return session_vars(settings.max_session_length) | {"raw_schema": raw_schema}


def dbt_environment(settings: Settings) -> dict[str, str]:
    """The variables dbt/profiles.yml reads for the configured warehouse, from the settings.

    The local target reads DUCKDB_PATH and DUCKDB_MEMORY_LIMIT, which `core.run_dbt` sets from its
    arguments; the snowflake target reads the SNOWFLAKE_* variables returned here.
    """
    if settings.warehouse != "snowflake":
        return {}
    require_settings(settings, needed_by="dbt's snowflake target")
    assert settings.snowflake_password is not None
    values = {
        variable: str(getattr(settings, name))
        for name, variable in REQUIRED_SETTINGS
        if name != "snowflake_password"
    }
    values |= {
        "SNOWFLAKE_PASSWORD": settings.snowflake_password.get_secret_value(),
        "SNOWFLAKE_HOST": settings.snowflake_host or "",
        "SNOWFLAKE_PORT": str(settings.snowflake_port),
        "SNOWFLAKE_PROTOCOL": settings.snowflake_protocol,
        "SNOWFLAKE_TIMEOUT_S": str(settings.snowflake_timeout_s),
    }
    if settings.snowflake_host:
        # An emulator (fakesnow) cannot run dbt unit tests: dbt-snowflake stages their inputs in
        # `create temporary table <db>.<schema>.<name>`, which DuckDB rejects. The real service
        # runs them; the local DuckDB target runs them everywhere.
        values["DBT_EXCLUDE_RESOURCE_TYPES"] = "unit_test"
    return values
