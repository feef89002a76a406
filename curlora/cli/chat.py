"""`python -m curlora chat RUN --method M --stage K --prompt TEXT`: one reply from a run's model, printed.

The same engine as the Chat tab (curlora/run/chat.py): the base model loaded once, the stage loaded onto it (its
adapter, or a full fine-tune's weights), the model's chat template applied (with its own default system prompt unless
--system replaces it), greedy unless --temperature says otherwise, ending at the template's end-of-turn marker.
`--method base` is the run's base model.
"""

from __future__ import annotations

import sys


def register(sub) -> None:
    p = sub.add_parser("chat", help="print one reply of a run's base model or of a method after task k")
    p.add_argument("run_id")
    p.add_argument("--method", required=True, help="method label as in `show` (e.g. curlora, lora), or base")
    p.add_argument("--stage", type=int, default=None, help="after the k-th task (default: the method's last stage; "
                                                            "ignored for base)")
    p.add_argument("--prompt", required=True, help="the user message")
    p.add_argument("--system", default=None, help="system prompt (default: the template's own, if it has one)")
    p.add_argument("--max-new-tokens", type=int, default=128)
    p.add_argument("--temperature", type=float, default=0.0, help="0 (default): greedy")
    p.add_argument("--top-p", type=float, default=1.0)
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=cmd_chat)


def pane_of(run, method: str, stage: int | None) -> str:
    """The chat pane for --method/--stage, with a sentence for a method or stage the run does not have."""
    from curlora.errors import CurloraError
    from curlora.run.chat import pane_choices

    if method == "base":
        return "base"
    choices = pane_choices(run)
    if method not in choices:
        have = ", ".join(["base", *choices]) or "base"
        raise CurloraError(f"Run {run.id} has no saved stage of a method {method!r}; choose one of: {have}.")
    stage = choices[method][-1] if stage is None else stage
    if stage not in choices[method]:
        raise CurloraError(f"{method} in run {run.id} has saved stages {', '.join(map(str, choices[method]))}; "
                           f"stage {stage} is not one of them.")
    return f"{method}@{stage}"


def cmd_chat(args) -> int:
    from curlora.errors import CurloraError
    from curlora.run.store import Run

    if args.max_new_tokens < 1:
        raise CurloraError("--max-new-tokens must be at least 1.")
    run = Run.open(args.run_id)
    pane = pane_of(run, args.method, args.stage)
    from curlora.run.chat import Chat  # torch and transformers: only once the arguments are sound

    reply = ""
    for reply in Chat().stream(run.id, pane, args.prompt, max_new_tokens=args.max_new_tokens,
                               temperature=args.temperature, top_p=args.top_p, seed=args.seed, system=args.system,
                               root=run.path.parent):
        pass
    print(reply)
    sys.stdout.flush()
    return 0
