"""`hotline serve`: the process that runs the parts together."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    pass
