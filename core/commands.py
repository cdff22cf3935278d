"""Subcommands that plugins add to the ``plugboard`` tool (``plugboard_commands``).

A plugin returns :class:`Command` objects; the CLI adds each as a subcommand
with the usual ``--root/--config/--env`` options. ``run`` gets a
:class:`CommandContext`, which builds the app from the same settings as
``plugboard serve`` and can run its start-up and shutdown without an HTTP
server (:meth:`CommandContext.running`), so a worker process has every
plugin's providers, tables and tasks exactly as the server does.
"""

from __future__ import annotations

import argparse
import contextlib
from pathlib import Path
from typing import TYPE_CHECKING, AsyncIterator, Callable

import attrs

if TYPE_CHECKING:
    from aiohttp import web

    from plugboard.settings import Settings


@attrs.define(frozen=True)
class Command:
    """One ``plugboard <name>`` subcommand.

    :param name: the subcommand's name (``worker``).
    :param help: one line for ``plugboard --help``.
    :param run: ``run(ctx: CommandContext) -> int``, the exit status.
    :param add_arguments: optional ``add_arguments(parser)`` adding the
        command's own options to its ``argparse`` parser.
    """

    name: str
    help: str
    run: Callable[["CommandContext"], int]
    add_arguments: Callable[[argparse.ArgumentParser], None] | None = None


@attrs.define
class CommandContext:
    """What a plugin command runs with: its parsed arguments and the app's settings."""

    args: argparse.Namespace

    def settings(self) -> "Settings":
        from plugboard.settings import Settings

        return Settings.load(Path(self.args.root).resolve(), env=self.args.env, config_file=self.args.config)

    def build_app(self) -> "web.Application":
        """The app exactly as ``plugboard serve`` builds it (nothing started yet)."""
        from plugboard.app import create_app

        return create_app(self.settings())

    @staticmethod
    @contextlib.asynccontextmanager
    async def running(app: "web.Application") -> AsyncIterator["web.Application"]:
        """Run the app's start-up (Redis, records, plugin lifespans and start-up
        hooks) on entry and its shutdown on exit, without binding a port."""
        from aiohttp import web

        runner = web.AppRunner(app, handle_signals=False)
        await runner.setup()
        try:
            yield app
        finally:
            await runner.cleanup()


__all__ = ["Command", "CommandContext"]
