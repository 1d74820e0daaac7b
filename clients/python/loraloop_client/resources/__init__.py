"""One module per API area: its models and its sync and async resource classes."""
