"""The longest prompt and reply texts loraloop accepts, wherever they enter.

One pair of limits for every endpoint (completions, chat, rewards, feedback and its imports,
labeling, a job's instruction), so a text accepted in one place is accepted in the next: a
prompt served by /v1/completions can be posted as feedback and scored by /v1/rewards. Counted
in characters (code points), checked before any tokenizing.
"""

from __future__ import annotations

# Prompts may carry a whole document to summarise, hence a larger limit than replies.
MAX_PROMPT_CHARS = 131_072
# A reply: a feedback candidate, a completion to score.
MAX_CANDIDATE_CHARS = 32_768
