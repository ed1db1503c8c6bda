# Ctrl-C is recorded from the first moment, before the heavier imports: one swallowed by
# a destructor while they run is raised again by the runner (see simulator.support.interrupts).
from simulator.support import interrupts

interrupts.install()

from simulator.cli.main import main  # noqa: E402

raise SystemExit(main())
