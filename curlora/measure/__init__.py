"""What a run measures: encoding prompts, scoring accuracy, perplexity, the drift probes (self-sampled text, KL to the
base, weight drift), the continual-learning metrics and learnability. Never imports curlora.run."""
