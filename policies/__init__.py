"""fairpool.policies: fair-share policies, pure and deterministic."""
