"""Published SHA-256 lists of known Vosk models (one <model-name>.sha256 per model)."""
