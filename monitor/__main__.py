import sys

from monitor.shell.cli import main

sys.exit(main())
