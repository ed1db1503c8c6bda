"""The world: its plan applied by a backend (namespaces, Docker, rootless, fake), its
programs started and watched by one driver, and the world's clock for programs."""
