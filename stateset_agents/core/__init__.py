"""Layer 0 (lowest): the data every layer passes on: messages, chat formats, completions, trajectories."""
