"""Plugin subcommands (``plugboard_commands``): found through the settings, run with the app."""

from __future__ import annotations

import textwrap

import pytest

from plugboard.cli import main

PLUGIN = '''
import asyncio
from plugboard import hookimpl, keys
from plugboard.commands import Command


async def _count(ctx):
    async with ctx.running(ctx.build_app()) as app:
        # Started: the records store exists only between start-up and shutdown.
        assert app[keys.RECORDS] is not None
        print("tables:", ",".join(sorted(app[keys.METADATA].tables)))
        print("greeting:", ctx.args.greeting)
    return 0


def _add_arguments(parser):
    parser.add_argument("--greeting", default="hello")


@hookimpl
def plugboard_commands():
    return [Command("count", "print what the app has", lambda ctx: asyncio.run(_count(ctx)), _add_arguments)]
'''

CLASHING = '''
from plugboard import hookimpl
from plugboard.commands import Command

@hookimpl
def plugboard_commands():
    return [Command("serve", "a second serve", lambda ctx: 0)]
'''


def write_project(tmp_path, module: str, source: str) -> None:
    (tmp_path / f"{module}.py").write_text(source)
    (tmp_path / "settings.yaml").write_text(
        textwrap.dedent(
            f"""
            plugins: [{module}]
            server: {{data_dir: {tmp_path / 'var'}}}
            """
        )
    )


def test_a_plugin_command_runs_with_the_started_app(tmp_path, monkeypatch, capsys):
    monkeypatch.syspath_prepend(str(tmp_path))
    write_project(tmp_path, "pb_cmd_plugin", PLUGIN)
    assert main(["count", "--root", str(tmp_path), "--greeting", "hi"]) == 0
    out = capsys.readouterr().out
    assert "greeting: hi" in out
    assert "tables:" in out


def test_plugin_commands_are_listed_in_help(tmp_path, monkeypatch, capsys):
    monkeypatch.syspath_prepend(str(tmp_path))
    write_project(tmp_path, "pb_cmd_plugin_help", PLUGIN)
    monkeypatch.setenv("PLUGBOARD_ROOT", str(tmp_path))
    with pytest.raises(SystemExit):
        main(["--help"])
    assert "print what the app has (plugin pb_cmd_plugin_help)" in capsys.readouterr().out


def test_a_command_named_like_a_core_command_fails(tmp_path, monkeypatch, capsys):
    monkeypatch.syspath_prepend(str(tmp_path))
    write_project(tmp_path, "pb_cmd_clash", CLASHING)
    assert main(["other", "--root", str(tmp_path)]) == 2
    assert "plugin 'pb_cmd_clash' adds command 'serve', which plugboard core already has" in capsys.readouterr().err


def test_a_plugin_command_when_settings_do_not_load_names_the_cause(tmp_path, capsys):
    (tmp_path / "settings.yaml").write_text("plugins: [no_such_plugin_xyz]\n")
    assert main(["worker", "--root", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "no_such_plugin_xyz" in err
    assert "invalid choice" not in err


def test_core_commands_do_not_need_plugin_commands_to_load(tmp_path, capsys):
    (tmp_path / "settings.yaml").write_text("plugins: [no_such_plugin_xyz]\n")
    # `plugins` lists installed and declared plugins even when one is missing.
    assert main(["plugins", "--root", str(tmp_path)]) == 0
    assert "no_such_plugin_xyz" in capsys.readouterr().out
