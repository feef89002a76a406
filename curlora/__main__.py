import sys

from curlora.cli import main

sys.exit(main())
