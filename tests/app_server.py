"""Launch the app in-process on a free loopback port (shared by the API and browser tests)."""

import contextlib
import os
import socket

from curlora.serve.jobs import JobManager


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def serve(root, jobs=None):
    """(demo, url, jobs) with runs under `root` (or `jobs`' own root); close with demo.close()."""
    from curlora.ui.app import build_app, launch

    jobs = jobs or JobManager(root)
    demo = build_app(jobs=jobs)
    port = free_port()
    launch(demo, server_port=port, prevent_thread_lock=True, quiet=True)
    return demo, f"http://127.0.0.1:{port}/", jobs


@contextlib.contextmanager
def serving(root, jobs=None):
    """serve(root, jobs) with CURLORA_DATA_DIR pointing at `root` for the duration; yields (url, jobs)."""
    old = os.environ.get("CURLORA_DATA_DIR")
    os.environ["CURLORA_DATA_DIR"] = str(root)
    demo, url, jobs = serve(root, jobs() if callable(jobs) else jobs)
    try:
        yield url, jobs
    finally:
        demo.close()
        if old is None:
            os.environ.pop("CURLORA_DATA_DIR", None)
        else:
            os.environ["CURLORA_DATA_DIR"] = old
