"""The held-out check: generate on phantoms never used in training, score the model beside its
blind baseline (visual input zeroed), print the model-card table and write ``OUT/heldout.json``.
The same as ``rgct heldout`` (and the recipe's ``heldout`` stage kind).

    python scripts/heldout_check.py --checkpoint rgct/assets/demo_model \
        --data runs/demo/heldout_synth --limit 40 --out runs/heldout
    python scripts/heldout_check.py ... --masks predicted --no-blind   # the segmenter's masks
"""

import argparse
import logging
import sys

from rgct.generate import heldout_cli

if __name__ == "__main__":
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    heldout_cli.configure(parser)
    sys.exit(heldout_cli.run(parser.parse_args()))
