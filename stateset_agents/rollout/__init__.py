"""Episodes. The agent (`agent`) generates turns against an environment (`runner`), with
exact sampling logprobs (`hf_generation`) and teacher-forced logprobs for the update (`logprobs`)."""
