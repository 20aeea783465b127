"""The hf rollout server as verl drives it: a Ray actor behind HFReplica, weights pushed by HFServerAdapter."""

import asyncio

import pytest
import ray
import torch
from hydra import compose, initialize_config_dir
from transformers import AutoModelForCausalLM, AutoTokenizer

from verl_ext.config import config_dir
from verl_ext.rollout.hf_adapter import HFServerAdapter
from verl_ext.rollout.hf_replica import HFReplica

GREEDY = {"temperature": 0, "top_p": 1.0, "top_k": -1, "repetition_penalty": 1.0, "logprobs": True}


@pytest.fixture(scope="module")
def rollout_configs(tiny_model_dir):
    with initialize_config_dir(config_dir=config_dir(), version_base=None):
        cfg = compose(config_name="cpu_smoke", overrides=[f"actor_rollout_ref.model.path={tiny_model_dir}"])
    return cfg.actor_rollout_ref.rollout, cfg.actor_rollout_ref.model


@pytest.fixture(scope="module")
def replica(ray_cluster, rollout_configs):
    rollout, model = rollout_configs
    rep = HFReplica(replica_rank=7, config=rollout, model_config=model, gpus_per_node=1)
    asyncio.run(rep.launch_servers())
    yield rep
    ray.kill(rep.servers[0])


@pytest.fixture(scope="module")
def prompt(tiny_model_dir):
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    text = tok.apply_chat_template([{"role": "user", "content": "Compute 2 + 2."}], add_generation_prompt=True, tokenize=False)
    return tok(text, add_special_tokens=False)["input_ids"]


def _generate(server, prompt, params=GREEDY, request_id="r"):
    return ray.get(server.generate.remote(prompt_ids=prompt, sampling_params=dict(params, max_tokens=8), request_id=request_id))


def test_concurrent_requests_are_served(replica, prompt):
    server = replica.server_handle
    refs = [server.generate.remote(prompt_ids=prompt[: 10 + i], sampling_params=dict(GREEDY, max_tokens=6), request_id=str(i))
            for i in range(8)]
    outs = ray.get(refs)
    assert all(o.stop_reason == "completed" and 1 <= len(o.token_ids) <= 6 for o in outs)
    assert all(len(o.log_probs) == len(o.token_ids) for o in outs)
    assert outs[3].token_ids == _generate(server, prompt[:13]).token_ids  # batched == alone, greedy


def _perturbed_state(tiny_model_dir, scale):
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    gen = torch.Generator().manual_seed(1)
    return [(name, t + scale * torch.randn(t.shape, generator=gen)) for name, t in model.state_dict().items()
            if name != "lm_head.weight"]  # tied to the embedding, as FSDP's parameter stream sends it


def test_weight_update_changes_generation(replica, rollout_configs, prompt, tiny_model_dir):
    rollout, model = rollout_configs
    server = replica.server_handle
    before = _generate(server, prompt)
    adapter = HFServerAdapter(rollout, model, device_mesh=None, replica_rank=7)
    adapter.bucket_bytes = 4096  # force several chunks

    asyncio.run(adapter.update_weights(iter(_perturbed_state(tiny_model_dir, 0.5)), global_steps=3))
    after = _generate(server, prompt)
    assert after.token_ids != before.token_ids
    assert after.extra_fields["global_steps"] == 3
    name, tensor = _perturbed_state(tiny_model_dir, 0.5)[0]
    assert torch.equal(ray.get(server.get_weight.remote(name)), tensor)

    asyncio.run(adapter.update_weights(iter(_perturbed_state(tiny_model_dir, 0.0)), global_steps=4))
    assert _generate(server, prompt).token_ids == before.token_ids


def test_incomplete_or_foreign_updates_are_refused(replica, tiny_model_dir):
    server = replica.server_handle
    state = _perturbed_state(tiny_model_dir, 0.0)
    ray.get(server.load_weights.remote(state[:-1]))
    with pytest.raises(ray.exceptions.RayTaskError, match="missing 1 tensors"):
        ray.get(server.finish_weight_update.remote(1))
    ray.get(server.load_weights.remote(state + [("model.not_a_layer.weight", torch.zeros(1))]))
    with pytest.raises(ray.exceptions.RayTaskError, match="names the model lacks"):
        ray.get(server.finish_weight_update.remote(1))


def test_abort_reject_resume_and_sleep(replica, prompt):
    server = replica.server_handle
    info = ray.get(server.abort_all_requests.remote(reject_request=True))
    assert info["aborted_count"] == 0
    assert _generate(server, prompt).stop_reason == "aborted"
    ray.get(server.resume_generation.remote())
    assert _generate(server, prompt).stop_reason == "completed"
    asyncio.run(replica.sleep())
    assert ray.get(server.is_asleep.remote())
    asyncio.run(replica.wake_up())
    assert not ray.get(server.is_asleep.remote())


