"""`python -m gruunet_cli` (used with `torchrun ... -m gruunet_cli train ...`)."""

from .cli import main

main()
