"""CURLoRA itself, as a PEFT method: the config, the C·U·R layer, the tuner and the column/row sampling.
Importing this package registers CURLoRA with PEFT. Imports no other curlora module but `curlora.errors`
(tests/test_wings.py keeps it so)."""

from curlora.adapter import peft_method

peft_method.register()
