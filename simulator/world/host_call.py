"""``python -m simulator.world.host_call``: run one pickled call on the world's clock.

The pytest plugin's ``call`` runs a function inside a host. In wall time it forks; a fork
cannot take on model time (the preload libraries are loaded when a program starts), so in
model time the call goes to a fresh interpreter started under them: the function, its
arguments and, afterwards, its result or exception cross as pickles (the function by
reference, so it must be importable: defined at a module's top level). The pickle comes on
stdin and goes back on stdout; what the function prints goes to stderr.
"""

from __future__ import annotations

import os
import pickle
import sys
import traceback


def main() -> int:
    result = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)  # the function's own prints must not mix with the answer
    try:
        func, args, kwargs = pickle.loads(sys.stdin.buffer.read())
        payload = pickle.dumps(("ok", func(*args, **kwargs)))
    except BaseException as exc:  # everything goes back to the caller
        try:
            payload = pickle.dumps(("error", exc))
        except Exception:
            payload = pickle.dumps(("error", RuntimeError(traceback.format_exc())))
    with result:
        result.write(payload)
    return 0


if __name__ == "__main__":
    sys.exit(main())
