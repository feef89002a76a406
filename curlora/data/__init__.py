"""From a CSV to a Task: reading and validating files, columns, labels and verbalizers, prompts, splits, dataset
presets and the check-data report; the files a study reads, recorded by path and sha256 so they are found again
where its pack is unpacked (portable). No torch here (tests/test_wings.py keeps it so)."""
