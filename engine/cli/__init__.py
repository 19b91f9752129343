"""`journeyctl`, the command line: the main group and its sub-groups."""
