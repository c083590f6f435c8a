"""Fields extracted from a Chinese hotline message (interface fixed by the lead).

Contract used by the pipeline and `hotline transcribe --json`:

    extract(text: str) -> Extracted
    Extracted.phones: list[str]   # validated Chinese mobile / landline numbers, digits only, in spoken order
    Extracted.address: str | None # address hint
    low_confidence(words: list[dict], threshold: float) -> list[dict]  # words marked for the reviewer
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class Extracted:
    phones: list[str] = field(default_factory=list)
    address: str | None = None
