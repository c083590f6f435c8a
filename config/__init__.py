"""Settings, the working-time calendar, database plumbing and logging.

Nothing here imports another package of ours: every other package imports this one.
"""
