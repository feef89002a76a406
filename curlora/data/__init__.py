"""From a CSV to a Task: reading and validating files, columns, labels and verbalizers, prompts, splits, dataset
presets and the check-data report. No torch here (tests/test_wings.py keeps it so)."""
