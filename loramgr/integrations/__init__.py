"""Plugins for other systems (serving stacks). Each imports its system only inside itself; the
core never imports this package."""
