"""The real-model lab: SmolLM2-135M-Instruct and BIG-bench tasks, offline (see README.md here)."""
