"""I/O helpers every layer of the shell shares (never the core): safe result files,
Ctrl-C and SIGTERM handling."""
