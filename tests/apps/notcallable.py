"""`application` is not callable: loading it must exit 4."""

application = 42
