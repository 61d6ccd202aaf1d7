"""Loading models and tokenizers, LoRA targets, vision settings, the tiny Kimi-K2.5 builder.

Embedded model names are resolved through `embedded_names`, filled in by `stateset_agents.embedded`
(above every layer), so nothing here imports the tasks or the trainer."""
