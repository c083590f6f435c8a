"""Regenerate the single initial migration from the models.

Until the first release there is one migration; after it, add migrations with
`alembic revision --autogenerate` instead of running this.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

from alembic import command

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from config.db import alembic_config  # noqa: E402


def main() -> None:
    versions = ROOT / "migrations" / "versions"
    for f in versions.glob("*.py"):
        f.unlink()
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{tmp}/regen.db"
        cfg = alembic_config(url)
        command.revision(cfg, message="initial schema", autogenerate=True, rev_id="0001")
    print("wrote", *versions.glob("*.py"))


if __name__ == "__main__":
    main()
