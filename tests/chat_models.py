"""Model folders whose tokenizer has a chat template (for the chat tests): the bundled model, or the tiny random
Llama, copied with `tokenizer.chat_template` set and saved the way transformers saves it."""

import shutil

from curlora.models.loading import bundled_models

# Turns end with a marker the bundled tokenizer splits into several tokens, so it must end a reply as text.
TEMPLATE = ("{% for m in messages %}<|{{ m['role'] }}|>\n{{ m['content'] }}<|end|>\n{% endfor %}"
            "{% if add_generation_prompt %}<|assistant|>\n{% endif %}")
# Turns end with the tokenizer's eos token: one token, which ends a reply as a token id.
EOS_TEMPLATE = ("{% for m in messages %}[{{ m['role'] }}] {{ m['content'] }}{{ eos_token }}{% endfor %}"
                "{% if add_generation_prompt %}[assistant]{% endif %}")
NO_SYSTEM = ("{% if messages[0]['role'] == 'system' %}{{ raise_exception('System role not supported') }}{% endif %}"
             + TEMPLATE)


def with_template(source, folder, template: str = TEMPLATE):
    """A copy of model folder `source` at `folder` whose tokenizer carries `template`."""
    from transformers import AutoTokenizer

    shutil.copytree(source, folder, dirs_exist_ok=True)
    tok = AutoTokenizer.from_pretrained(folder)
    tok.chat_template = template
    tok.save_pretrained(folder)
    return folder


def bundled_chat_model(folder, template: str = TEMPLATE):
    return with_template(bundled_models()["kjv-llama-5m"], folder, template)
