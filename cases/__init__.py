"""Cases, their lifecycle and event history, deadlines, duplicates and statistics."""
