"""Facts the whole project shares, defined once. Pure Python: importing this loads nothing."""

IMAGE_TOKEN = "<image>"  # one placeholder per image in a conversation's text
IGNORE_INDEX = -100  # label of a position the loss skips (PyTorch's cross-entropy default)

# The paper's grids (§3, §4.1): medium {(2,2),(1,4),(4,1)}, high {(6,4),(4,6),(3,8),(8,3)},
# as (columns, rows).
PAPER_MEDIUM = ((2, 2), (1, 4), (4, 1))
PAPER_HIGH = ((6, 4), (4, 6), (3, 8), (8, 3))
# The released code's high set (processing_dragonfly.py) adds two 2×12 strips.
RELEASED_HIGH = (*PAPER_HIGH, (2, 12), (12, 2))

# CLIP's pixel statistics (openai/clip-vit-*), used by the tiny tower too.
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
