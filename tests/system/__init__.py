"""System tier: live stacks, compose, browsers, network namespaces, load."""
