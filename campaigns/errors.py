"""Errors of the campaigns package: one base, so the CLI prints any of them as a message."""

from config.errors import HotlineError


class CampaignError(HotlineError):
    """A campaign request that cannot be carried out; the message says why and what to do."""


class WindowError(CampaignError):
    """A calling window that cannot be used (bad format, ends before it starts)."""


class TargetError(CampaignError):
    """Target selection failed as a whole (not a single bad row: those are reported by line)."""


class StateError(CampaignError):
    """A campaign state change that the state machine does not allow."""


class NotFound(CampaignError):
    """An unknown campaign, target or case."""
