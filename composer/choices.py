"""The composer's named choices and defaults, as plain constants: the CLI builds its flags from
these without importing torch. The modules that implement each choice check against them
(a test keeps the two in step)."""

MODES = ("delta", "lorahub")
SEARCHES = ("nevergrad", "gradient")
GRANULARITIES = ("module", "block")
PROMPT_FORMATS = ("plain", "chat")
DEFAULT_PROMPT_FORMAT = "plain"
DEFAULT_OPTIMIZER = "NGOpt"  # LoraHub's choice
DEFAULT_BOUNDS = (-1.5, 1.5)  # LoraHub's
DEFAULT_L1 = 0.05  # LoraHub's
DEFAULT_LEARNING_RATE = 0.3
DEFAULT_SHORTLIST = 20  # LoraHub composes 20 modules
