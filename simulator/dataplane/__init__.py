"""The middlebox process: the packet loop, the compiled fast path, frames, capture."""
