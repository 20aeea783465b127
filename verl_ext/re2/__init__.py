"""Re² (RL with Re-solving): pure functions for redo handling, prefixes, rewards, advantages, filters, metrics."""
