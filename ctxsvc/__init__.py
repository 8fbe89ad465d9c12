"""ctxsvc: context management and retrieval for AI coding agents."""
