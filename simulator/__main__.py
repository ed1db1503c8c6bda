# Ctrl-C is recorded from the first moment, before the heavier imports: one swallowed by
# a destructor while they run is raised again by the runner (see simulator.interrupts).
from simulator import interrupts

interrupts.install()

from simulator.cli import main  # noqa: E402

raise SystemExit(main())
