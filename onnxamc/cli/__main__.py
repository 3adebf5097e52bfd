import sys

from onnxamc.cli import main

sys.exit(main())
