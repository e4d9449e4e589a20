"""Energy Flow Studio: ``python main.py`` opens the app; ``--headless`` trains without a window;
``--open PATH.h5`` replays a recording (``--help`` lists every option). The same command is
installed as ``energy-flow-studio``; both run :func:`app.launcher.main`."""

import sys

from app.launcher import main
from energy_flow.runtime.broken_pipe import run_cli

if __name__ == "__main__":
    sys.exit(run_cli(main))
