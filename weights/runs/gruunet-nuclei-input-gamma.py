"""Scratch experiment (session 33): `gruunet train` with the normalised input raised to a power
(`NormConfig.gamma`, recorded in the model file, so `segment` repeats it). Usage:
INPUT_GAMMA=0.5 python weights/runs/gruunet-nuclei-input-gamma.py train ...  (the train command as usual)."""
import os
import sys

from gruunet_cli.config import NormConfig

NormConfig.__init__.__defaults__ = (1.0, 99.8, float(os.environ.get("INPUT_GAMMA", "0.5")))

if __name__ == "__main__":
    from gruunet_cli.cli import main
    sys.argv = ["gruunet"] + sys.argv[1:]
    main()
