"""Base models: resolving a choice (bundled name, preset, local folder, hub id) to a loaded model, the model presets,
default target modules per architecture, and the lock every build takes."""
