"""Fine-tune rgct. Works as a plain script or under accelerate:

accelerate launch scripts/train.py --config configs/train/stage2_instruct.yaml data.root=data/phantoms
python scripts/train.py --config configs/train/tiny.yaml data.root=data/phantoms train.max_steps=20
"""

import argparse
import logging
import sys

from rgct.train import cli

if __name__ == "__main__":
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    cli.configure(parser)
    sys.exit(cli.run(parser.parse_args()))
