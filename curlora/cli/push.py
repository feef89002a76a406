"""`python -m curlora push RUN --repo NAME [--method M] [--merged] [--private]`: a run's adapters, model card and
numbers to the Hugging Face hub (curlora/share/hub.py). The token comes from HF_TOKEN or `hf auth login`."""

from __future__ import annotations

from curlora.run.store import Run


def register(sub) -> None:
    p = sub.add_parser("push", help="push a run's adapters (a folder per method and stage), a model card written from "
                                    "the run and its metrics to one Hugging Face hub repo (token: HF_TOKEN or "
                                    "`hf auth login`)")
    p.add_argument("run_id")
    p.add_argument("--repo", required=True, help="the repo to create or update: NAME or OWNER/NAME")
    p.add_argument("--method", help="push only this method's adapters (default: every method with an adapter)")
    p.add_argument("--merged", action="store_true",
                   help="also push each method's last stage merged into the base model (full model size)")
    p.add_argument("--private", action="store_true", help="create the repo private")
    p.set_defaults(func=cmd_push)


def cmd_push(args) -> int:
    from curlora.share.hub import push

    def progress(fraction: float, text: str) -> None:
        print(f"[{100 * fraction:3.0f} %] {text}", flush=True)

    url = push(Run.open(args.run_id), args.repo, only=args.method, merged=args.merged, private=args.private,
               progress=progress)
    print(f"pushed run {args.run_id} to {url}")
    return 0
