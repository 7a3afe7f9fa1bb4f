"""The command line's front door: --version, a bare call, an unknown subcommand, --help."""

from __future__ import annotations

from click.testing import CliRunner

import ferricflowd
from ferricflowd.cli import cli


def invoke(*args: str, env: dict[str, str] | None = None):
    return CliRunner().invoke(cli, list(args), prog_name="ferricflowd", env=env)


def test_version() -> None:
    result = invoke("--version")
    assert result.exit_code == 0 and result.output.strip() == (
        f"ferricflowd, version {ferricflowd.__version__}")


def test_a_bare_call_prints_the_help_even_with_a_config_in_the_environment() -> None:
    result = invoke(env={"FERRICFLOWD_CONFIG": "/nonexistent/flows.toml"})
    assert result.exit_code == 0, result.output
    assert "Usage: ferricflowd" in result.output and "Commands:" in result.output


def test_an_unknown_subcommand_is_an_error_naming_it() -> None:
    result = invoke("stat")
    assert result.exit_code == 2
    assert "No such command 'stat'" in result.output and "'stats'" in result.output


def test_options_first_still_mean_run() -> None:
    result = invoke("--config", "/nonexistent/flows.toml")
    assert result.exit_code == 2 and "config error" in result.output, result.output


def test_help_lists_exit_code_5() -> None:
    assert "5  store unreachable" in invoke("--help").output
