"""``make bench``: each figure measured beside its baseline, in one run, on this machine."""
