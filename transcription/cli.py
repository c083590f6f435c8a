"""`hotline transcribe`, `hotline models`, `hotline worker`, `hotline extract`."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    _register_transcribe(sub)
    _register_models(sub)
    _register_worker(sub)
    _register_extract(sub)


def _register_transcribe(sub: argparse._SubParsersAction) -> None:
    """hotline transcribe [--model PATH] [--json] FILE… (engine work)."""


def _register_models(sub: argparse._SubParsersAction) -> None:
    """hotline models list|path|verify (engine work)."""


def _register_worker(sub: argparse._SubParsersAction) -> None:
    """hotline worker [--once] [--processes N] (jobs work)."""


def _register_extract(sub: argparse._SubParsersAction) -> None:
    """hotline extract [--json] TEXT (text post-processing work)."""
