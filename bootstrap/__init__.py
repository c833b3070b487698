"""The composition root: settings, the clock and the wiring.

The only package that knows every inner layer (``domain``, ``adapters``,
``application``, ``projections``); the entry points (``api``, ``scheduler``,
the ``zhangben`` CLI) ask it for a ``Runtime`` and never build one themselves.
"""
