"""Few-shot evaluation on held-out tasks: k demos in context, batched rollouts, baselines, reports."""
