"""The composition root: the hotline command and the process that runs the parts together."""