def test_bad_requests(replica, prompt):
    server = replica.server_handle
    with pytest.raises(ray.exceptions.RayTaskError, match="one sequence; send n requests"):
        _generate(server, prompt, dict(GREEDY, n=2))
    with pytest.raises(ray.exceptions.RayTaskError, match="text prompts only"):
        ray.get(server.generate.remote(prompt_ids=prompt, sampling_params=GREEDY, request_id="x", image_data=["img"]))


def test_replica_refuses_tensor_parallel(rollout_configs):
    rollout, model = rollout_configs
    rollout = rollout.copy()
    rollout.tensor_model_parallel_size = 2
    with pytest.raises(ValueError, match="tensor_model_parallel_size=1"):
        HFReplica(replica_rank=0, config=rollout, model_config=model, gpus_per_node=2)


@pytest.mark.parametrize("force", ["full", None])
def test_elastic_generation(ray_cluster, rollout_configs, replica, prompt, tiny_model_dir, force):
    rollout, model = rollout_configs
    rollout = rollout.copy()
    rollout.engine_kwargs = {"hf": {"elastic": {"force": force, "sink": 2, "window": 4}}}
    rep = HFReplica(replica_rank=9 if force else 10, config=rollout, model_config=model, gpus_per_node=1)
    asyncio.run(rep.launch_servers())
    try:
        out = _generate(rep.server_handle, prompt)
        assert 0.0 <= out.extra_fields["elastic_msr"] <= 1.0
        if force == "full":  # every head dense: the same tokens as the plain server
            assert out.extra_fields["elastic_msr"] == 0.0
            assert out.token_ids == _generate(replica.server_handle, prompt).token_ids
        # The actor's weights (no router tensors) still update an elastic server.
        adapter = HFServerAdapter(rollout, model, device_mesh=None, replica_rank=rep.replica_rank)
        asyncio.run(adapter.update_weights(iter(_perturbed_state(tiny_model_dir, 0.0)), global_steps=5))
        assert _generate(rep.server_handle, prompt).extra_fields["global_steps"] == 5
    finally:
        ray.kill(rep.servers[0])


def test_elastic_options_are_checked(ray_cluster, rollout_configs):
    rollout, model = rollout_configs
    rollout = rollout.copy()
    rollout.engine_kwargs = {"hf": {"elastic": {"windw": 4}}}
    rep = HFReplica(replica_rank=11, config=rollout, model_config=model, gpus_per_node=1)
    with pytest.raises(Exception, match="engine_kwargs.hf.elastic"):
        asyncio.run(rep.launch_servers())


def test_sampling_depends_on_the_request_not_on_when_it_arrives(replica, prompt):
    """A group's n requests for one prompt draw the same n sequences whatever else shares the batch and in whatever
    order they arrive; new weights (a new training step) draw anew."""
    server = replica.server_handle
    sample = {"temperature": 1.0, "top_p": 1.0, "top_k": -1, "logprobs": False, "max_tokens": 8, "ignore_eos": True}

    def group(extra_prompts):
        ray.get(server.set_global_steps.remote(40 + len(extra_prompts)))  # a fresh count for the prompt
        ray.get(server.set_global_steps.remote(3))
        refs = [server.generate.remote(prompt_ids=p, sampling_params=sample, request_id=f"x{i}")
                for i, p in enumerate(extra_prompts)]
        refs += [server.generate.remote(prompt_ids=prompt, sampling_params=sample, request_id=f"g{i}") for i in range(4)]
        return sorted(tuple(o.token_ids) for o in ray.get(refs)[len(extra_prompts):])

    alone = group([])
    crowded = group([prompt[:9], prompt[:12], prompt[:7]])
    assert alone == crowded and len(set(alone)) > 1
    ray.get(server.set_global_steps.remote(4))
    refs = [server.generate.remote(prompt_ids=prompt, sampling_params=sample, request_id=f"n{i}") for i in range(4)]
    assert sorted(tuple(o.token_ids) for o in ray.get(refs)) != alone


def test_replicas_draw_apart_unless_the_request_carries_its_seed(ray_cluster, rollout_configs, replica, prompt):
    """Two replicas serving copies of one prompt (two ranks, least-loaded routing) draw different sequences, not the
    same one twice; a request that carries its own seed draws the same tokens on either."""
    rollout, model = rollout_configs
    other = HFReplica(replica_rank=8, config=rollout, model_config=model, gpus_per_node=1)
    asyncio.run(other.launch_servers())
    sample = {"temperature": 1.0, "top_p": 1.0, "top_k": -1, "logprobs": False, "max_tokens": 8, "ignore_eos": True}
    try:
        def first_draw(server, **extra):
            ray.get(server.set_global_steps.remote(59))  # new weights: a fresh count for the prompt on this replica
            ray.get(server.set_global_steps.remote(60))
            return tuple(_generate(server, prompt, dict(sample, **extra), request_id="d").token_ids)

        assert first_draw(replica.server_handle) != first_draw(other.server_handle)
        assert first_draw(replica.server_handle) == first_draw(replica.server_handle)  # each replica reproducible
        assert first_draw(replica.server_handle, seed=5) == first_draw(other.server_handle, seed=5)
    finally:
        ray.kill(other.servers[0])
