"""Memory-SFT (L3), the warm start before RL: ``data`` builds teacher examples, ``train``
clones them (behaviour cloning on the prompts the pipeline and RL use)."""
