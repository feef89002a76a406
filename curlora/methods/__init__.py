"""The methods: every way of going through the task sequence, one registered class each, below the config.

    registry    the Method base class, `register`, `method(kind)`, `kinds()` and the built-in kinds (curlora, lora,
                base, head-only, full)
    baselines   the continual-learning baselines (joint training, EWC)
    peers       PEFT's peers: MiCA, CorDA and OSF (forgetting-aware), PiSSA and DoRA (LoRA family)
    adapters    PEFT-layout stage folders: attach, detach, load, save, merge, the method marker

Importing any of them imports this package first, which registers the baselines and the peers after the
registry's own kinds, so `kinds()` always lists every kind (and registration order is the order shown).
The config (curlora/experiment.py) reads the registry; nothing here imports the config, run/, serve/, share/,
cli/ or ui/. Heavy imports (torch, peft) happen inside the methods, so the config validates kinds without torch.
"""

from curlora.methods import baselines, peers  # noqa: F401  (they register themselves)
