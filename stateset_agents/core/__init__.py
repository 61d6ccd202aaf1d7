"""The data every layer passes on: messages, chat formats, completions, trajectories."""
