"""Running experiments: adapters over PEFT, training, the runner and its run store, the job queue with the device
gate, hosting policy and limits, sweeps, evaluation of stages, chat and exports. The app, the CLI and an MCP server
all drive this wing; nothing below it imports it."""
