"""MemoryRewardBench: schema, loaders, judge prompts, verdict parsing, scoring, aggregation and reports."""
