"""`python -m keras_lth.bench ...` is `keras-lth bench ...`."""

import sys

from keras_lth.bench.cli import main

sys.exit(main(["bench", *sys.argv[1:]]))
