"""The composer's named choices and defaults, as plain constants: the CLI builds its flags from
these without importing torch. The modules that implement each choice check against them
(a test keeps the two in step)."""

MODES = ("delta", "lorahub")
SEARCHES = ("nevergrad", "gradient")
GRANULARITIES = ("module", "block")
PROMPT_FORMATS = ("plain", "chat")
DEFAULT_PROMPT_FORMAT = "plain"
# The default search and what each search does by default. The per-block gradient search reached the
# loss of LoraHub's procedure where NGOpt often did not, on the toy lab and the real-model lab alike
# (README, "Time to quality"); NGOpt stays one flag away and is LoraHub's own procedure.
DEFAULT_SEARCH = "gradient"
DEFAULT_BUDGETS = {"nevergrad": 40, "gradient": 20}  # evaluations; forward+backward steps
DEFAULT_GRANULARITIES = {"nevergrad": "module", "gradient": "block"}
# 0: the screen scores every module alone. Screening only the steepest one (screen_top=1) halved the
# time to LoraHub's loss on the real-model lab, but ended above it on the toy lab's kind-3 Llama target
# in 3 of 3 runs, where the full screen never did (README, "Time to quality"): so it is opt-in.
DEFAULT_SCREEN_TOP = 0
DEFAULT_OPTIMIZER = "NGOpt"  # LoraHub's choice
DEFAULT_BOUNDS = (-1.5, 1.5)  # LoraHub's
DEFAULT_L1 = 0.05  # LoraHub's
DEFAULT_LEARNING_RATE = 0.3
DEFAULT_SHORTLIST = 20  # LoraHub composes 20 modules
