"""curlora: the engine of CURLoRA Studio. Importable without gradio."""

__version__ = "0.1.0"
