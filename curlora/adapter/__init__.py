"""CURLoRA itself, with PEFT's surface: the config, the C·U·R layer, the wrapped model and the column/row sampling.
Imports no other curlora module but `curlora.errors` (tests/test_wings.py keeps it so)."""
