"""Producing runs: training, the runner and its run store, studies and sweeps, evaluation of stages, chat, the
time and memory estimates, events and trackers. The app, the CLI and an MCP server drive it (through serve/ for
the app); it imports neither serve/, share/, cli/ nor ui/, and nothing below it (methods/, the config, measure/,
models/, data/, adapter/) imports it."""
