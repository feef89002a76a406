"""`python -m curlora …`: argparse only; every command calls the engine (curlora.run, curlora.data)."""
