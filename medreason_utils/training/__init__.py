"""Training written out in plain torch for teaching and baselines: GRPO from scratch (checked against TRL's
``GRPOTrainer`` loss) in :mod:`.grpo_from_scratch`, and a PPO baseline with a value head in :mod:`.ppo`."""
