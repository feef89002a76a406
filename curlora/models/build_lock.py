"""One lock around every model and adapter build in the process.

transformers builds a model under process-wide patches that are not thread-safe: the default dtype is set
globally, `PreTrainedModel.tie_weights` is swapped for a no-op while weights load, `torch.linspace` is replaced.
Two builds overlapping in two threads can leave a patch in place for good (thread B saves A's no-op as "the
original" and restores it): from then on every model with tied embeddings keeps its output head on the meta
device or uninitialised. The app builds in several threads at once (a training job loading its base, a chat or
an evaluation loading theirs, parameter counts building meta skeletons), so every build in curlora holds this.

    with BUILD_LOCK:
        model = AutoModelForCausalLM.from_pretrained(...)
"""

import threading

BUILD_LOCK = threading.RLock()
