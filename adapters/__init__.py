"""Everything that talks to the world: the event store, WeChat Pay, files."""
