"""The example config documents every key and is itself a valid config."""

from __future__ import annotations

import tomllib
from pathlib import Path

from pydantic import BaseModel

from config.settings import Settings, load_settings

EXAMPLE = Path(__file__).resolve().parent.parent / "config" / "hotline.example.toml"


def keys(model: type[BaseModel], prefix: str = "") -> set[str]:
    out: set[str] = set()
    for name, field in model.model_fields.items():
        ann = field.annotation
        if isinstance(ann, type) and issubclass(ann, BaseModel) and prefix == "":
            out |= keys(ann, f"{name}.")
        else:
            out.add(prefix + name)
    return out


def test_example_loads(env) -> None:  # type: ignore[no-untyped-def]
    settings = load_settings(EXAMPLE)
    assert settings == Settings()


def test_example_mentions_every_key() -> None:
    text = EXAMPLE.read_text(encoding="utf-8")
    missing = []
    for key in sorted(keys(Settings)):
        section, name = key.split(".", 1)
        if f"[{section}]" not in text or not any(
            line.lstrip("# ").startswith((f"{name} =", f"[{section}.{name}]", f"{name}=")) for line in text.splitlines()
        ):
            missing.append(key)
    assert not missing, f"keys not documented in {EXAMPLE.name}: {missing}"
    tomllib.loads(text)
