"""Using finished runs elsewhere: exports (metrics as JSON/CSV/Markdown, adapter and merged folders, any stage as
a plain PEFT LoRA, a merged stage as GGUF), the model card, and pushing a run to the Hugging Face Hub. It reads
the run store (run/) and the registry (methods/); serve/, cli/ and ui/ call it, and it imports none of them."""
