"""What every ``layerfuse`` command's parser shares: one-line usage errors, argument types, common options."""

from __future__ import annotations

import argparse
import re
from typing import Any, NoReturn


class Parser(argparse.ArgumentParser):
    """An argument parser whose usage errors are one line, like every other user error (exit 2)."""

    def error(self, message: str) -> NoReturn:
        """Print one ``layerfuse ...: error:`` line pointing at ``--help`` and exit 2."""
        self.exit(2, f"{self.prog}: error: {message}; see {self.prog} --help\n")


def csv_list(text: str) -> tuple[str, ...]:
    """A comma list, blanks dropped."""
    return tuple(p.strip() for p in text.split(",") if p.strip())


def batch_size(text: str) -> int:
    """``auto`` (0) or a positive integer."""
    if text == "auto":
        return 0
    try:
        return positive_int(text)
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(f"invalid batch size {text!r}: use auto or a positive integer") from None


def positive_int(text: str) -> int:
    """A positive integer, else an argparse error naming the value."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be a positive integer")
    return value


def add_common(parser: argparse.ArgumentParser) -> None:
    """``-c/--config``, ``-s/--set`` and ``-v``, shared by every command."""
    parser.add_argument("-c", "--config", help="YAML config file (section: {field: value})")
    parser.add_argument(
        "-s",
        "--set",
        dest="sets",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config key, e.g. --set train.lr=3e-4 (repeatable)",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging and full tracebacks")


def subparser(sub: Any, name: str, help_text: str, epilog: str) -> argparse.ArgumentParser:
    """A command's parser with its help, examples (``epilog``) and the common options."""
    parser: argparse.ArgumentParser = sub.add_parser(
        name, help=help_text, description=help_text, epilog=epilog, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_common(parser)
    return parser


def quiet_transformers() -> None:
    """Hide transformers' weight-loading bars; our own per model x split bar is the one that matters."""
    from transformers.utils import logging as hf_logging

    # transformers leaves these two unannotated
    hf_logging.disable_progress_bar()  # type: ignore[no-untyped-call]
    hf_logging.set_verbosity_error()  # type: ignore[no-untyped-call]


# Warnings about how our own code uses a library (Optuna's experimental heartbeat, MLflow's advice on the pyfunc
# model's type hints): nothing a user can act on, and they were printed, with colour codes, before a command's
# one-line error. MLflow raises its own with a filter of its own ("once"), so they are dropped where shown.
LIBRARY_NOTICES = re.compile(r"is an experimental feature|type hints? (to the `predict` method|is inferred as AnyType)")


def quiet_warnings(verbose: bool) -> None:
    """Hide ``LIBRARY_NOTICES`` (shown with ``-v``), so a command's first line is its own output or error."""
    import warnings

    shown = warnings.showwarning
    if verbose or getattr(shown, "quiet", False):
        return

    def show(message: Warning | str, category: type[Warning], *args: Any, **kwargs: Any) -> None:
        if not LIBRARY_NOTICES.search(str(message)):
            shown(message, category, *args, **kwargs)

    show.quiet = True  # type: ignore[attr-defined]
    warnings.showwarning = show
