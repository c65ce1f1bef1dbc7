"""Command-line parsers shared by every script: help that shows defaults in plain text, and
short answers to a mistyped flag.

Every script builds its parser as ``cli.ArgumentParser(description=cli.plain_text(__doc__),
formatter_class=cli.HelpFormatter)`` and groups its flags with ``add_argument_group`` by
what they are for. The module docstrings are written for Sphinx-style readers (``:mod:`x```,
double backticks); :func:`plain_text` turns them into what a terminal should show.
"""
from __future__ import annotations

import argparse
import difflib
import re
from typing import Any, Sequence

# :role:`target` (Sphinx cross-references) and ``literal`` (reST inline code)
_ROLE = re.compile(r":[a-z]+:`~?([^`]+)`")
_LITERAL = re.compile(r"``([^`]+)``")


def plain_text(doc: str | None) -> str:
    """A docstring as plain text for ``--help``: Sphinx roles (``:mod:`evaluation```) become their
    target's name, double-backtick literals their text; line breaks and indentation are kept."""
    if not doc:
        return ""
    return _LITERAL.sub(r"\1", _ROLE.sub(r"\1", doc)).strip("\n")


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """The description as written (its paragraphs and lists kept); each flag's help followed by
    ``(default: X)`` where the default means something: not for required flags, switches, or
    defaults of None or "" (their help says what leaving them out does), nor when the help
    already speaks of its default."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        default = action.default
        if (action.required or not action.option_strings or action.nargs == 0 or default is None
                or default == "" or default is argparse.SUPPRESS or "(default" in text or "%(default)" in text):
            return text
        return f"{text} (default: %(default)s)" if text else "default: %(default)s"


def closest_flags(word: str, parser: argparse.ArgumentParser, n: int = 3) -> list[str]:
    """The parser's long flags nearest to ``word`` (a mistyped flag, ``=value`` ignored), best first."""
    flags = [s for a in parser._actions for s in a.option_strings if s.startswith("--")]
    return difflib.get_close_matches(word.split("=", 1)[0], flags, n=n, cutoff=0.6)


class ArgumentParser(argparse.ArgumentParser):
    """argparse with answers that fit on two lines: an unknown flag is named with the closest
    valid flags (``--n_fture``: did you mean --n_future?), any other mistake with its message,
    each followed by where the full list is (``--help``) instead of the whole usage (dozens of
    lines that hide the one that matters). Exit status 2, as argparse's."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", HelpFormatter)
        super().__init__(*args, **kwargs)

    def parse_args(self, args: Sequence[str] | None = None, namespace: Any = None) -> argparse.Namespace:  # type: ignore[override]
        parsed, extras = self.parse_known_args(args, namespace)
        if extras:
            self.error(self.unknown_message(extras))
        return parsed

    def unknown_message(self, extras: Sequence[str]) -> str:
        """What to say about the arguments no flag took: each unknown flag with its nearest
        valid ones; values that only followed an unknown flag are not listed again."""
        flags = [a for a in extras if a.startswith("-") and len(a) > 1 and not a[1].isdigit()]
        if not flags:
            return f"unexpected argument{'s' if len(extras) > 1 else ''}: {' '.join(extras)}"
        parts = []
        for flag in flags:
            near = closest_flags(flag, self)
            parts.append(f"unknown flag {flag.split('=', 1)[0]}"
                         + (f": did you mean {' or '.join(near)}?" if near else ""))
        return "; ".join(parts)

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message}\n(run with --help for every flag)\n")
