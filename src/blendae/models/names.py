"""The registered models' names, torch-free: the command line's `--model` choices (its
`--help` starts without torch). `models.registry` builds them; a test checks both agree."""

MODEL_NAMES = ("seed", "conv", "factorized", "hyperprior", "gained", "unet-sep")
DEFAULT_MODEL = "conv"
