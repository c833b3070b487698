"""The CLI's own error for bad command-line input (kept apart so every command module raises the same class)."""


class UsageError(Exception):
    """Bad command-line input that argparse itself cannot see."""
