"""What a server adds to the engine: the job queue (jobs), the device gate, the hosting policy and its one
admission path (hosting: Policy.admit), the host's limits and the study store estimate, the ZeroGPU handoff and
its GPU budget, and the MCP tools. It drives run/ and share/; nothing in run/, share/ or below imports it, and it
imports no cli/ or ui/."""
