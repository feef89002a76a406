import sys

from curlora.cli.main import main

sys.exit(main())
