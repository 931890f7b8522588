"""Domain objects and rules: sandboxes, contexts, executions. No web or database imports."""
