"""Command-line parsers shared by every script: help that shows defaults in plain text, and
short answers to a mistyped flag.

Every script builds its parser as ``cli.ArgumentParser(description=cli.plain_text(__doc__),
formatter_class=cli.HelpFormatter)`` and groups its flags with ``add_argument_group`` by
what they are for. The module docstrings are written for Sphinx-style readers (``:mod:`x```,
double backticks); :func:`plain_text` turns them into what a terminal should show. Flags
made from a config dataclass's fields: :func:`add_config_flags`, read back by :func:`config_kwargs`.
"""
from __future__ import annotations

import argparse
import dataclasses
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


# ------------------------------------------------------------------- config flags
def add_config_flags(parser: Any, cls: type, title: str) -> None:
    """One command-line flag per field of the dataclass ``cls``, from its metadata (help, choices).

    ``--<field>`` takes a value of the default's type; a bool defaulting to False becomes a
    switch; a bool defaulting to True is switched off by its ``flag`` name (``--no_audio``);
    fields with ``flag=False`` get none. :func:`config_kwargs` maps the parsed flags back."""
    group = parser.add_argument_group(title)
    for f in dataclasses.fields(cls):
        md = f.metadata
        if md.get("flag", True) is False:
            continue
        if isinstance(f.default, bool):
            name = md.get("flag", f.name) if f.default else f.name
            group.add_argument(f"--{name}", action="store_true", help=md.get("help"))
        else:
            group.add_argument(f"--{f.name}", type=type(f.default), default=f.default, choices=md.get("choices"),
                               help=md.get("help"))


def config_kwargs(cls: type, args: Any) -> dict[str, Any]:
    """The fields of ``cls`` that :func:`add_config_flags` made flags for, read from parsed ``args``."""
    out = {}
    for f in dataclasses.fields(cls):
        md = f.metadata
        if md.get("flag", True) is False:
            continue
        if isinstance(f.default, bool) and f.default:
            out[f.name] = not getattr(args, md.get("flag", f.name))
        else:
            out[f.name] = getattr(args, f.name)
    return out


def explicit_dests(parser: argparse.ArgumentParser, argv: Sequence[str] | None) -> set[str]:
    """The ``dest`` of every flag written in ``argv`` (not left at its default): what the user
    asked for on this command line. Parses once more with every default suppressed."""
    saved = [(action, action.default) for action in parser._actions]
    defaults = parser._defaults
    try:
        for action, _ in saved:
            action.default = argparse.SUPPRESS
        parser._defaults = {}
        namespace, _ = argparse.ArgumentParser.parse_known_args(parser, argv)
    finally:
        for action, default in saved:
            action.default = default
        parser._defaults = defaults
    return set(vars(namespace))
