"""Subcommands of `stateset-agents` that put the layers together (top layer, like `cli`):

- `eval_command`: `stateset-agents eval`: held-out reward, success rate and reward components with
  95% confidence intervals, one policy or two side by side (`--against`);
- `chat_command`: `stateset-agents chat`: talk to the agent in a terminal as the customer, with the
  task's tools running against the scenario's world state.
"""
