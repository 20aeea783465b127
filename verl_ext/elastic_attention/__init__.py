"""Elastic Attention: per-layer routers that send each KV head to full or sparse attention per input.

| module | concept |
|---|---|
| ``config`` | ``ElasticAttentionConfig``: every setting, validated; the patterns and the registry modes they run |
| ``override_keys`` | the ``elastic_*`` keys of an HF config (``override_config``, ``hf_overrides``) and their checks |
| ``router`` | ``ElasticRouter``, boundary pooling, decision rules (argmax, Gumbel straight-through), tau schedules |
| ``state`` | the per-layer state (``attn.elastic``) and the functions that set it across a model |
| ``layer`` | the one routed attention call: router input from a layout, decision, recording, attention |
| ``mode_table`` | decisions -> the kernels' per-head mode table; ``attend`` (inference), ``attend_train`` (the mix) |
| ``hf`` | the HF Qwen2 / Qwen3 / Llama integration: key capture, layouts of padded and packed rows, decode |
| ``verl_actor`` | the verl actor / reference model: routers on the built module, prompt lengths before each forward |
| ``rollout_hook`` | the ``hf`` rollout's model hook (routers on the rollout model, per-response Omega_MSR) |
| ``trainer_metrics`` | the rollout Omega_MSR step metrics of the ``verl_ext_sync`` trainer mode |
| ``vllm_plugin`` | the vLLM entry point: architecture names, ``hf_overrides`` |
| ``vllm_routing`` | the vLLM models' vLLM-free parts: routed requests, step decisions, engine checks, weight names |
| ``vllm_models`` | the elastic vLLM model classes (import vLLM) |
| ``router_objective`` | router training's objective: ``SparsityLagrangian``, ``training_omega``, ``freeze_backbone`` |
| ``router_engine`` | router training in verl's SFT trainer: ``RouterTrainingConfig``, ``ElasticRouterEngine``, loss |
| ``train_routers`` | the router-training command (verl's SFT trainer with the router engine) |
| ``train_routers_ray`` | the same on a Ray cluster (verl's Ray SFT trainer, one router worker per rank) |
| ``sft_data`` | router-training samples (task ids, prompt masks) and the released data's conversion |
| ``adapter`` / ``router_names`` | router weights as a safetensors adapter; router parameter names in every layout |
| ``metrics`` / ``report`` | Omega_MSR and Omega_ESR; the routing report command |
| ``engine_names`` | the names registered in verl, import-light |

Imports run one way, with no cycle (``tests/elastic_attention/test_module_graph_on_cpu.py``); mode knowledge is the
kernels' registry's (``verl_ext.kernels.elastic_attention.modes``).
"""
